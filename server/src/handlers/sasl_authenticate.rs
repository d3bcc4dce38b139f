//! SaslAuthenticate (key 36), and the bare tokens of a v0 SaslHandshake: one SASL token
//! each way. Success sets the connection's principal (`User:<name>`) and, with
//! `connections.max.reauth.ms`, the session's lifetime (KIP-368, v1+). Failure answers
//! SASL_AUTHENTICATION_FAILED with Kafka's generic message, writes an audit line, and
//! closes the connection. Before any credential is checked, an attempt waits out the
//! back-off its address's recent failures earned, and an address with too many attempts
//! in progress fails at once (the password checks run on a small fixed pool: a flood of
//! logins costs neither threads nor more than that pool's cores). A token outside an
//! exchange is ILLEGAL_SASL_STATE.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::metrics::Metrics;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::Session;
use crate::security::sasl::{self, Mechanism, SaslState, Step};

/// What a token led to.
enum Outcome {
    /// The next challenge, or the final server message of a success.
    Reply(Vec<u8>),
    /// Authentication failed; the message the client gets.
    Failed(String),
    /// Not in an exchange.
    OutOfOrder,
}

async fn run(ctx: &ShardCtx, session: &Session, token: &[u8]) -> Outcome {
    let Some(config) = &session.listener.sasl else {
        return Outcome::OutOfOrder;
    };
    let state = session.sasl.borrow().clone();
    let (mechanism, reauth) = match &state {
        SaslState::Handshaken {
            mechanism, reauth, ..
        } => (*mechanism, *reauth),
        SaslState::Scram {
            exchange, reauth, ..
        } => (exchange.mechanism, *reauth),
        SaslState::Start | SaslState::Done => return Outcome::OutOfOrder,
    };
    let failed = |user: Option<String>, why: String| async move {
        Metrics::add(&ctx.broker.metrics.sasl_failures, 1);
        let delay = ctx.broker.auth_failures.failed(session.peer.ip());
        tracing::warn!(
            target: "ringmq::audit", peer = %session.peer, listener = %session.listener_name(),
            mechanism = mechanism.name(), user = user.as_deref().unwrap_or("-"), reason = %why,
            next_delay_ms = delay.as_millis() as u64, "SASL authentication failed"
        );
        Outcome::Failed(generic_message(mechanism))
    };
    let ip = session.peer.ip();
    let Some(_attempt) = ctx.broker.auth_failures.begin(ip) else {
        return failed(
            None,
            "too many authentications in progress from this address".into(),
        )
        .await;
    };
    let wait = ctx.broker.auth_failures.delay(ip);
    if !wait.is_zero() {
        compio::time::sleep(wait).await;
    }
    let image = ctx.broker.image();
    let step = sasl::step(config, &image, state, token, &ctx.broker.sasl_secret).await;
    match step {
        Step::Challenge(reply, next) => {
            *session.sasl.borrow_mut() = next;
            Outcome::Reply(reply)
        }
        Step::Success { user, reply } => {
            let principal: std::sync::Arc<str> = format!("User:{user}").into();
            if reauth && *principal != *session.principal() {
                return failed(Some(user), "re-authenticated as another principal".into()).await;
            }
            *session.sasl.borrow_mut() = SaslState::Done;
            session.mechanism.set(Some(mechanism));
            session.set_principal(std::sync::Arc::clone(&principal));
            session.expires_at.set(
                (config.reauth_ms > 0)
                    .then(|| Instant::now() + Duration::from_millis(config.reauth_ms)),
            );
            ctx.broker.auth_failures.succeeded(session.peer.ip());
            Metrics::add(&ctx.broker.metrics.sasl_authentications, 1);
            tracing::info!(
                target: "ringmq::audit", peer = %session.peer, listener = %session.listener_name(),
                mechanism = mechanism.name(), %principal, reauth, "SASL authenticated"
            );
            Outcome::Reply(reply)
        }
        Step::Failure { user, why } => failed(user, why).await,
    }
}

/// Kafka's message for every failed authentication: nothing about what was wrong.
fn generic_message(m: Mechanism) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL \
         mechanism {}",
        m.name()
    )
}

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: SaslAuthenticateRequest = protocol::decode_body(req.body.clone(), v)?;
    let session = &req.session;
    let mut resp = SaslAuthenticateResponse::default();
    let raw = session.sasl.borrow().raw_tokens();
    let outcome = if raw {
        Outcome::OutOfOrder
    } else {
        run(ctx, session, &body.auth_bytes).await
    };
    match outcome {
        Outcome::Reply(bytes) => {
            resp.auth_bytes = Bytes::from(bytes);
            if v >= 1
                && matches!(*session.sasl.borrow(), SaslState::Done)
                && let Some(at) = session.expires_at.get()
            {
                resp.session_lifetime_ms =
                    at.saturating_duration_since(Instant::now()).as_millis() as i64;
            }
        }
        Outcome::Failed(message) => {
            session.close_after_reply.set(true);
            resp.error_code = ResponseError::SaslAuthenticationFailed.code();
            resp.error_message = Some(StrBytes::from_string(message));
        }
        Outcome::OutOfOrder => {
            // Before any handshake this connection cannot go on; after authentication
            // (no re-authentication under way) Kafka answers and keeps it.
            let before_auth = !session.authenticated();
            session.close_after_reply.set(before_auth || raw);
            resp.error_code = ResponseError::IllegalSaslState.code();
            resp.error_message = Some(StrBytes::from_static_str(
                "SaslAuthenticate is not expected in this state of the SASL exchange",
            ));
        }
    }
    protocol::single(ApiKey::SaslAuthenticate, v, req.correlation_id(), &resp)
}

/// A v0 exchange's bare token; `None` when authentication failed (the connection
/// closes without an answer, as Kafka does for v0 clients).
pub async fn raw_token(ctx: &Rc<ShardCtx>, session: &Rc<Session>, token: Bytes) -> Option<Vec<u8>> {
    match run(ctx, session, &token).await {
        Outcome::Reply(bytes) => Some(bytes),
        Outcome::Failed(_) | Outcome::OutOfOrder => None,
    }
}
