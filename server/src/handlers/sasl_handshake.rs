//! SaslHandshake (key 17): the client names its SASL mechanism. On a SASL listener it
//! starts the exchange (v0: bare tokens follow; v1: SaslAuthenticate requests), or, on an
//! authenticated connection, a re-authentication (KIP-368) with the same mechanism. An
//! unknown or disabled mechanism is UNSUPPORTED_SASL_MECHANISM with the enabled ones, and
//! the connection closes; elsewhere (a listener without SASL, a handshake in the middle
//! of an exchange) the answer is ILLEGAL_SASL_STATE.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::security::sasl::SaslState;

pub fn handle(req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: SaslHandshakeRequest = protocol::decode_body(req.body.clone(), v)?;
    let session = &req.session;
    let answer = |code: Option<ResponseError>, mechanisms: Vec<&str>| {
        let resp = SaslHandshakeResponse::default()
            .with_error_code(code.map_or(0, |c| c.code()))
            .with_mechanisms(
                mechanisms
                    .into_iter()
                    .map(|m| StrBytes::from_string(m.to_owned()))
                    .collect(),
            );
        protocol::single(ApiKey::SaslHandshake, v, req.correlation_id(), &resp)
    };
    let Some(sasl) = &session.listener.sasl else {
        return answer(Some(ResponseError::IllegalSaslState), Vec::new());
    };
    let reauth = match &*session.sasl.borrow() {
        SaslState::Start => false,
        // Re-authentication needs SaslAuthenticate, so a v1 handshake.
        SaslState::Done if v >= 1 => true,
        _ => {
            session.close_after_reply.set(true);
            return answer(Some(ResponseError::IllegalSaslState), sasl.names());
        }
    };
    // Exact names, as Kafka matches them ("scram-sha-512" or "PLAIN " is no mechanism).
    let chosen = sasl
        .mechanisms
        .iter()
        .copied()
        .find(|m| m.name() == body.mechanism.as_str());
    let Some(mechanism) = chosen else {
        tracing::info!(
            target: "ringmq::audit", peer = %session.peer, listener = %session.listener_name(),
            mechanism = %body.mechanism.as_str(), "SASL handshake with an unsupported mechanism"
        );
        session.close_after_reply.set(true);
        return answer(Some(ResponseError::UnsupportedSaslMechanism), sasl.names());
    };
    if reauth && session.mechanism.get() != Some(mechanism) {
        // KIP-368: a re-authentication keeps the mechanism.
        session.close_after_reply.set(true);
        return answer(Some(ResponseError::IllegalSaslState), sasl.names());
    }
    *session.sasl.borrow_mut() = SaslState::Handshaken {
        mechanism,
        raw: v == 0,
        reauth,
    };
    answer(None, sasl.names())
}
