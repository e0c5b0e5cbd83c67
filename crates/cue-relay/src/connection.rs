//! One WebSocket connection: a reader that checks and routes the client's
//! frames, and a writer that drains the connection's bounded outbound queue.
//!
//! The two halves run as two tasks so that a client that stops reading cannot
//! stop the relay from reading it, and the other way round. Either half, or the
//! room, ends the connection through its [`Hangup`]: the first reason wins, the
//! writer sends it as the close frame, and the reader keeps reading (and
//! discarding) until the client answers, so the close frame is not lost to a TCP
//! reset. Every wait is bounded.
//!
//! Rate limiting pauses the reader instead of dropping messages (see
//! [`crate::limits::rate`]). A client counts as flooding only while its messages
//! are already waiting each time the reader is ready for the next one; if that
//! lasts longer than the flood grace, it is closed with 4029.
//!
//! The writer pings every `ping_interval`; the reader closes a connection that
//! has sent nothing, not even a pong, for `idle_timeout`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use cue_wire::{Header, PeerId, RoomId};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{interval_at, sleep, sleep_until, timeout, Instant, MissedTickBehavior};
use tracing::{debug, info, warn, Instrument};

use crate::close::{self, Close};
use crate::limits::rate::TokenBucket;
use crate::metrics::{add, bump, drop_one};
use crate::room::{Member, Outbox, RoomFull};
use crate::Shared;

/// How long a closing connection waits for its close frame to go out and for
/// the client to answer it, before dropping the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why a connection ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Send this close frame, then finish the closing handshake.
    Close(Close),
    /// The client closed or vanished: nothing to tell it.
    PeerGone,
}

/// Tells both halves of a connection to end, and why. The first reason wins, so
/// a connection is closed once, with the cause that came first.
#[derive(Clone, Debug)]
pub(crate) struct Hangup {
    tx: Arc<watch::Sender<Option<Ending>>>,
}

impl Hangup {
    fn new() -> Hangup {
        Hangup {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// Ends the connection with a close frame; `false` if it was already ending.
    pub(crate) fn close(&self, close: Close) -> bool {
        self.end(Ending::Close(close))
    }

    fn end(&self, ending: Ending) -> bool {
        self.tx.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some(ending);
            true
        })
    }

    fn subscribe(&self) -> Ended {
        Ended(self.tx.subscribe())
    }
}

/// A half's view of its connection's [`Hangup`].
struct Ended(watch::Receiver<Option<Ending>>);

impl Ended {
    fn is_ended(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Waits for the reason the connection ends.
    async fn ended(&mut self) -> Ending {
        match self.0.wait_for(Option::is_some).await {
            Ok(ending) => ending.clone().unwrap_or(Ending::PeerGone),
            // Unreachable while the connection holds its Hangup; treat as gone.
            Err(_) => Ending::PeerGone,
        }
    }
}

/// A task that is aborted when its owner is dropped, so nothing outlives the
/// connection it belongs to.
struct OwnedTask(JoinHandle<()>);

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What is left to do with the read half once the reader has stopped.
enum AfterRead {
    /// Keep reading until the client answers the close (or vanishes).
    Drain,
    /// The codec is mid-frame and cannot be read; hold the socket briefly so the
    /// close frame reaches the client before the TCP close.
    Linger,
    /// The stream has ended.
    Done,
}

/// Serves one upgraded connection of `peer` in `room` until it ends.
pub(crate) async fn run(socket: WebSocket, room: RoomId, peer: PeerId, shared: Arc<Shared>) {
    let _task = shared.tasks.clone();
    bump(&shared.metrics.connections_total);
    bump(&shared.metrics.connections_current);
    let span = tracing::info_span!("conn", %room, %peer);
    serve_connection(socket, room, peer, &shared)
        .instrument(span)
        .await;
    drop_one(&shared.metrics.connections_current);
}

async fn serve_connection(socket: WebSocket, room: RoomId, peer: PeerId, shared: &Arc<Shared>) {
    let (sink, mut stream) = socket.split();
    let (queue, outgoing) = mpsc::channel(shared.config.outbound_queue);
    let hangup = Hangup::new();
    let mut writer = OwnedTask(tokio::spawn(
        write_loop(
            sink,
            outgoing,
            hangup.clone(),
            shared.config.ping_interval,
            Arc::clone(shared),
        )
        .in_current_span(),
    ));

    let after = if shared.shutdown.is_shutdown() {
        hangup.close(close::SHUTTING_DOWN);
        AfterRead::Drain
    } else {
        let outbox = Outbox {
            queue,
            hangup: hangup.clone(),
        };
        match shared.rooms.join(room, peer, outbox) {
            Ok(member) => {
                info!("joined");
                let after = read_loop(&mut stream, &member, shared, &hangup).await;
                shared.rooms.leave(member);
                after
            }
            Err(RoomFull) => {
                bump(&shared.metrics.room_full_rejected);
                hangup.close(close::room_full(shared.config.max_peers_per_room));
                AfterRead::Drain
            }
        }
    };

    let finish = async {
        let _ = (&mut writer.0).await;
        match after {
            AfterRead::Drain => while let Some(Ok(_)) = stream.next().await {},
            AfterRead::Linger => std::future::pending().await,
            AfterRead::Done => {}
        }
    };
    let _ = timeout(CLOSE_GRACE, finish).await;
    match hangup.subscribe().0.borrow().clone() {
        Some(Ending::Close(close)) => info!(code = close.code, reason = %close.reason, "closed"),
        _ => info!("disconnected"),
    }
}

/// Reads, checks and routes the client's frames until the connection ends.
async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    member: &Member,
    shared: &Shared,
    hangup: &Hangup,
) -> AfterRead {
    let config = &shared.config;
    let metrics = &shared.metrics;
    let mut ended = hangup.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let mut bucket = TokenBucket::new(config.rate_per_sec, config.rate_burst, Instant::now());
    let mut flooding_since: Option<Instant> = None;
    let mut last_heard = Instant::now();

    loop {
        if ended.is_ended() {
            return AfterRead::Drain;
        }
        if shutdown.is_shutdown() {
            hangup.close(close::SHUTTING_DOWN);
            return AfterRead::Drain;
        }

        let now = Instant::now();
        if let Some(wait) = bucket.wait_time(now) {
            bump(&metrics.rate_limited);
            let since = *flooding_since.get_or_insert(now);
            if now.duration_since(since) >= config.flood_grace {
                if hangup.close(close::FLOODING) {
                    bump(&metrics.rate_limit_disconnects);
                }
                warn!("over its rate for longer than the flood grace; disconnecting");
                return AfterRead::Drain;
            }
            tokio::select! {
                _ = ended.ended() => return AfterRead::Drain,
                _ = shutdown.recv() => {
                    hangup.close(close::SHUTTING_DOWN);
                    return AfterRead::Drain;
                }
                _ = sleep(wait) => continue,
            }
        }

        let next = match stream.next().now_or_never() {
            Some(next) => next,
            None => {
                // Nothing waiting: whatever the client sent, the relay has caught
                // up with it, so it is not flooding.
                flooding_since = None;
                tokio::select! {
                    _ = ended.ended() => return AfterRead::Drain,
                    _ = shutdown.recv() => {
                        hangup.close(close::SHUTTING_DOWN);
                        return AfterRead::Drain;
                    }
                    _ = sleep_until(last_heard + config.idle_timeout) => {
                        hangup.close(close::IDLE);
                        return AfterRead::Drain;
                    }
                    next = stream.next() => next,
                }
            }
        };

        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                if is_too_large(err) {
                    bump(&metrics.protocol_violations);
                    hangup.close(close::TOO_LARGE);
                    return AfterRead::Linger;
                }
                hangup.end(Ending::PeerGone);
                return AfterRead::Done;
            }
            None => {
                hangup.end(Ending::PeerGone);
                return AfterRead::Done;
            }
        };
        last_heard = Instant::now();

        match message {
            Message::Binary(frame) => {
                bucket.take(last_heard);
                match check_client_frame(&frame, member.room_id, member.peer) {
                    Ok(header) => {
                        bump(&metrics.frames_in);
                        add(&metrics.bytes_in, frame.len());
                        debug!(kind = %header.kind, len = frame.len(), "frame");
                        shared.rooms.route(member, &header, frame);
                    }
                    Err(close) => {
                        bump(&metrics.protocol_violations);
                        warn!(code = close.code, reason = %close.reason, "protocol violation");
                        hangup.close(close);
                        return AfterRead::Drain;
                    }
                }
            }
            Message::Text(_) => {
                bump(&metrics.protocol_violations);
                hangup.close(close::TEXT_FRAME);
                return AfterRead::Drain;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => {
                // The codec has queued the answer; the writer flushes it.
                hangup.end(Ending::PeerGone);
                return AfterRead::Drain;
            }
        }
    }
}

/// Checks that a binary message is a frame a client connected to `room` as
/// `peer` may send: a valid header of a peer kind (Broadcast or Direct), for
/// that room, from that peer id. Returns the header to route by, or the close
/// that ends the connection (4000 bad frame, 4001 wrong room, 4002 spoofed
/// sender). The payload is not looked at, and the size cap is the WebSocket
/// codec's (1009), so this is the whole admission policy for one frame: a
/// pure function, so it can be fuzzed and tested without a socket.
pub fn check_client_frame(frame: &[u8], room: RoomId, peer: PeerId) -> Result<Header, Close> {
    let header = Header::decode(frame).map_err(close::bad_frame)?;
    if header.kind.is_from_relay() {
        return Err(close::bad_frame(format_args!(
            "{} frames come only from the relay",
            header.kind
        )));
    }
    if header.room != room {
        return Err(close::FOREIGN_ROOM);
    }
    if header.sender != peer {
        return Err(close::SPOOFED);
    }
    Ok(header)
}

/// Whether a read failed because the client's message exceeded the frame cap.
fn is_too_large(err: axum::Error) -> bool {
    use tungstenite::error::{CapacityError, Error};
    let inner = err.into_inner();
    let too_large = matches!(
        inner.downcast_ref::<Error>(),
        Some(Error::Capacity(CapacityError::MessageTooLong { .. }))
    );
    if !too_large {
        debug!(err = %inner, "read failed");
    }
    too_large
}

/// Writes queued frames and pings until the connection ends, then sends the
/// close frame. Every write also watches the hangup, so a client that stopped
/// reading cannot hold this task forever.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut outgoing: mpsc::Receiver<Bytes>,
    hangup: Hangup,
    ping_every: Duration,
    shared: Arc<Shared>,
) {
    let metrics = &shared.metrics;
    let mut ended = hangup.subscribe();
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let ending = loop {
        let (message, frame_len) = tokio::select! {
            biased;
            ending = ended.ended() => break ending,
            frame = outgoing.recv() => match frame {
                Some(frame) => {
                    let len = frame.len();
                    (Message::Binary(frame), Some(len))
                }
                // The room let go of this connection; its reason follows.
                None => break ended.ended().await,
            },
            _ = ping.tick() => (Message::Ping(Bytes::new()), None),
        };
        tokio::select! {
            biased;
            ending = ended.ended() => break ending,
            sent = sink.send(message) => if let Err(err) = sent {
                debug!(%err, "write failed");
                hangup.end(Ending::PeerGone);
                break Ending::PeerGone;
            }
        }
        if let Some(len) = frame_len {
            bump(&metrics.frames_out);
            add(&metrics.bytes_out, len);
        }
    };

    let result = match ending {
        Ending::Close(close) => {
            let frame = CloseFrame {
                code: close.code,
                reason: close.reason.into_owned().into(),
            };
            sink.send(Message::Close(Some(frame))).await
        }
        Ending::PeerGone => sink.close().await,
    };
    if let Err(err) = result {
        debug!(%err, "closing write failed");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use cue_wire::{Frame, FrameKind};

    use super::*;

    const ROOM: RoomId = RoomId([7; 32]);
    const ME: PeerId = PeerId([1; 16]);
    const BOB: PeerId = PeerId([2; 16]);

    #[test]
    fn peer_frames_of_the_connection_are_admitted() {
        let broadcast = Frame::broadcast(ROOM, ME, b"x".to_vec());
        assert_eq!(
            check_client_frame(&broadcast.encode(), ROOM, ME),
            Ok(broadcast.header)
        );
        let direct = Frame::direct(ROOM, ME, BOB, Vec::new());
        assert_eq!(
            check_client_frame(&direct.encode(), ROOM, ME),
            Ok(direct.header)
        );
    }

    #[test]
    fn each_refusal_has_its_close_code() {
        let cases = [
            (
                Frame::broadcast(ROOM, BOB, vec![]).encode(),
                close::SPOOFED_SENDER,
            ),
            (
                Frame::broadcast(RoomId([8; 32]), ME, vec![]).encode(),
                close::WRONG_ROOM,
            ),
            (Frame::peer_joined(ROOM, ME).encode(), close::BAD_FRAME),
            (Frame::welcome(ROOM, &[]).encode(), close::BAD_FRAME),
            (vec![1, FrameKind::Broadcast.as_byte()], close::BAD_FRAME),
        ];
        for (bytes, code) in cases {
            assert_eq!(check_client_frame(&bytes, ROOM, ME).unwrap_err().code, code);
        }
    }
}
