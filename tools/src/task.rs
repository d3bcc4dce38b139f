//! `ringmq task list|describe|cancel`: the cluster's background tasks (SPEC O6), read
//! from any broker's admin REST API (`GET /v1/tasks`, ringmqd `--http`); cancelling a
//! reassignment task cancels its partitions' moves still in progress through Kafka's
//! AlterPartitionReassignments on the bootstrap broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Subcommand;
use serde::Deserialize;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Every task kept: running ones and the recently finished.
    List {
        /// A broker's admin HTTP address (ringmqd --http).
        #[arg(long, default_value = "127.0.0.1:9999")]
        admin: String,
    },
    /// One task: its partitions, their targets, and which still move.
    Describe {
        id: u64,
        #[arg(long, default_value = "127.0.0.1:9999")]
        admin: String,
    },
    /// Cancel a running reassignment task: its moves in progress go back.
    Cancel {
        id: u64,
        #[arg(long, default_value = "127.0.0.1:9999")]
        admin: String,
    },
}

#[derive(Debug, Deserialize)]
struct TaskPartition {
    topic: String,
    partition: i32,
    target: Vec<i32>,
}

#[derive(Debug, Deserialize)]
struct Task {
    id: u64,
    kind: String,
    description: String,
    state: String,
    created_ms: i64,
    finished_ms: Option<i64>,
    partitions: Vec<TaskPartition>,
    moving: usize,
}

/// GET `path` from the admin HTTP server at `admin`.
fn get(admin: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(admin)
        .with_context(|| format!("connecting to the admin API at {admin} (ringmqd --http)"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("a malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("an HTTP response without a status")?;
    Ok((status, body.to_owned()))
}

fn fetch(admin: &str, id: u64) -> anyhow::Result<Task> {
    let (status, body) = get(admin, &format!("/v1/tasks/{id}"))?;
    if status == 404 {
        bail!("no task {id}");
    }
    ensure!(status == 200, "the admin API answered {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

fn seconds(from: i64, to: i64) -> String {
    format!("{:.1}s", (to - from) as f64 / 1000.0)
}

pub async fn run(bootstrap: &str, cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::List { admin } => {
            let (status, body) = get(&admin, "/v1/tasks")?;
            ensure!(status == 200, "the admin API answered {status}: {body}");
            let tasks: Vec<Task> = serde_json::from_str(&body)?;
            if tasks.is_empty() {
                println!("No background tasks.");
            }
            println!(
                "{:<6} {:<14} {:<10} {:>9} {:>9}  DESCRIPTION",
                "ID", "KIND", "STATE", "MOVING", "TOOK"
            );
            for t in &tasks {
                let took = t
                    .finished_ms
                    .map_or("-".into(), |f| seconds(t.created_ms, f));
                println!(
                    "{:<6} {:<14} {:<10} {:>9} {:>9}  {}",
                    t.id,
                    t.kind,
                    t.state,
                    format!("{}/{}", t.moving, t.partitions.len()),
                    took,
                    t.description
                );
            }
            Ok(())
        }
        TaskCommand::Describe { id, admin } => {
            let t = fetch(&admin, id)?;
            println!("Task {}: {} ({})", t.id, t.description, t.kind);
            println!("State: {}", t.state);
            if let Some(f) = t.finished_ms {
                println!("Took: {}", seconds(t.created_ms, f));
            }
            println!(
                "Partitions still moving: {} of {}",
                t.moving,
                t.partitions.len()
            );
            for p in &t.partitions {
                println!("\t{}-{} -> {:?}", p.topic, p.partition, p.target);
            }
            Ok(())
        }
        TaskCommand::Cancel { id, admin } => {
            let t = fetch(&admin, id)?;
            ensure!(
                t.state == "Running",
                "task {id} is not running (it is {})",
                t.state
            );
            let topics: std::collections::BTreeSet<&str> =
                t.partitions.iter().map(|p| p.topic.as_str()).collect();
            for topic in topics {
                crate::reassign::cancel_topic(bootstrap, topic, |p| {
                    t.partitions
                        .iter()
                        .any(|x| x.topic == topic && x.partition == p)
                })?;
            }
            println!("Task {id} cancelled");
            Ok(())
        }
    }
}
