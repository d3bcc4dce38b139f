//! `ringmq`, the operator CLI. It speaks the Kafka protocol (through librdkafka), so it
//! works against any Kafka-compatible broker:
//!
//! - `ringmq cluster start|describe` (a local N-broker cluster in one command; brokers,
//!   controller and replication health)
//! - `ringmq topic create|list|describe|alter|delete`
//! - `ringmq produce TOPIC` (console producer: stdin lines, optional key separator,
//!   headers) and `ringmq consume TOPIC` (console consumer).
//! - `ringmq group list|describe|delete|reset-offsets`
//! - `ringmq bench produce|consume|e2e|mixed|flavor-table` (load tests, the flavor table)
//! - `ringmq tune` (host probe, disk profile, system settings)
//!
//! Exit codes: 0 success, 1 the operation failed (one-line reason on stderr), 2 bad usage.

mod acl;
mod bench;
mod client_config;
mod cluster;
mod consume;
mod group;
mod leader;
mod logdirs;
mod produce;
mod reassign;
mod task;
mod topic;
mod tune;
mod user;

use clap::{Parser, Subcommand};

/// The bench moves megabyte batches and fetch responses: glibc would map and unmap (and
/// the kernel zero) fresh pages for each; mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Operate ringmq (or any Kafka-compatible broker).
#[derive(Debug, Parser)]
#[command(name = "ringmq", version, about)]
struct Cli {
    /// Broker to bootstrap from, HOST:PORT.
    #[arg(long, short = 'b', global = true, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Client security properties (security.protocol, sasl.mechanism, sasl.username,
    /// sasl.password or sasl.jaas.config, ssl.ca.location, ...), as Kafka's tools take.
    #[arg(long, global = true, value_name = "FILE")]
    command_config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster; describe a cluster's brokers, controller and replication.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create, list, describe, alter and delete topics; grant users access to one.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// SASL users: create, list, delete, reset a password.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Kafka ACLs: add, list, remove.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Leader election: preferred replicas back as leaders (or unclean, on demand).
    #[command(subcommand)]
    Leader(leader::LeaderCommand),
    /// Move partitions between brokers (automatic or manual), with a throttle; progress.
    #[command(subcommand)]
    Reassign(reassign::ReassignCommand),
    /// Disk usage per broker, log directory, topic and partition; move a replica
    /// between a broker's log directories.
    #[command(subcommand)]
    Logdirs(logdirs::LogDirsCommand),
    /// Background tasks (reassignments): list, describe, cancel (via the admin API).
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// List, describe (with lag), delete consumer groups and reset their offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Console producer: one message per stdin line.
    Produce(produce::ProduceArgs),
    /// Console consumer: prints messages to stdout.
    Consume(consume::ConsumeArgs),
    /// Load tests against any Kafka-compatible broker, and the flavor table.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Probe the host (disk, fdatasync, loopback, cores), write a disk profile, check
    /// system settings (applied only with --apply).
    Tune(tune::TuneArgs),
}

fn main() {
    // Output piped into `head` ends quietly, as for any Unix tool, instead of println!
    // panicking on EPIPE.
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Some(path) = &cli.command_config
        && let Err(e) = client_config::load(path)
    {
        eprintln!("ringmq: {e:#}");
        std::process::exit(1);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringmq: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Cluster(cmd) => cluster::run(&cli.bootstrap, cmd).await,
            Command::Topic(cmd) => topic::run(&cli.bootstrap, cmd).await,
            Command::User(cmd) => user::run(&cli.bootstrap, cmd).await,
            Command::Acl(cmd) => acl::run(&cli.bootstrap, cmd).await,
            Command::Leader(cmd) => leader::run(&cli.bootstrap, cmd).await,
            Command::Reassign(cmd) => reassign::run(&cli.bootstrap, cmd).await,
            Command::Task(cmd) => task::run(&cli.bootstrap, cmd).await,
            Command::Logdirs(cmd) => logdirs::run(&cli.bootstrap, cmd).await,
            Command::Produce(args) => produce::run(&cli.bootstrap, args).await,
            Command::Group(cmd) => group::run(&cli.bootstrap, cmd).await,
            Command::Consume(args) => consume::run(&cli.bootstrap, args).await,
            Command::Bench(cmd) => bench::run(&cli.bootstrap, cmd).await,
            Command::Tune(args) => tune::run(args),
        }
    });
    if let Err(e) = result {
        eprintln!("ringmq: {e:#}");
        std::process::exit(1);
    }
}

/// The first broker of a bootstrap list.
pub fn first(bootstrap: &str) -> &str {
    bootstrap.split(',').next().unwrap_or(bootstrap)
}

/// `k=v` -> (k, v).
pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}
