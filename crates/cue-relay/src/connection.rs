//! One WebSocket connection: room admission first, then a reader that checks
//! and routes the client's frames and a writer that drains the connection's
//! bounded outbound queue.
//!
//! Admission: the relay draws a peer id for the connection and a fresh nonce,
//! sends them in a Challenge frame, and waits for the client's first frame,
//! which must be an Auth frame proving the room's key (see
//! [`cue_wire::admission`]). Only then is the connection seated in its room
//! and sent its Welcome. Anything else (no answer before the deadline, a wrong
//! key or signature, any other frame first) closes it with a code that says
//! why (4410, 4401, 4428), counts it and reports it in the rate-limited shed
//! log, never naming a room or peer.
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
use cue_wire::admission::{self, AdmissionError, AuthProof, Challenge, NONCE_LEN};
use cue_wire::close::{self, Close};
use cue_wire::{FrameKind, Header, PeerId, RoomId, WireError};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{interval_at, sleep, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::limits::conns::ConnSlot;
use crate::limits::rate::TokenBucket;
use crate::metrics::{add, bump, drop_one};
use crate::room::{JoinError, Member, Outbox};
use crate::shed::Shed;
use crate::Shared;

/// How long a closing connection waits for its close frame to go out and for
/// the client to answer it, before dropping the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long a connection that was never admitted gets to have its close frame
/// written. It is not waited on for an answer: under a flood of strangers,
/// lingering sockets would hold the descriptors the caps just freed.
const UNADMITTED_CLOSE_GRACE: Duration = Duration::from_millis(200);

/// The close for a connection the relay cannot serve for a reason of its own
/// (the system's random source failed).
const INTERNAL: Close = Close::new(1011, "relay internal error; try again");

/// The close for an unadmitted connection closed to make room under a cap.
const BUSY: Close = Close::new(
    1013,
    "relay busy: too many connections waiting for admission; try again",
);

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
    /// A connection that was never admitted: let the close frame go out,
    /// briefly, and drop it without waiting for an answer.
    Abandon,
}

/// Serves one upgraded connection to `room` until it ends. `slot` is its
/// place under the connection caps, `_task` keeps the relay's shutdown
/// waiting for it.
pub(crate) async fn run(
    socket: WebSocket,
    room: RoomId,
    slot: ConnSlot,
    shared: Arc<Shared>,
    _task: TaskTrackerToken,
) {
    bump(&shared.metrics.connections_total);
    bump(&shared.metrics.connections_current);
    // Ids only at debug level: INFO and WARN lines never carry them.
    let span = tracing::debug_span!("conn", %room);
    serve_connection(socket, room, slot, &shared)
        .instrument(span)
        .await;
    drop_one(&shared.metrics.connections_current);
}

async fn serve_connection(socket: WebSocket, room: RoomId, slot: ConnSlot, shared: &Arc<Shared>) {
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

    let mut admitted = false;
    let after = if shared.shutdown.is_cancelled() {
        hangup.close(close::SHUTTING_DOWN);
        AfterRead::Drain
    } else {
        match admit(&mut stream, room, &slot, &queue, &hangup, shared).await {
            Err(after) => after,
            Ok(peer) => {
                admitted = true;
                let outbox = Outbox {
                    queue,
                    hangup: hangup.clone(),
                };
                match shared.rooms.join(room, peer, outbox) {
                    Ok(member) => {
                        bump(&shared.metrics.admitted);
                        info!("peer admitted and seated");
                        debug!(%peer, "joined");
                        let after = read_loop(&mut stream, &member, shared, &hangup).await;
                        shared.rooms.leave(member);
                        after
                    }
                    Err(JoinError::RoomFull) => {
                        bump(&shared.metrics.room_full_rejected);
                        hangup.close(close::room_full(shared.config.max_peers_per_room));
                        AfterRead::Drain
                    }
                    Err(JoinError::IdTaken) => {
                        hangup.close(INTERNAL);
                        AfterRead::Drain
                    }
                }
            }
        }
    };

    let grace = match after {
        AfterRead::Abandon => UNADMITTED_CLOSE_GRACE,
        _ => CLOSE_GRACE,
    };
    let finish = async {
        let _ = (&mut writer.0).await;
        match after {
            AfterRead::Drain => while let Some(Ok(_)) = stream.next().await {},
            AfterRead::Linger => std::future::pending().await,
            AfterRead::Done | AfterRead::Abandon => {}
        }
    };
    let _ = timeout(grace, finish).await;
    let ending = hangup.subscribe().0.borrow().clone();
    match ending {
        Some(Ending::Close(close)) if admitted => {
            info!(code = close.code, reason = %close.reason, "closed")
        }
        Some(Ending::Close(close)) => {
            debug!(code = close.code, reason = %close.reason, "closed before admission")
        }
        _ if admitted => info!("disconnected"),
        _ => debug!("disconnected before admission"),
    }
    drop(slot);
}

/// A fresh random peer id (never the reserved zero id) and challenge nonce.
fn draw_challenge(room: RoomId) -> Option<Challenge> {
    let mut bytes = [0u8; PeerId::LEN + NONCE_LEN];
    loop {
        if let Err(err) = getrandom::fill(&mut bytes) {
            error!(%err, "the system's random source failed; cannot challenge a client");
            return None;
        }
        let (id, nonce_bytes) = bytes.split_at(PeerId::LEN);
        let mut peer = [0u8; PeerId::LEN];
        peer.copy_from_slice(id);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(nonce_bytes);
        let peer = PeerId(peer);
        if !peer.is_zero() {
            return Some(Challenge { room, peer, nonce });
        }
    }
}

/// Runs the admission exchange: sends the Challenge and waits, until the
/// deadline counted from the TCP accept, for an Auth frame that proves the
/// room's key. Returns the assigned peer id, or what to do with the read half
/// once the connection has been told why it is closed.
async fn admit(
    stream: &mut SplitStream<WebSocket>,
    room: RoomId,
    slot: &ConnSlot,
    queue: &mpsc::Sender<Bytes>,
    hangup: &Hangup,
    shared: &Shared,
) -> Result<PeerId, AfterRead> {
    let Some(challenge) = draw_challenge(room) else {
        hangup.close(INTERNAL);
        return Err(AfterRead::Abandon);
    };
    // The queue is new and holds at least one frame: the Challenge is the
    // first thing the connection receives.
    let _ = queue.try_send(Bytes::from(challenge.to_frame().encode()));
    let deadline = slot.accepted_at + shared.config.admission_timeout;
    let mut ended = hangup.subscribe();
    let shed = |reason: Shed| shared.shed.note(&shared.metrics, reason);
    loop {
        let next = tokio::select! {
            _ = ended.ended() => return Err(AfterRead::Drain),
            () = shared.shutdown.cancelled() => {
                hangup.close(close::SHUTTING_DOWN);
                return Err(AfterRead::Drain);
            }
            () = slot.evicted.cancelled() => {
                // Counted and logged by the gate that evicted it.
                hangup.close(BUSY);
                return Err(AfterRead::Abandon);
            }
            () = sleep_until(deadline) => {
                shed(Shed::AdmissionTimeout);
                hangup.close(close::ADMISSION_TIMED_OUT);
                return Err(AfterRead::Abandon);
            }
            next = stream.next() => next,
        };
        match next {
            Some(Ok(Message::Binary(frame))) => {
                return match check_auth_frame(&frame, &challenge) {
                    Ok(()) if slot.admit() => Ok(challenge.peer),
                    Ok(()) => {
                        hangup.close(BUSY);
                        Err(AfterRead::Abandon)
                    }
                    Err(close) => {
                        debug!(code = close.code, reason = %close.reason, "admission failed");
                        shed(match close.code {
                            close::ADMISSION_REFUSED => Shed::AdmissionRefused,
                            close::OUTDATED_PROTOCOL => Shed::Outdated,
                            _ => Shed::AdmissionNotAuth,
                        });
                        hangup.close(close);
                        Err(AfterRead::Abandon)
                    }
                };
            }
            Some(Ok(Message::Text(_))) => {
                shed(Shed::AdmissionNotAuth);
                hangup.close(close::NOT_ADMITTED);
                return Err(AfterRead::Abandon);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) => {
                hangup.end(Ending::PeerGone);
                return Err(AfterRead::Drain);
            }
            Some(Err(err)) => {
                if is_too_large(err) {
                    shed(Shed::AdmissionNotAuth);
                    hangup.close(close::TOO_LARGE);
                    return Err(AfterRead::Abandon);
                }
                hangup.end(Ending::PeerGone);
                return Err(AfterRead::Done);
            }
            None => {
                hangup.end(Ending::PeerGone);
                return Err(AfterRead::Done);
            }
        }
    }
}

/// Checks the first frame a client sends on a connection that was sent
/// `challenge`: it must be an Auth frame, for the challenge's room, from the
/// peer id it assigned, whose public key derives that room and whose
/// signature verifies over the challenge. Returns the close that ends the
/// connection otherwise: 4428 for another kind of frame first, 4426 for a
/// protocol v1 frame, 4000 for bytes that are no frame, 4401 for an Auth
/// frame that proves nothing. A pure function, so it can be fuzzed and tested
/// without a socket.
pub fn check_auth_frame(frame: &[u8], challenge: &Challenge) -> Result<(), Close> {
    // The kind first: any other kind of frame is "not an Auth first" (4428),
    // whatever else is wrong with it (found by the relay_admission fuzz
    // target: a Challenge-kind frame with a long payload was called a bad
    // frame, 4000).
    match Header::decode(frame) {
        Ok(header) if header.kind != FrameKind::Auth => {
            return Err(Close::with_reason(
                close::ADMISSION_REQUIRED,
                format!(
                    "admission required: the first frame must be an Auth frame, not {}",
                    header.kind
                ),
            ))
        }
        Ok(_) => {}
        Err(WireError::UnknownVersion(1)) => return Err(close::OUTDATED),
        Err(err) => return Err(close::bad_frame(err)),
    }
    let proof = match AuthProof::decode(frame, challenge) {
        Ok(proof) => proof,
        Err(AdmissionError::Wire(err)) => return Err(close::bad_frame(err)),
        Err(err) => return Err(close::admission_refused(err)),
    };
    admission::verify(challenge, &proof).map_err(close::admission_refused)
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
    let shutdown = &shared.shutdown;
    let mut bucket = TokenBucket::new(config.rate_per_sec, config.rate_burst, Instant::now());
    let mut flooding_since: Option<Instant> = None;
    let mut last_heard = Instant::now();

    loop {
        if ended.is_ended() {
            return AfterRead::Drain;
        }
        if shutdown.is_cancelled() {
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
                () = shutdown.cancelled() => {
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
                    () = shutdown.cancelled() => {
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

/// Checks that a binary message is a frame an admitted client of `room`,
/// assigned `peer`, may send: a valid header of a peer kind (Broadcast or
/// Direct), for that room, from that peer id. Returns the header to route by,
/// or the close that ends the connection (4000 bad frame, 4001 wrong room,
/// 4002 spoofed sender). The payload is not looked at, and the size cap is the
/// WebSocket codec's (1009), so this is the whole policy for one frame after
/// admission: a pure function, so it can be fuzzed and tested without a socket.
pub fn check_client_frame(frame: &[u8], room: RoomId, peer: PeerId) -> Result<Header, Close> {
    let header = Header::decode(frame).map_err(close::bad_frame)?;
    if header.kind.is_from_relay() {
        return Err(close::bad_frame(format_args!(
            "{} frames come only from the relay",
            header.kind
        )));
    }
    if header.kind == FrameKind::Auth {
        return Err(close::bad_frame(
            "auth frames are only a connection's first frame",
        ));
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
    use cue_wire::{AdmissionKey, Frame};

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
        // An Auth frame after admission is not a frame to route.
        let key = AdmissionKey::from_seed([3; 32]);
        let challenge = Challenge {
            room: key.room_id(),
            peer: ME,
            nonce: [1; NONCE_LEN],
        };
        let auth = key.sign(&challenge).to_frame(&challenge).encode();
        let refused = check_client_frame(&auth, key.room_id(), ME).unwrap_err();
        assert_eq!(refused.code, close::BAD_FRAME);
        assert!(refused.reason.contains("first frame"), "{refused:?}");
    }

    fn challenge_of(key: &AdmissionKey) -> Challenge {
        Challenge {
            room: key.room_id(),
            peer: ME,
            nonce: [5; NONCE_LEN],
        }
    }

    #[test]
    fn an_auth_frame_with_the_rooms_key_admits() {
        let key = AdmissionKey::from_seed([3; 32]);
        let challenge = challenge_of(&key);
        let (peer, frame) = key.answer(&challenge.to_frame().encode()).unwrap();
        assert_eq!(peer, ME);
        assert_eq!(check_auth_frame(&frame.encode(), &challenge), Ok(()));
    }

    #[test]
    fn each_failed_admission_has_its_close_code() {
        let key = AdmissionKey::from_seed([3; 32]);
        let stranger = AdmissionKey::from_seed([4; 32]);
        let challenge = challenge_of(&key);
        let good = key.sign(&challenge).to_frame(&challenge);
        let mut wrong_signature = good.clone();
        wrong_signature.payload[40] ^= 1;
        let mut spoofed = good.clone();
        spoofed.header.sender = BOB;
        let mut v1 = good.encode();
        v1[0] = 1;
        let replayed = {
            let old = Challenge {
                nonce: [6; NONCE_LEN],
                ..challenge
            };
            key.sign(&old).to_frame(&challenge)
        };
        let cases = [
            (
                wrong_signature.encode(),
                close::ADMISSION_REFUSED,
                "signature",
            ),
            (
                stranger.sign(&challenge).to_frame(&challenge).encode(),
                close::ADMISSION_REFUSED,
                "does not belong to this room",
            ),
            (replayed.encode(), close::ADMISSION_REFUSED, "signature"),
            (spoofed.encode(), close::ADMISSION_REFUSED, "sender"),
            (
                Frame::broadcast(challenge.room, ME, b"hi".to_vec()).encode(),
                close::ADMISSION_REQUIRED,
                "not broadcast",
            ),
            (v1, close::OUTDATED_PROTOCOL, "upgrade"),
            (vec![2, 3, 0], close::BAD_FRAME, "shorter"),
            // Regression (relay_admission fuzz target): another kind with a
            // malformed payload is still "not an Auth first".
            (
                {
                    let mut frame = challenge.to_frame().encode();
                    frame.extend_from_slice(&[0; 69]);
                    frame
                },
                close::ADMISSION_REQUIRED,
                "not challenge",
            ),
            (
                {
                    let mut frame = good.encode();
                    frame.push(0);
                    frame
                },
                close::BAD_FRAME,
                "auth payload is 97 bytes",
            ),
        ];
        for (bytes, code, words) in cases {
            let refused = check_auth_frame(&bytes, &challenge).unwrap_err();
            assert_eq!(refused.code, code, "{refused:?}");
            assert!(refused.reason.contains(words), "{refused:?}");
            assert!(refused.reason.len() <= close::MAX_REASON_BYTES);
        }
    }
}
