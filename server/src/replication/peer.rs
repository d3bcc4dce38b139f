//! A connection from this broker to another one, speaking Kafka's protocol as a client:
//! one request at a time, each answered before the next (replica fetchers, transaction
//! markers, verification), over the inter-broker listener's security (TLS, then SASL
//! as the broker's own principal).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::security::peer_client::{PeerSecurity, ScramClient, TlsClientStream, plain_token};
use crate::security::sasl::Mechanism;

/// How long authentication may take on a new connection.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Conn {
    link: Link,
    correlation: i32,
    client_id: &'static str,
}

enum Link {
    Plain(TcpStream),
    Tls(Box<TlsClientStream>),
}

impl Link {
    async fn write_all(&mut self, data: Vec<u8>) -> io::Result<()> {
        match self {
            Link::Plain(s) => {
                let BufResult(res, _) = s.write_all(data).await;
                res
            }
            Link::Tls(t) => t.write_all(&data).await,
        }
    }

    async fn read_exact(&mut self, n: usize) -> io::Result<Bytes> {
        match self {
            Link::Plain(s) => {
                let body = Vec::with_capacity(n);
                let BufResult(res, body) = s.read_exact(compio::buf::IoBuf::slice(body, ..n)).await;
                res?;
                Ok(Bytes::from(compio::buf::IntoInner::into_inner(body)))
            }
            Link::Tls(t) => t.read_exact(n).await,
        }
    }
}

impl Conn {
    /// Connects to `address` (host:port) with the inter-broker listener's `security`,
    /// naming itself `client_id` in requests.
    pub async fn connect(
        address: &str,
        client_id: &'static str,
        security: &PeerSecurity,
    ) -> io::Result<Conn> {
        if let Some(why) = &security.unusable {
            return Err(io::Error::other(why.clone()));
        }
        let stream = TcpStream::connect(address).await?;
        let _ = socket2::SockRef::from(&stream).set_tcp_nodelay(true);
        let secured = secure(stream, address, client_id, security).await;
        if let Err(e) = &secured
            && matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidData
            )
            && crate::security::acl::due_to_report(&LOGIN_FAILED)
        {
            tracing::error!(
                %address,
                listener = %security.listener,
                principal = %security.principal,
                error = %e,
                "cannot connect to another broker's inter-broker listener: its TLS or SASL refuses this broker (or this broker its certificate), so replication and transaction markers to it stop"
            );
        }
        secured
    }
}

/// The last report of a refused TLS handshake or login (one ERROR per 30 s).
static LOGIN_FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// TLS and SASL on a new connection.
async fn secure(
    stream: TcpStream,
    address: &str,
    client_id: &'static str,
    security: &PeerSecurity,
) -> io::Result<Conn> {
    let link = match &security.tls {
        None => Link::Plain(stream),
        Some(config) => {
            let tls = TlsClientStream::connect(Arc::clone(config), address, stream);
            let tls = compio::time::timeout(LOGIN_TIMEOUT, tls)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake"))?
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
            Link::Tls(Box::new(tls))
        }
    };
    let mut conn = Conn {
        link,
        correlation: 0,
        client_id,
    };
    if security.sasl.is_some() {
        login(&mut conn, security).await.map_err(|e| {
            // The broker's refusals (Other) are a denial; a lost connection stays one.
            let kind = match e.kind() {
                io::ErrorKind::Other => io::ErrorKind::PermissionDenied,
                k => k,
            };
            io::Error::new(kind, format!("SASL login as {}: {e}", security.principal))
        })?;
    }
    Ok(conn)
}

/// SaslHandshake v1, then SaslAuthenticate rounds for the mechanism.
async fn login(c: &mut Conn, security: &PeerSecurity) -> io::Result<()> {
    let Some(sasl) = &security.sasl else {
        return Ok(());
    };
    let mechanism = sasl.mechanism;
    let req =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.name()));
    let resp: SaslHandshakeResponse =
        call(c, ApiKey::SaslHandshake, 1, &req, LOGIN_TIMEOUT).await?;
    if resp.error_code != 0 {
        return Err(io::Error::other(format!(
            "SaslHandshake error {} (the listener enables {:?})",
            resp.error_code,
            resp.mechanisms
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
        )));
    }
    let mut round = async |token: Vec<u8>| -> io::Result<Bytes> {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let resp: SaslAuthenticateResponse =
            call(c, ApiKey::SaslAuthenticate, 2, &req, LOGIN_TIMEOUT).await?;
        if resp.error_code != 0 {
            return Err(io::Error::other(format!(
                "SaslAuthenticate error {}: {}",
                resp.error_code,
                resp.error_message.as_deref().unwrap_or("")
            )));
        }
        Ok(resp.auth_bytes)
    };
    match mechanism {
        Mechanism::Plain => {
            round(plain_token(sasl)).await?;
        }
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let (mut scram, first) = ScramClient::start(sasl);
            let server_first = round(first).await?;
            let last = scram
                .respond(sasl, &server_first)
                .map_err(io::Error::other)?;
            let server_final = round(last).await?;
            scram.finish(&server_final).map_err(io::Error::other)?;
        }
    }
    Ok(())
}

/// Sends one request and reads its response.
pub async fn call<Req: Encodable, Resp: Decodable>(
    c: &mut Conn,
    api: ApiKey,
    version: i16,
    req: &Req,
    timeout: Duration,
) -> io::Result<Resp> {
    c.correlation = c.correlation.wrapping_add(1);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(c.correlation)
        .with_client_id(Some(StrBytes::from_static_str(c.client_id)))
        .encode(&mut buf, api.request_header_version(version))
        .and_then(|_| req.encode(&mut buf, version))
        .map_err(|e| io::Error::other(format!("encoding {api:?}: {e}")))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    let exchange = async {
        c.link.write_all(buf.to_vec()).await?;
        let len_buf = c.link.read_exact(4).await?;
        let len = i32::from_be_bytes([len_buf[0], len_buf[1], len_buf[2], len_buf[3]]);
        if !(0..=256 << 20).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response frame of {len} bytes"),
            ));
        }
        c.link.read_exact(len as usize).await
    };
    let mut frame = compio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{api:?} timed out")))??;
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if header.correlation_id != c.correlation {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "response out of order",
        ));
    }
    Resp::decode(&mut frame, version)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{api:?}: {e}")))
}
