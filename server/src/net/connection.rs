//! One client connection on its shard.
//!
//! The reader reads frames (4-byte length + body), decodes the request header and spawns
//! a task per request, so a long-polling fetch does not hold up the produce requests
//! pipelined behind it (librdkafka uses one connection per broker for both). At most
//! [`IN_FLIGHT_MAX`] requests per connection run at once. The writer sends responses
//! strictly in request order (clients match them by order as well as correlation id),
//! holding back those that finish early. A frame that cannot be parsed, or larger than
//! `socket.request.max.bytes`, closes this connection only.
//!
//! On a TLS listener the handshake runs first and frames pass through rustls; on a SASL
//! listener only ApiVersions, SaslHandshake and SaslAuthenticate are served until the
//! client authenticates (frames up to `sasl.server.max.receive.size` meanwhile), and the
//! SASL requests run in line, in order, since each changes how the next frame is read.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::buf::IoBuf;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;

use crate::handlers;
use crate::protocol::{self, CloseConnection, Piece, RequestLabel, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::tls::{self, TlsReader, TlsWriter};
use crate::security::{ListenerRuntime, Session};

/// Requests of one connection being handled at once.
pub const IN_FLIGHT_MAX: usize = 64;

/// What the writer gets for each request, in read order: the outcome, and whether the
/// connection closes once it is written (a failed authentication).
type Outcome = Result<Option<Response>, (RequestLabel, CloseConnection)>;
type Reply = (u64, Outcome, bool);

/// Kafka's `sasl.server.max.receive.size` default: the largest frame read before a
/// client has authenticated.
pub const SASL_MAX_RECEIVE_SIZE: u32 = 524_288;

/// Where requests come from: the socket (plaintext, or decrypted by kernel TLS, with
/// what rustls had already decrypted first), or rustls over it.
enum FrameSource {
    Plain(TcpStream, BytesMut),
    Tls(TlsReader),
}

/// Where responses go: the socket (kernel TLS encrypts in the kernel, so file ranges are
/// still spliced), or rustls over it.
pub enum FrameSink {
    Plain(TcpStream),
    Ktls(TcpStream),
    Tls(TlsWriter),
}

impl FrameSink {
    fn shutdown(&self) {
        let sock = match self {
            FrameSink::Plain(s) | FrameSink::Ktls(s) => s,
            FrameSink::Tls(t) => t.socket(),
        };
        let _ = socket2::SockRef::from(sock).shutdown(std::net::Shutdown::Both);
    }
}

pub async fn serve(
    ctx: Rc<ShardCtx>,
    listener: std::sync::Arc<ListenerRuntime>,
    mut stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
) {
    let _ = stream.set_nodelay(true);
    let metrics = &ctx.broker.metrics;
    // Non-blocking, so zero-copy fetch can splice into it from the shard thread and wait
    // on an io_uring poll when the send buffer is full; compio's io_uring reads and writes
    // arm a poll on EAGAIN and behave as before.
    let nonblocking = |stream: &TcpStream| {
        if let Err(e) = socket2::SockRef::from(stream).set_nonblocking(true) {
            tracing::debug!(%peer, error = %e, "cannot make the socket non-blocking");
        }
    };
    let runtime = std::sync::Arc::clone(&listener);
    let (source, sink, principal) = match &runtime.tls {
        None => {
            nonblocking(&stream);
            let (reader, writer) = stream.into_split();
            (
                FrameSource::Plain(reader, BytesMut::new()),
                FrameSink::Plain(writer),
                crate::security::ANONYMOUS.to_owned(),
            )
        }
        Some(server) => {
            let started = std::time::Instant::now();
            let shaken =
                compio::time::timeout(tls::HANDSHAKE_TIMEOUT, tls::handshake(server, &mut stream))
                    .await;
            match shaken {
                Ok(Ok((shaken, principal))) => {
                    crate::metrics::Metrics::add(&metrics.tls_handshakes, 1);
                    crate::metrics::Metrics::add(
                        &metrics.tls_handshake_us,
                        started.elapsed().as_micros() as u64,
                    );
                    let shaken = if server.ktls {
                        match shaken.offload(&stream) {
                            Ok(early) => {
                                crate::metrics::Metrics::add(&metrics.ktls_connections, 1);
                                nonblocking(&stream);
                                let (reader, writer) = stream.into_split();
                                let source = FrameSource::Plain(reader, early);
                                let sink = FrameSink::Ktls(writer);
                                let session = (listener, peer, principal, conn_id);
                                return serve_session(ctx, source, sink, session).await;
                            }
                            Err(tls::Fallback::UserSpace(shaken, why)) => {
                                tracing::debug!(conn_id, %peer, %why, "TLS stays in user space");
                                *shaken
                            }
                            Err(tls::Fallback::Lost(e)) => {
                                tracing::warn!(conn_id, %peer, error = %e, "the kernel refused the TLS session keys; closing");
                                return;
                            }
                        }
                    } else {
                        shaken
                    };
                    crate::metrics::Metrics::add(&metrics.tls_userspace_connections, 1);
                    let (reader, writer) = tls::split(stream, shaken);
                    (FrameSource::Tls(reader), FrameSink::Tls(writer), principal)
                }
                Ok(Err(e)) => {
                    crate::metrics::Metrics::add(&metrics.tls_handshake_failures, 1);
                    let error = e.to_string();
                    if error.contains("UnsupportedCertVersion") {
                        // What `openssl x509 -req` makes without extensions: say why, the
                        // client alone cannot tell.
                        tracing::warn!(shard = ctx.id, conn_id, %peer, listener = %server.listener_name(), %error,
                            "TLS handshake failed: the client certificate is X.509 v1, which rustls/webpki refuse; issue a v3 certificate (openssl x509 -req ... -extfile with basicConstraints=CA:FALSE, see the README)");
                    } else {
                        tracing::info!(shard = ctx.id, conn_id, %peer, listener = %server.listener_name(), %error, "TLS handshake failed");
                    }
                    return;
                }
                Err(_) => {
                    crate::metrics::Metrics::add(&metrics.tls_handshake_failures, 1);
                    tracing::info!(shard = ctx.id, conn_id, %peer, listener = %server.listener_name(), "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    serve_session(ctx, source, sink, (listener, peer, principal, conn_id)).await;
}

/// Serves a connection once its transport is set up: (listener, peer, principal, id).
async fn serve_session(
    ctx: Rc<ShardCtx>,
    source: FrameSource,
    sink: FrameSink,
    (listener, peer, principal, conn_id): (
        std::sync::Arc<ListenerRuntime>,
        SocketAddr,
        String,
        u64,
    ),
) {
    let session = Rc::new(Session::new(listener, peer, principal.into()));
    let (tx, rx) = mpsc::unbounded::<Reply>();
    let in_flight = Rc::new(Cell::new(0usize));
    let slot_freed: Rc<RefCell<Option<oneshot::Sender<()>>>> = Rc::new(RefCell::new(None));
    let writer_task = compio::runtime::spawn(write_loop(
        Rc::clone(&ctx),
        sink,
        rx,
        Rc::clone(&in_flight),
        Rc::clone(&slot_freed),
    ));
    if let Err(e) = read_loop(&ctx, source, tx, in_flight, slot_freed, &session).await {
        match e {
            ReadError::Io(e) => {
                tracing::debug!(shard = ctx.id, conn_id, %peer, error = %e, "closing connection")
            }
            ReadError::Refused(reason) => tracing::warn!(
                shard = ctx.id, conn_id, %peer, listener = %session.listener_name(), %reason,
                "closing connection after a request it could not handle"
            ),
            ReadError::Ended(reason) => tracing::info!(
                shard = ctx.id, conn_id, %peer, listener = %session.listener_name(),
                principal = %session.principal(), %reason, "closing connection"
            ),
            ReadError::BadRequest => {}
        }
    }
    let _ = writer_task.await;
}

async fn read_loop(
    ctx: &Rc<ShardCtx>,
    mut reader: FrameSource,
    tx: mpsc::UnboundedSender<Reply>,
    in_flight: Rc<Cell<usize>>,
    slot_freed: Rc<RefCell<Option<oneshot::Sender<()>>>>,
    session: &Rc<Session>,
) -> Result<(), ReadError> {
    use kafka_protocol::messages::ApiKey;
    let max = ctx.broker.config.socket_request_max_bytes;
    let mut seq = 0u64;
    let idle = std::time::Duration::from_millis(ctx.broker.config.connections_max_idle_ms);
    let peer = session.peer;
    loop {
        ctx.wait_for_queue_room().await;
        let authenticated = session.authenticated();
        let limit = if authenticated {
            max
        } else {
            max.min(SASL_MAX_RECEIVE_SIZE)
        };
        // connections.max.idle.ms: a client that sends nothing for that long is gone.
        // (A request in flight cannot outlast it: fetch waits are bounded by the client's
        // fetch.max.wait.ms, far below Kafka's 10-minute default.)
        let Ok(frame) = compio::time::timeout(idle, read_frame(&mut reader, limit, session)).await
        else {
            tracing::debug!(shard = ctx.id, %peer, ?idle, "closing idle connection");
            return Ok(());
        };
        let Some(frame) = frame? else {
            return Ok(());
        };
        if session.sasl.borrow().raw_tokens() {
            // SaslHandshake v0: this frame is a bare token, answered with a bare token.
            let reply = handlers::sasl_authenticate::raw_token(ctx, session, frame).await;
            in_flight.set(in_flight.get() + 1);
            let close = reply.is_none();
            let outcome = Ok(reply.map(|token| {
                let mut framed = bytes::BytesMut::with_capacity(4 + token.len());
                framed.extend_from_slice(&(token.len() as i32).to_be_bytes());
                framed.extend_from_slice(&token);
                Response {
                    pieces: vec![Piece::Bytes(framed.freeze())],
                }
            }));
            let _ = tx.unbounded_send((seq, outcome, close));
            seq += 1;
            if close {
                return Err(ReadError::Ended("SASL authentication failed".into()));
            }
            continue;
        }
        let frame_bytes = frame.len() as u64;
        let mut label = RequestLabel::peek(&frame);
        let (header, api_key, body) = match protocol::decode_header(frame) {
            Ok(h) => h,
            Err(e) => {
                // The writer logs it (in order, after the responses before it).
                in_flight.set(in_flight.get() + 1);
                let _ = tx.unbounded_send((seq, Err((label, e)), false));
                return Err(ReadError::BadRequest);
            }
        };
        label.client_id = header.client_id.as_ref().map(|c| c.to_string());
        let sasl_api = matches!(api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
        if !authenticated && !sasl_api && api_key != ApiKey::ApiVersions {
            // Kafka closes such connections: nothing but SASL before authentication.
            in_flight.set(in_flight.get() + 1);
            let e = CloseConnection::Unsupported(format!(
                "{api_key:?} before SASL authentication on listener {}",
                session.listener_name()
            ));
            let _ = tx.unbounded_send((seq, Err((label, e)), false));
            return Err(ReadError::BadRequest);
        }
        if authenticated
            && !sasl_api
            && api_key != ApiKey::ApiVersions
            && let Some(reason) = session_over(ctx, session)
        {
            return Err(ReadError::Ended(reason));
        }
        while in_flight.get() >= IN_FLIGHT_MAX {
            let (s, r) = oneshot::channel();
            *slot_freed.borrow_mut() = Some(s);
            let _ = r.await;
        }
        in_flight.set(in_flight.get() + 1);
        let s = seq;
        seq += 1;
        if sasl_api {
            // In line: the next frame's form depends on this one's outcome.
            let outcome = handlers::dispatch(ctx, header, api_key, body, Rc::clone(session))
                .await
                .map_err(|e| (label, e));
            let close = session.close_after_reply.get();
            let _ = tx.unbounded_send((s, outcome, close));
            if close {
                return Err(ReadError::Ended("SASL authentication failed".into()));
            }
            continue;
        }
        let (ctx, tx, session) = (Rc::clone(ctx), tx.clone(), Rc::clone(session));
        ctx.request_queued(frame_bytes);
        let started = (api_key == ApiKey::Produce).then(std::time::Instant::now);
        compio::runtime::spawn(async move {
            let outcome = handlers::dispatch(&ctx, header, api_key, body, session)
                .await
                .map_err(|e| (label, e));
            if let Some(started) = started {
                ctx.broker
                    .metrics
                    .record_produce_time(started.elapsed().as_micros() as u64);
            }
            ctx.request_done(frame_bytes);
            let _ = tx.unbounded_send((s, outcome, false));
        })
        .detach();
    }
}

/// Why an authenticated session may not go on: its SASL lifetime passed
/// (`connections.max.reauth.ms` without re-authentication, KIP-368), or its user was
/// deleted.
fn session_over(ctx: &ShardCtx, session: &Session) -> Option<String> {
    let sasl = session.listener.sasl.as_ref()?;
    if session
        .expires_at
        .get()
        .is_some_and(|t| std::time::Instant::now() >= t)
    {
        return Some("SASL session expired without re-authentication".into());
    }
    let principal = session.principal();
    let user = principal.strip_prefix("User:").unwrap_or(&principal);
    if !crate::security::sasl::user_exists(&ctx.broker.image(), sasl, user) {
        return Some(format!("user {user} was deleted"));
    }
    None
}

/// Why the read loop ended early.
enum ReadError {
    /// The socket failed (the client went away): DEBUG.
    Io(String),
    /// A frame the broker refuses to read (bad length): WARN.
    Refused(String),
    /// The session ended (failed or expired authentication, deleted user): INFO.
    Ended(String),
    /// A request that could not be decoded: the writer logs it at WARN.
    BadRequest,
}

/// Reads one frame; `None` at a clean end of stream.
async fn read_frame(
    reader: &mut FrameSource,
    max: u32,
    session: &Session,
) -> Result<Option<Bytes>, ReadError> {
    let len_buf = match reader {
        FrameSource::Plain(sock, pending) if !BytesMut::is_empty(pending) => {
            match read_pending(sock, pending, 4).await {
                Ok(b) => [b[0], b[1], b[2], b[3]],
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(ReadError::Io(e.to_string())),
            }
        }
        FrameSource::Plain(r, _) => {
            let BufResult(res, len_buf) = r.read_exact([0u8; 4]).await;
            match res {
                Ok(()) => len_buf,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(ReadError::Io(e.to_string())),
            }
        }
        FrameSource::Tls(r) => match r.read_exact(4).await {
            Ok(b) => [b[0], b[1], b[2], b[3]],
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(ReadError::Io(e.to_string())),
        },
    };
    let len = i32::from_be_bytes(len_buf);
    if len < 0 || len as u32 > max {
        if matches!(reader, FrameSource::Plain(..))
            && (0x14..=0x17).contains(&len_buf[0])
            && len_buf[1] == 3
        {
            return Err(ReadError::Refused(format!(
                "a TLS handshake on {} listener {}: the client must connect with \
                 security.protocol {}",
                session.listener.listener.protocol.name(),
                session.listener_name(),
                if session.listener.listener.protocol.sasl() {
                    "SASL_PLAINTEXT"
                } else {
                    "PLAINTEXT"
                },
            )));
        }
        return Err(ReadError::Refused(if session.authenticated() {
            format!("frame of {len} bytes exceeds socket.request.max.bytes {max}")
        } else {
            format!(
                "frame of {len} bytes before authentication exceeds sasl.server.max.receive.size {max}"
            )
        }));
    }
    match reader {
        FrameSource::Plain(sock, pending) if !BytesMut::is_empty(pending) => {
            read_pending(sock, pending, len as usize)
                .await
                .map(Some)
                .map_err(|e| ReadError::Io(format!("reading a {len}-byte frame: {e}")))
        }
        FrameSource::Plain(r, _) => {
            let buf = Vec::with_capacity(len as usize);
            let BufResult(res, buf) = r.read_exact(buf.slice(..len as usize)).await;
            res.map_err(|e| ReadError::Io(format!("reading a {len}-byte frame: {e}")))?;
            Ok(Some(Bytes::from(compio::buf::IntoInner::into_inner(buf))))
        }
        FrameSource::Tls(r) => r
            .read_exact(len as usize)
            .await
            .map(Some)
            .map_err(|e| ReadError::Io(format!("reading a {len}-byte frame: {e}"))),
    }
}

/// Reads `n` bytes from a plain source that still holds bytes decrypted before kernel
/// TLS took over: those first, then the socket.
async fn read_pending(
    sock: &mut TcpStream,
    pending: &mut BytesMut,
    n: usize,
) -> std::io::Result<Bytes> {
    while pending.len() < n {
        let missing = n - pending.len();
        let BufResult(res, buf) =
            compio::io::AsyncRead::read(sock, Vec::with_capacity(missing)).await;
        match res? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            // (UFCS: compio's buffer traits, in scope here, have methods of these names.)
            _ => BytesMut::extend_from_slice(pending, &buf),
        }
    }
    Ok(BytesMut::split_to(pending, n).freeze())
}

async fn write_loop(
    ctx: Rc<ShardCtx>,
    mut writer: FrameSink,
    mut rx: mpsc::UnboundedReceiver<Reply>,
    in_flight: Rc<Cell<usize>>,
    slot_freed: Rc<RefCell<Option<oneshot::Sender<()>>>>,
) {
    let mut next = 0u64;
    let mut pending: BTreeMap<u64, (Outcome, bool)> = BTreeMap::new();
    while let Some((seq, outcome, close)) = rx.next().await {
        pending.insert(seq, (outcome, close));
        while let Some((outcome, close)) = pending.remove(&next) {
            next += 1;
            in_flight.set(in_flight.get().saturating_sub(1));
            let freed = slot_freed.borrow_mut().take();
            if let Some(s) = freed {
                let _ = s.send(());
            }
            match outcome {
                Ok(Some(response)) => {
                    if let Err(e) = write_response(&ctx, &mut writer, response).await {
                        tracing::debug!(error = %e, "write failed; closing connection");
                        writer.shutdown();
                        return;
                    }
                }
                Ok(None) => {}
                Err((label, e)) => {
                    let (api, version) = (label.api_name(), label.api_version.unwrap_or(-1));
                    let client_id = label.client_id.as_deref().unwrap_or("-");
                    match &e {
                        CloseConnection::Encode(_) => tracing::error!(
                            api = %api, version, client_id = %client_id, reason = %e,
                            "closing connection: a response could not be encoded"
                        ),
                        _ => tracing::warn!(
                            api = %api, version, client_id = %client_id, reason = %e,
                            "closing connection after a request it could not handle"
                        ),
                    }
                    // The read half shares the socket: shut it down so the reader sees EOF.
                    writer.shutdown();
                    return;
                }
            }
            if close {
                writer.shutdown();
                return;
            }
        }
    }
}

async fn write_response(
    ctx: &ShardCtx,
    writer: &mut FrameSink,
    response: Response,
) -> std::io::Result<()> {
    for piece in response.pieces {
        match (piece, &mut *writer) {
            (Piece::Bytes(b), FrameSink::Plain(w)) => {
                let BufResult(res, _) = w.write_all(b).await;
                res?;
            }
            (Piece::File(range), FrameSink::Plain(w)) => {
                crate::net::zero_copy::send_file_range(ctx, w, &range).await?
            }
            (Piece::Bytes(b), FrameSink::Ktls(w)) => {
                let BufResult(res, _) = w.write_all(b).await;
                res?;
            }
            (Piece::File(range), FrameSink::Ktls(w)) => {
                // Spliced as on plaintext; the kernel encrypts on the way out.
                crate::net::zero_copy::send_file_range(ctx, w, &range).await?;
                let n = u64::from(range.length);
                crate::metrics::Metrics::add(&ctx.broker.metrics.fetch_ktls_bytes, n);
            }
            (Piece::Bytes(b), FrameSink::Tls(w)) => w.write_all(&b).await?,
            (Piece::File(range), FrameSink::Tls(w)) => {
                // User-space TLS encrypts what it sends: the segment bytes are read first.
                let bytes = ringmq_engine::UnifiedLog::read_range_bytes(&range)
                    .map_err(std::io::Error::other)?;
                crate::metrics::Metrics::add(
                    &ctx.broker.metrics.fetch_tls_bytes,
                    bytes.len() as u64,
                );
                w.write_all(&bytes).await?;
            }
        }
    }
    Ok(())
}
