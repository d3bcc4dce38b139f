//! One client connection on its shard.
//!
//! The reader reads frames (4-byte length + body), decodes the request header and spawns
//! a task per request, so a long-polling fetch does not hold up the produce requests
//! pipelined behind it (librdkafka uses one connection per broker for both). At most
//! [`IN_FLIGHT_MAX`] requests per connection run at once. The writer sends responses
//! strictly in request order (clients match them by order as well as correlation id),
//! holding back those that finish early. A frame that cannot be parsed, or larger than
//! `socket.request.max.bytes`, closes this connection only.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use compio::BufResult;
use compio::buf::IoBuf;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;

use crate::handlers;
use crate::protocol::{self, CloseConnection, Piece, RequestLabel, Response};
use crate::shard::ShardCtx;

/// Requests of one connection being handled at once.
pub const IN_FLIGHT_MAX: usize = 64;

type Outcome = Result<Option<Response>, (RequestLabel, CloseConnection)>;

pub async fn serve(ctx: Rc<ShardCtx>, stream: TcpStream, peer: SocketAddr, conn_id: u64) {
    let _ = stream.set_nodelay(true);
    // Non-blocking, so zero-copy fetch can splice into it from the shard thread and wait
    // on an io_uring poll when the send buffer is full; compio's io_uring reads and writes
    // arm a poll on EAGAIN and behave as before.
    if let Err(e) = socket2::SockRef::from(&stream).set_nonblocking(true) {
        tracing::debug!(%peer, error = %e, "cannot make the socket non-blocking");
    }
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::unbounded::<(u64, Outcome)>();
    let in_flight = Rc::new(Cell::new(0usize));
    let slot_freed: Rc<RefCell<Option<oneshot::Sender<()>>>> = Rc::new(RefCell::new(None));
    let writer_task = compio::runtime::spawn(write_loop(
        Rc::clone(&ctx),
        writer,
        rx,
        Rc::clone(&in_flight),
        Rc::clone(&slot_freed),
    ));
    if let Err(e) = read_loop(&ctx, reader, tx, in_flight, slot_freed, peer).await {
        match e {
            ReadError::Io(e) => {
                tracing::debug!(shard = ctx.id, conn_id, %peer, error = %e, "closing connection")
            }
            ReadError::Refused(reason) => tracing::warn!(
                shard = ctx.id, conn_id, %peer, %reason,
                "closing connection after a request it could not handle"
            ),
            ReadError::BadRequest => {}
        }
    }
    let _ = writer_task.await;
}

async fn read_loop(
    ctx: &Rc<ShardCtx>,
    mut reader: TcpStream,
    tx: mpsc::UnboundedSender<(u64, Outcome)>,
    in_flight: Rc<Cell<usize>>,
    slot_freed: Rc<RefCell<Option<oneshot::Sender<()>>>>,
    peer: SocketAddr,
) -> Result<(), ReadError> {
    let max = ctx.broker.config.socket_request_max_bytes;
    let mut seq = 0u64;
    let idle = std::time::Duration::from_millis(ctx.broker.config.connections_max_idle_ms);
    loop {
        ctx.wait_for_queue_room().await;
        // connections.max.idle.ms: a client that sends nothing for that long is gone.
        // (A request in flight cannot outlast it: fetch waits are bounded by the client's
        // fetch.max.wait.ms, far below Kafka's 10-minute default.)
        let Ok(frame) = compio::time::timeout(idle, read_frame(&mut reader, max)).await else {
            tracing::debug!(shard = ctx.id, %peer, ?idle, "closing idle connection");
            return Ok(());
        };
        let Some(frame) = frame? else {
            return Ok(());
        };
        let frame_bytes = frame.len() as u64;
        let mut label = RequestLabel::peek(&frame);
        let (header, api_key, body) = match protocol::decode_header(frame) {
            Ok(h) => h,
            Err(e) => {
                // The writer logs it (in order, after the responses before it).
                let _ = tx.unbounded_send((seq, Err((label, e))));
                return Err(ReadError::BadRequest);
            }
        };
        label.client_id = header.client_id.as_ref().map(|c| c.to_string());
        while in_flight.get() >= IN_FLIGHT_MAX {
            let (s, r) = oneshot::channel();
            *slot_freed.borrow_mut() = Some(s);
            let _ = r.await;
        }
        in_flight.set(in_flight.get() + 1);
        let (ctx, tx, s, host) = (Rc::clone(ctx), tx.clone(), seq, format!("/{}", peer.ip()));
        seq += 1;
        ctx.request_queued(frame_bytes);
        let started =
            (api_key == kafka_protocol::messages::ApiKey::Produce).then(std::time::Instant::now);
        compio::runtime::spawn(async move {
            let outcome = handlers::dispatch(&ctx, header, api_key, body, host)
                .await
                .map_err(|e| (label, e));
            if let Some(started) = started {
                ctx.broker
                    .metrics
                    .record_produce_time(started.elapsed().as_micros() as u64);
            }
            ctx.request_done(frame_bytes);
            let _ = tx.unbounded_send((s, outcome));
        })
        .detach();
    }
}

/// Why the read loop ended early.
enum ReadError {
    /// The socket failed (the client went away): DEBUG.
    Io(String),
    /// A frame the broker refuses to read (bad length): WARN.
    Refused(String),
    /// A request that could not be decoded: the writer logs it at WARN.
    BadRequest,
}

/// Reads one frame; `None` at a clean end of stream.
async fn read_frame(reader: &mut TcpStream, max: u32) -> Result<Option<Bytes>, ReadError> {
    let BufResult(res, len_buf) = reader.read_exact([0u8; 4]).await;
    match res {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ReadError::Io(e.to_string())),
    }
    let len = i32::from_be_bytes(len_buf);
    if len < 0 || len as u32 > max {
        return Err(ReadError::Refused(format!(
            "frame of {len} bytes exceeds socket.request.max.bytes {max}"
        )));
    }
    let buf = Vec::with_capacity(len as usize);
    let BufResult(res, buf) = reader.read_exact(buf.slice(..len as usize)).await;
    res.map_err(|e| ReadError::Io(format!("reading a {len}-byte frame: {e}")))?;
    Ok(Some(Bytes::from(compio::buf::IntoInner::into_inner(buf))))
}

async fn write_loop(
    ctx: Rc<ShardCtx>,
    mut writer: TcpStream,
    mut rx: mpsc::UnboundedReceiver<(u64, Outcome)>,
    in_flight: Rc<Cell<usize>>,
    slot_freed: Rc<RefCell<Option<oneshot::Sender<()>>>>,
) {
    let mut next = 0u64;
    let mut pending: BTreeMap<u64, Outcome> = BTreeMap::new();
    while let Some((seq, outcome)) = rx.next().await {
        pending.insert(seq, outcome);
        while let Some(outcome) = pending.remove(&next) {
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
                        let _ = socket2::SockRef::from(&writer).shutdown(std::net::Shutdown::Both);
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
                    let _ = socket2::SockRef::from(&writer).shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        }
    }
}

async fn write_response(
    ctx: &ShardCtx,
    writer: &mut TcpStream,
    response: Response,
) -> std::io::Result<()> {
    for piece in response.pieces {
        match piece {
            Piece::Bytes(b) => {
                let BufResult(res, _) = writer.write_all(b).await;
                res?;
            }
            Piece::File(range) => crate::zero_copy::send_file_range(ctx, writer, &range).await?,
        }
    }
    Ok(())
}
