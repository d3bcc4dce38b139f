//! AlterUserScramCredentials (key 51): sets and removes users' SCRAM credentials
//! (`kafka-configs --alter --add-config 'SCRAM-SHA-512=[password=...]' --entity-type
//! users`, `ringmq user`). The client sends the salted password; the broker keeps only
//! StoredKey and ServerKey. Checked per user as Kafka checks them (mechanism, iterations
//! 4096..16384, a non-empty name, a user at most once per request), then by the
//! controller against the
//! users that exist: at most `ringmq.sasl.max.users`, and the initial user keeps a
//! credential (SPEC S3).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::cluster::controller::{Answer, ControllerRequest};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::sasl::Mechanism;
use crate::security::scram;

/// A user's first problem in the request, if any.
fn check(
    name: &str,
    mechanism: i8,
    iterations: Option<i32>,
    seen: &mut BTreeMap<String, usize>,
) -> Option<(ResponseError, String)> {
    if name.is_empty() {
        return Some((
            ResponseError::UnacceptableCredential,
            "Username must not be empty".into(),
        ));
    }
    if Mechanism::from_scram_code(mechanism).is_none() {
        return Some((
            ResponseError::UnsupportedSaslMechanism,
            format!("Unknown SCRAM mechanism {mechanism}"),
        ));
    }
    *seen.entry(name.to_owned()).or_default() += 1;
    if let Some(i) = iterations {
        if i < scram::MIN_ITERATIONS {
            return Some((
                ResponseError::UnacceptableCredential,
                format!(
                    "Iterations {i} is less than the minimum of {}",
                    scram::MIN_ITERATIONS
                ),
            ));
        }
        if i > scram::MAX_ITERATIONS {
            return Some((
                ResponseError::UnacceptableCredential,
                format!(
                    "Iterations {i} is more than the maximum of {}",
                    scram::MAX_ITERATIONS
                ),
            ));
        }
    }
    None
}

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: AlterUserScramCredentialsRequest = protocol::decode_body(req.body.clone(), v)?;
    let may_alter = ctx
        .broker
        .authorize_cluster(&req.session, crate::security::acl::op::ALTER);
    let mut seen = BTreeMap::new();
    let mut errors: BTreeMap<String, (ResponseError, String)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut note = |name: &str, problem: Option<(ResponseError, String)>| {
        if !order.iter().any(|n| n == name) {
            order.push(name.to_owned());
        }
        if let Some(p) = problem {
            errors.entry(name.to_owned()).or_insert(p);
        }
    };
    let denied = || {
        Some((
            ResponseError::ClusterAuthorizationFailed,
            "not authorized to alter users".to_owned(),
        ))
    };
    for d in &body.deletions {
        let p = if may_alter {
            check(d.name.as_str(), d.mechanism, None, &mut seen)
        } else {
            denied()
        };
        note(d.name.as_str(), p);
    }
    for u in &body.upsertions {
        let p = if may_alter {
            check(u.name.as_str(), u.mechanism, Some(u.iterations), &mut seen)
        } else {
            denied()
        };
        note(u.name.as_str(), p);
    }
    // As Kafka: a user appears once per request (one mechanism at a time).
    for (name, n) in &seen {
        if *n > 1 {
            errors.entry(name.clone()).or_insert((
                ResponseError::DuplicateResource,
                "A user credential cannot be altered twice in the same request".into(),
            ));
        }
    }
    let ok = |name: &str| !errors.contains_key(name);
    let deletions: Vec<(String, String)> = body
        .deletions
        .iter()
        .filter(|d| ok(d.name.as_str()))
        .filter_map(|d| {
            Mechanism::from_scram_code(d.mechanism)
                .map(|m| (d.name.to_string(), m.name().to_owned()))
        })
        .collect();
    let upserts: Vec<(String, String, scram::Credential)> = body
        .upsertions
        .iter()
        .filter(|u| ok(u.name.as_str()))
        .filter_map(|u| {
            Mechanism::from_scram_code(u.mechanism).map(|m| {
                (
                    u.name.to_string(),
                    m.name().to_owned(),
                    scram::credential_from_salted(m, &u.salted_password, &u.salt, u.iterations),
                )
            })
        })
        .collect();
    let mut outcome: BTreeMap<String, (i16, Option<String>)> = errors
        .into_iter()
        .map(|(n, (code, m))| (n, (code.code(), Some(m))))
        .collect();
    if !deletions.is_empty() || !upserts.is_empty() {
        let cfg = &ctx.broker.config;
        let request = ControllerRequest::AlterScramCredentials {
            upserts,
            deletions,
            max_users: cfg.max_sasl_users,
            protected: cfg.initial_user.clone(),
            only_if_absent: false,
        };
        match ctx.broker.cluster.submit(request).await {
            Ok((_, Answer::UserResults(results))) => {
                for (user, code, message) in results {
                    if code == 0 {
                        tracing::info!(target: "ringmq::audit", %user, principal = %req.session.principal(), "SCRAM credentials altered");
                    }
                    outcome.insert(user, (code, message));
                }
            }
            Ok(_) => {}
            Err(e) => {
                for name in &order {
                    outcome
                        .entry(name.clone())
                        .or_insert((e.code.code(), Some(e.message.clone())));
                }
            }
        }
    }
    let results = order
        .iter()
        .map(|name| {
            let (code, message) = outcome.get(name).cloned().unwrap_or((0, None));
            AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(name.clone()))
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
        })
        .collect();
    let resp = AlterUserScramCredentialsResponse::default().with_results(results);
    protocol::single(
        ApiKey::AlterUserScramCredentials,
        v,
        req.correlation_id(),
        &resp,
    )
}
