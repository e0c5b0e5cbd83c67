//! The connection to the relay: connect, prove the workspace key (room
//! admission: the relay's Challenge, our signed Auth, its Welcome naming the
//! peer id it assigned us), pass frames both ways, and when the connection
//! drops, reconnect with exponential backoff and jitter (so a restarted relay
//! is not hit by every peer at the same instant).
//!
//! With no relay configured, the default is a relay on this machine,
//! `ws://127.0.0.1:7878`: if nothing answers there, this peer starts one
//! in-process (the embedded `cue relay`) and connects to it, so peers on one
//! machine sync with no setup at all, and whichever peer is still running
//! takes over hosting when the host stops.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::RngExt;
use tokio::sync::mpsc as tmpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::daemon::Event;
use cue_wire::{close, AdmissionKey, FrameKind, FrameRef, Header, PeerId};

/// Where the embedded relay listens when no relay is configured.
pub const DEFAULT_RELAY: &str = "ws://127.0.0.1:7878";
/// Where the embedded relay listens (the address of [`DEFAULT_RELAY`]).
const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The whole connect: TCP, the WebSocket upgrade, the challenge and the
/// Welcome. The relay's own admission deadline is 10 s from its accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the relay.
#[derive(Clone)]
pub struct RelayTarget {
    pub url: String,
    pub token: Option<String>,
    /// Host an embedded relay when `url` is the default and nobody answers.
    pub host_if_absent: bool,
}

/// Why the connection loop gave up (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the relay at {url} refused the auth token (HTTP 401): set sync.relay.auth_token in .cuedeck/config.toml (or --auth-token) to the relay's token")]
    Unauthorized { url: String },
    #[error("invalid relay URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the relay closed the connection: {reason} (code {code}); not retrying")]
    Refused { code: u16, reason: String },
    #[error("the relay at {url} does not serve /v2/rooms (HTTP {status}): it is older than this cue, which needs room admission; upgrade the relay")]
    OutdatedRelay { url: String, status: u16 },
}

/// Runs until `shutdown` is cancelled (or the engine drops either queue).
/// Frames from the relay, connection changes and fatal errors go to `events`;
/// the relay's Welcome is the first frame after each `Connected`, and names
/// the peer id this connection got.
///
/// Both queues are bounded. The engine blocks while `outgoing` is full, so
/// this task never stops taking frames from it, also while it waits for room
/// in `events`: otherwise each side would wait for the other forever.
pub async fn run(
    target: RelayTarget,
    admission: AdmissionKey,
    events: tmpsc::Sender<Event>,
    mut outgoing: tmpsc::Receiver<Vec<u8>>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut hosted = false;
    let url = format!(
        "{}/v2/rooms/{}",
        target.url.trim_end_matches('/'),
        admission.room_id()
    );
    loop {
        let attempt = tokio::select! {
            attempt = connect(&url, target.token.as_deref(), &admission) => attempt,
            () = shutdown.cancelled() => return,
            () = drop_frames(&mut outgoing) => return,
        };
        match attempt {
            Ok(Admitted { ws, me, welcome }) => {
                backoff = BACKOFF_MIN;
                // Frames queued for an earlier connection address peers that are gone.
                while outgoing.try_recv().is_ok() {}
                if !deliver(&events, Event::Connected, &mut outgoing).await
                    || !deliver(&events, Event::Frame(welcome), &mut outgoing).await
                {
                    return;
                }
                let ended = pump(ws, me, &events, &mut outgoing, &shutdown).await;
                if !deliver(&events, Event::Disconnected, &mut outgoing).await {
                    return;
                }
                match ended {
                    Ended::Shutdown => return,
                    Ended::Dropped(why) => info!("relay connection lost: {why}; reconnecting"),
                    Ended::Fatal(e) => {
                        deliver(&events, Event::Fatal(e.to_string()), &mut outgoing).await;
                        return;
                    }
                }
            }
            Err(ConnectError::Fatal(e)) => {
                deliver(&events, Event::Fatal(e.to_string()), &mut outgoing).await;
                return;
            }
            Err(ConnectError::Retry(why)) => {
                if target.host_if_absent && !hosted && target.url == DEFAULT_RELAY {
                    hosted = host_embedded_relay().await;
                    if hosted {
                        continue;
                    }
                }
                debug!("cannot reach the relay at {}: {why}", target.url);
                if !deliver(&events, Event::Unreachable(why), &mut outgoing).await {
                    return;
                }
            }
        }
        let jitter = rand::rng().random_range(0.5..1.5);
        let wait = backoff.mul_f64(jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
            () = drop_frames(&mut outgoing) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Drops the frames the engine sends while no connection is up (they would
/// go nowhere); returns once the engine has dropped its sender.
async fn drop_frames(outgoing: &mut tmpsc::Receiver<Vec<u8>>) {
    while outgoing.recv().await.is_some() {}
}

/// Hands `event` to the engine, waiting while its queue is full and dropping
/// frames meanwhile (only called while no connection is up). False once the
/// engine has stopped.
async fn deliver(
    events: &tmpsc::Sender<Event>,
    event: Event,
    outgoing: &mut tmpsc::Receiver<Vec<u8>>,
) -> bool {
    tokio::select! {
        permit = events.reserve() => match permit {
            Ok(permit) => {
                permit.send(event);
                true
            }
            Err(_) => false,
        },
        () = drop_frames(outgoing) => false,
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum ConnectError {
    Retry(String),
    Fatal(NetError),
}

/// A connection the relay admitted: the peer id it assigned, and its Welcome.
struct Admitted {
    ws: Ws,
    me: PeerId,
    welcome: Vec<u8>,
}

async fn connect(
    url: &str,
    token: Option<&str>,
    admission: &AdmissionKey,
) -> Result<Admitted, ConnectError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_admitted(url, token, admission)).await {
        Err(_) => Err(ConnectError::Retry("timed out".into())),
        Ok(result) => result,
    }
}

async fn connect_admitted(
    url: &str,
    token: Option<&str>,
    admission: &AdmissionKey,
) -> Result<Admitted, ConnectError> {
    let mut ws = upgrade(url, token).await?;
    // 1. The relay's Challenge: the peer id it assigns us, a nonce to sign.
    let challenge = match next_binary(&mut ws).await? {
        Some(bytes) => bytes,
        None => return Err(ConnectError::Retry("closed before the challenge".into())),
    };
    let (me, auth) = admission.answer(&challenge).map_err(|e| {
        ConnectError::Retry(format!(
            "the relay's first frame is not a challenge for this workspace's room: {e}"
        ))
    })?;
    // 2. Our Auth: the admission public key and a signature over the challenge.
    ws.send(Message::binary(auth.encode()))
        .await
        .map_err(|e| ConnectError::Retry(e.to_string()))?;
    // 3. The Welcome, once the relay has checked it and seated us.
    let welcome = match next_binary(&mut ws).await? {
        Some(bytes) => bytes,
        None => return Err(ConnectError::Retry("closed before the welcome".into())),
    };
    match FrameRef::decode(&welcome) {
        Ok(frame) if frame.header.kind == FrameKind::Welcome && frame.header.recipient == me => {
            Ok(Admitted { ws, me, welcome })
        }
        Ok(frame) => Err(ConnectError::Retry(format!(
            "the relay answered the admission with a {} frame, not our welcome",
            frame.header.kind
        ))),
        Err(e) => Err(ConnectError::Retry(format!(
            "the relay answered the admission with a bad frame: {e}"
        ))),
    }
}

/// The next binary message during the admission; `None` if the stream ended.
/// A close frame from the relay is turned into the error it stands for.
async fn next_binary(ws: &mut Ws) -> Result<Option<Vec<u8>>, ConnectError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => return Ok(Some(bytes.to_vec())),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(match closed(code, reason) {
                    Ended::Fatal(e) => ConnectError::Fatal(e),
                    Ended::Dropped(why) => ConnectError::Retry(why),
                    Ended::Shutdown => ConnectError::Retry("closed".into()),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ConnectError::Retry(e.to_string())),
            None => return Ok(None),
        }
    }
}

/// TCP connect and the WebSocket upgrade of `/v2/rooms/<room>`.
async fn upgrade(url: &str, token: Option<&str>) -> Result<Ws, ConnectError> {
    let base = || url.split("/v2/").next().unwrap_or(url).to_string();
    let mut request = url.into_client_request().map_err(|e| {
        ConnectError::Fatal(NetError::BadUrl {
            url: url.into(),
            reason: e.to_string(),
        })
    })?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ConnectError::Fatal(NetError::BadUrl {
                url: url.into(),
                reason: "the auth token has characters an HTTP header cannot carry".into(),
            })
        })?;
        request.headers_mut().insert("authorization", value);
    }
    let mut config = tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(cue_wire::MAX_ENCODED_FRAME_BYTES);
    config.max_frame_size = Some(cue_wire::MAX_ENCODED_FRAME_BYTES);
    match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) if resp.status() == 401 => {
            Err(ConnectError::Fatal(NetError::Unauthorized { url: base() }))
        }
        Err(tungstenite::Error::Http(resp)) if resp.status() == 404 => {
            Err(ConnectError::Fatal(NetError::OutdatedRelay {
                url: base(),
                status: 404,
            }))
        }
        Err(tungstenite::Error::Url(e)) => Err(ConnectError::Fatal(NetError::BadUrl {
            url: url.into(),
            reason: e.to_string(),
        })),
        Err(e) => Err(ConnectError::Retry(e.to_string())),
    }
}

enum Ended {
    Shutdown,
    Dropped(String),
    Fatal(NetError),
}

/// Whether a frame the engine built is from this connection's peer id. A
/// frame sealed before the Welcome of this connection carries the id of the
/// previous one: the relay would close us for it (4002), so it is dropped
/// (the engine resyncs with every peer after a Welcome anyway).
fn sent_as(bytes: &[u8], me: PeerId) -> bool {
    Header::decode(bytes).is_ok_and(|h| h.sender == me)
}

async fn pump(
    ws: Ws,
    me: PeerId,
    events: &tmpsc::Sender<Event>,
    outgoing: &mut tmpsc::Receiver<Vec<u8>>,
    shutdown: &CancellationToken,
) -> Ended {
    let (mut sink, mut stream) = ws.split();
    // A frame from the relay that waits for room in the engine's queue. Until
    // it is handed over nothing more is read, so a busy engine slows the relay
    // down (through TCP) instead of filling memory; frames keep leaving.
    let mut inbound: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                return Ended::Shutdown;
            }
            frame = outgoing.recv() => match frame {
                Some(bytes) if !sent_as(&bytes, me) => {
                    debug!("dropped a frame sealed for an earlier connection");
                }
                Some(bytes) => {
                    if let Err(e) = sink.send(Message::binary(bytes)).await {
                        return Ended::Dropped(e.to_string());
                    }
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    return Ended::Shutdown;
                }
            },
            permit = events.reserve(), if inbound.is_some() => match (permit, inbound.take()) {
                (Ok(permit), Some(bytes)) => permit.send(Event::Frame(bytes)),
                (Ok(_), None) => {}
                (Err(_), _) => return Ended::Shutdown,
            },
            msg = stream.next(), if inbound.is_none() => match msg {
                Some(Ok(Message::Binary(bytes))) => inbound = Some(bytes.to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return closed(code, reason);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ended::Dropped(e.to_string()),
                None => return Ended::Dropped("connection closed".into()),
            },
        }
    }
}

/// Close codes the relay sends (see `cue_wire::close`): some say that
/// retrying is pointless, the rest are retried.
fn closed(code: u16, reason: String) -> Ended {
    match code {
        // A frame the relay calls malformed, misaddressed or spoofed, an
        // admission it refused (this key is not the room's) or a protocol it
        // no longer speaks: a bug or an incompatible build, which
        // reconnecting would only repeat. The rest (room full, rate, slow
        // consumer, idle, admission timeout, busy, restart) are retried.
        close::BAD_FRAME
        | close::WRONG_ROOM
        | close::SPOOFED_SENDER
        | close::UNSUPPORTED_DATA
        | close::ADMISSION_REFUSED
        | close::ADMISSION_REQUIRED
        | close::OUTDATED_PROTOCOL => Ended::Fatal(NetError::Refused { code, reason }),
        _ => {
            warn!("relay closed the connection: {reason} (code {code})");
            Ended::Dropped(format!("closed by the relay: {reason} (code {code})"))
        }
    }
}

/// Starts the embedded relay on the default address; false if the port is
/// taken (another peer hosts it, or something else listens there).
async fn host_embedded_relay() -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 7878));
    let listener = match cue_relay::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            debug!("not hosting a relay on {DEFAULT_LISTEN}: {e}");
            return false;
        }
    };
    info!("no relay configured and none running here: hosting one on ws://{DEFAULT_LISTEN}");
    tokio::spawn(async move {
        let config = cue_relay::RelayConfig::default();
        if let Err(e) = cue_relay::serve(listener, config, std::future::pending()).await {
            warn!("embedded relay stopped: {e}");
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use cue_wire::{Frame, RoomId};

    /// The engine blocks on a full outgoing queue while it handles an event,
    /// so the connection must keep sending while the event queue is full:
    /// here nobody reads the events until every frame has left.
    #[test]
    fn frames_keep_leaving_while_the_engine_is_behind() {
        const FRAMES: usize = 20;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let me = PeerId([7; 16]);
            let room = RoomId([1; 32]);
            // The relay's side: sends FRAMES frames, then reads FRAMES.
            let relay = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.expect("accept");
                let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
                for i in 0..FRAMES {
                    let frame = Frame::broadcast(room, PeerId([9; 16]), vec![i as u8]);
                    ws.send(Message::binary(frame.encode()))
                        .await
                        .expect("send");
                }
                let mut got = 0;
                while got < FRAMES {
                    match ws.next().await {
                        Some(Ok(Message::Binary(_))) => got += 1,
                        Some(Ok(_)) => {}
                        other => panic!("relay side ended after {got} frames: {other:?}"),
                    }
                }
                ws
            });
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}"))
                .await
                .expect("connect");
            let (events_tx, mut events_rx) = tmpsc::channel(1);
            let (out_tx, mut out_rx) = tmpsc::channel(1);
            let shutdown = CancellationToken::new();
            let pumping = {
                let shutdown = shutdown.clone();
                tokio::spawn(async move { pump(ws, me, &events_tx, &mut out_rx, &shutdown).await })
            };
            let all_sent = async {
                for i in 0..FRAMES {
                    let frame = Frame::broadcast(room, me, vec![i as u8]);
                    out_tx.send(frame.encode()).await.expect("queue a frame");
                }
                relay.await.expect("relay side")
            };
            let _relay_ws = tokio::time::timeout(Duration::from_secs(10), all_sent)
                .await
                .expect("every frame left while the event queue was full");
            let mut received = 0;
            while received < FRAMES {
                match events_rx.recv().await {
                    Some(Event::Frame(_)) => received += 1,
                    Some(other) => panic!("unexpected event {other:?}"),
                    None => panic!("the pump ended after {received} frames"),
                }
            }
            shutdown.cancel();
            let ended = pumping.await.expect("pump");
            assert!(matches!(ended, Ended::Shutdown));
        });
    }
}
