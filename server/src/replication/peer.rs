//! A connection from this broker to another one, speaking Kafka's protocol as a client:
//! one request at a time, each answered before the next (replica fetchers, transaction
//! markers).

use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub struct Conn {
    stream: TcpStream,
    correlation: i32,
    client_id: &'static str,
}

impl Conn {
    /// Connects to `address` (host:port), naming itself `client_id` in requests.
    pub async fn connect(address: &str, client_id: &'static str) -> io::Result<Conn> {
        let stream = TcpStream::connect(address).await?;
        let _ = socket2::SockRef::from(&stream).set_tcp_nodelay(true);
        Ok(Conn {
            stream,
            correlation: 0,
            client_id,
        })
    }
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
        let BufResult(res, _) = c.stream.write_all(buf.to_vec()).await;
        res?;
        let BufResult(res, len_buf) = c.stream.read_exact([0u8; 4]).await;
        res?;
        let len = i32::from_be_bytes(len_buf);
        if !(0..=256 << 20).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response frame of {len} bytes"),
            ));
        }
        let body = Vec::with_capacity(len as usize);
        let BufResult(res, body) = c
            .stream
            .read_exact(compio::buf::IoBuf::slice(body, ..len as usize))
            .await;
        res?;
        Ok(Bytes::from(compio::buf::IntoInner::into_inner(body)))
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
