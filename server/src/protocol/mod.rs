//! Kafka framing and the response form connections write.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes: request header then
//! body. Responses are built as [`Response`]s — byte pieces and, for fetch, file ranges
//! that the connection sends without copying them through user space.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use ringmq_engine::FileRange;

/// One part of a response on the wire.
#[derive(Debug)]
pub enum Piece {
    Bytes(Bytes),
    /// Segment bytes sent straight from the file (sendfile/splice on plaintext).
    File(FileRange),
}

/// A complete response frame (length prefix included), in pieces.
#[derive(Debug, Default)]
pub struct Response {
    pub pieces: Vec<Piece>,
}

/// Why a request could not be answered: the connection is closed (Kafka's behaviour for
/// frames it cannot parse).
#[derive(Debug, thiserror::Error)]
pub enum CloseConnection {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported request: {0}")]
    Unsupported(String),
    /// A response could not be encoded: a broker bug, logged at ERROR.
    #[error("cannot encode response: {0}")]
    Encode(String),
}

/// Which request a connection closed on, for the WARN line: API key and version as the
/// frame gave them (even when the header did not decode), and the client id if it did.
#[derive(Debug, Clone, Default)]
pub struct RequestLabel {
    pub api_key: Option<i16>,
    pub api_version: Option<i16>,
    pub client_id: Option<String>,
}

impl RequestLabel {
    /// Reads the API key and version from the first four bytes of a frame, if present.
    pub fn peek(frame: &[u8]) -> Self {
        let field = |at: usize| {
            frame
                .get(at..at + 2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
        };
        RequestLabel {
            api_key: field(0),
            api_version: field(2),
            client_id: None,
        }
    }

    /// The API's name when the key is known, else the number.
    pub fn api_name(&self) -> String {
        match self.api_key {
            Some(k) => ApiKey::try_from(k).map_or_else(|_| k.to_string(), |a| format!("{a:?}")),
            None => "-".into(),
        }
    }
}

/// Decodes the request header; returns it and the body.
pub fn decode_header(mut frame: Bytes) -> Result<(RequestHeader, ApiKey, Bytes), CloseConnection> {
    if frame.len() < 8 {
        return Err(CloseConnection::Malformed(format!(
            "{}-byte frame",
            frame.len()
        )));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(key)
        .map_err(|_| CloseConnection::Unsupported(format!("unknown API key {key}")))?;
    // ApiVersions requests of versions we do not know still get an answer (KIP-511), so
    // their header is decoded as v1, the non-flexible form every version starts with.
    let header_version =
        if api_key == ApiKey::ApiVersions && version > ApiKey::ApiVersions.valid_versions().max {
            1
        } else {
            api_key.request_header_version(version)
        };
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| CloseConnection::Malformed(format!("request header: {e}")))?;
    Ok((header, api_key, frame))
}

/// Decodes a request body of `version`.
pub fn decode_body<T: Decodable>(mut body: Bytes, version: i16) -> Result<T, CloseConnection> {
    T::decode(&mut body, version).map_err(|e| CloseConnection::Malformed(e.to_string()))
}

/// Encodes a complete response frame: length, response header, body.
pub fn encode<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, CloseConnection> {
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .and_then(|_| body.encode(&mut buf, version))
        .map_err(|e| CloseConnection::Encode(format!("{api_key:?} v{version}: {e}")))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// A response of one encoded frame.
pub fn single<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Response, CloseConnection> {
    Ok(Response {
        pieces: vec![Piece::Bytes(encode(
            api_key,
            version,
            correlation_id,
            body,
        )?)],
    })
}
