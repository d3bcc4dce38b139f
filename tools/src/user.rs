//! `ringmq user create|list|delete|reset-password`: SASL/SCRAM users through Kafka's
//! standard APIs (AlterUserScramCredentials, DescribeUserScramCredentials), so it works
//! against any Kafka broker. A user gets SCRAM-SHA-256 and SCRAM-SHA-512 credentials
//! (PLAIN checks against them on ringmq); the password is salted and hashed here and
//! never leaves this process in the clear.

use clap::Subcommand;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::client_config::{rand_bytes, salted_password};

/// Kafka's default SCRAM iterations.
const ITERATIONS: i32 = 4096;

const MECHANISMS: [(i8, &str); 2] = [(1, "SCRAM-SHA-256"), (2, "SCRAM-SHA-512")];

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (SCRAM-SHA-256 and SCRAM-SHA-512 credentials).
    Create {
        name: String,
        /// The password (default: read a line from stdin).
        #[arg(long)]
        password: Option<String>,
    },
    /// List users and their mechanisms.
    List,
    /// Delete a user.
    Delete { name: String },
    /// Set a user's new password.
    ResetPassword {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
}

fn read_password(given: Option<String>) -> anyhow::Result<String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(
        !p.is_empty(),
        "no password given (--password or a line on stdin)"
    );
    Ok(p)
}

fn upsert(
    name: &str,
    password: &str,
    (code, mech): (i8, &str),
) -> anyhow::Result<ScramCredentialUpsertion> {
    let salt = rand_bytes(32);
    let salted = salted_password(mech, password, &salt, ITERATIONS as u32)?;
    Ok(ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_string(name.to_owned()))
        .with_mechanism(code)
        .with_iterations(ITERATIONS)
        .with_salt(salt.into())
        .with_salted_password(salted.into()))
}

/// Sends each request in turn (Kafka takes a user at most once per request: one request
/// per mechanism).
fn alter(
    bootstrap: &str,
    reqs: Vec<AlterUserScramCredentialsRequest>,
    done: &str,
) -> anyhow::Result<()> {
    let mut wire = crate::bench::Wire::connect(crate::first(bootstrap))?;
    let mut users = Vec::new();
    for req in reqs {
        let resp = wire.call(0, &req)?;
        for r in &resp.results {
            anyhow::ensure!(
                r.error_code == 0,
                "user {}: {} (error {})",
                r.user.as_str(),
                r.error_message.as_deref().unwrap_or(""),
                r.error_code
            );
            users.push(r.user.to_string());
        }
    }
    users.dedup();
    for u in users {
        println!("{done} user {u}");
    }
    Ok(())
}

pub async fn run(bootstrap: &str, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create { name, password } | UserCommand::ResetPassword { name, password } => {
            let password = read_password(password)?;
            let reqs = MECHANISMS
                .iter()
                .map(|m| {
                    let u = upsert(&name, &password, *m)?;
                    Ok(AlterUserScramCredentialsRequest::default().with_upsertions(vec![u]))
                })
                .collect::<anyhow::Result<_>>()?;
            alter(bootstrap, reqs, "saved")
        }
        UserCommand::Delete { name } => {
            let mut wire = crate::bench::Wire::connect(crate::first(bootstrap))?;
            let described = wire.call(
                0,
                &DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                    UserName::default().with_name(StrBytes::from_string(name.clone())),
                ])),
            )?;
            let mechanisms: Vec<i8> = described
                .results
                .iter()
                .flat_map(|r| r.credential_infos.iter().map(|c| c.mechanism))
                .collect();
            anyhow::ensure!(!mechanisms.is_empty(), "no user {name}");
            let reqs = mechanisms
                .into_iter()
                .map(|m| {
                    AlterUserScramCredentialsRequest::default().with_deletions(vec![
                        ScramCredentialDeletion::default()
                            .with_name(StrBytes::from_string(name.clone()))
                            .with_mechanism(m),
                    ])
                })
                .collect();
            alter(bootstrap, reqs, "deleted")
        }
        UserCommand::List => {
            let mut wire = crate::bench::Wire::connect(crate::first(bootstrap))?;
            let resp = wire.call(
                0,
                &DescribeUserScramCredentialsRequest::default().with_users(None),
            )?;
            anyhow::ensure!(
                resp.error_code == 0,
                "listing users failed (error {})",
                resp.error_code
            );
            println!("{:<24} MECHANISMS", "USER");
            for r in &resp.results {
                let mechs: Vec<String> = r
                    .credential_infos
                    .iter()
                    .map(|c| {
                        let name = MECHANISMS
                            .iter()
                            .find(|(code, _)| *code == c.mechanism)
                            .map_or("?", |(_, n)| n);
                        format!("{name}({})", c.iterations)
                    })
                    .collect();
                println!("{:<24} {}", r.user.as_str(), mechs.join(","));
            }
            Ok(())
        }
    }
}
