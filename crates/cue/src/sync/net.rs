//! The connection to the relay: connect, pass frames both ways, and when the
//! connection drops, reconnect with exponential backoff and jitter (so a
//! restarted relay is not hit by every peer at the same instant).
//!
//! With no relay configured, the default is a relay on this machine,
//! `ws://127.0.0.1:7878`: if nothing answers there, this peer starts one
//! in-process (the embedded `cue relay`) and connects to it, so peers on one
//! machine sync with no setup at all, and whichever peer is still running
//! takes over hosting when the host stops.

use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::RngExt;
use tokio::sync::mpsc as tmpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

use super::daemon::Event;
use cue_relay::close;
use cue_wire::{PeerId, RoomId};

/// Where the embedded relay listens when no relay is configured.
pub const DEFAULT_RELAY: &str = "ws://127.0.0.1:7878";
const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

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
}

/// Runs until `outgoing` closes (shutdown). Frames from the relay, connection
/// changes and fatal errors go to `events`.
pub async fn run(
    target: RelayTarget,
    room: RoomId,
    me: PeerId,
    events: mpsc::Sender<Event>,
    mut outgoing: tmpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut hosted = false;
    loop {
        let url = format!(
            "{}/v1/rooms/{room}?peer={me}",
            target.url.trim_end_matches('/')
        );
        match connect(&url, target.token.as_deref()).await {
            Ok(ws) => {
                backoff = BACKOFF_MIN;
                // Frames queued for an earlier connection address peers that are gone.
                while outgoing.try_recv().is_ok() {}
                if events.send(Event::Connected).is_err() {
                    return;
                }
                let ended = pump(ws, &events, &mut outgoing).await;
                let _ = events.send(Event::Disconnected);
                match ended {
                    Ended::Shutdown => return,
                    Ended::Dropped(why) => info!("relay connection lost: {why}; reconnecting"),
                    Ended::Fatal(e) => {
                        let _ = events.send(Event::Fatal(e.to_string()));
                        return;
                    }
                }
            }
            Err(ConnectError::Fatal(e)) => {
                let _ = events.send(Event::Fatal(e.to_string()));
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
                let _ = events.send(Event::Unreachable(why));
            }
        }
        let jitter = rand::rng().random_range(0.5..1.5);
        let wait = backoff.mul_f64(jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            closed = wait_closed(&mut outgoing) => if closed { return },
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Drains frames that would go nowhere while disconnected; true once shut down.
async fn wait_closed(outgoing: &mut tmpsc::UnboundedReceiver<Vec<u8>>) -> bool {
    while outgoing.recv().await.is_some() {}
    true
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum ConnectError {
    Retry(String),
    Fatal(NetError),
}

async fn connect(url: &str, token: Option<&str>) -> Result<Ws, ConnectError> {
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
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Err(_) => Err(ConnectError::Retry("timed out".into())),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) if resp.status() == 401 => {
            Err(ConnectError::Fatal(NetError::Unauthorized {
                url: url.split("/v1/").next().unwrap_or(url).to_string(),
            }))
        }
        Ok(Err(tungstenite::Error::Url(e))) => Err(ConnectError::Fatal(NetError::BadUrl {
            url: url.into(),
            reason: e.to_string(),
        })),
        Ok(Err(e)) => Err(ConnectError::Retry(e.to_string())),
    }
}

enum Ended {
    Shutdown,
    Dropped(String),
    Fatal(NetError),
}

async fn pump(
    ws: Ws,
    events: &mpsc::Sender<Event>,
    outgoing: &mut tmpsc::UnboundedReceiver<Vec<u8>>,
) -> Ended {
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            frame = outgoing.recv() => match frame {
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
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    if events.send(Event::Frame(bytes.to_vec())).is_err() {
                        return Ended::Shutdown;
                    }
                }
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

/// Close codes the relay sends (see cue-relay's `close` module): some say that
/// retrying is pointless, the rest are retried.
fn closed(code: u16, reason: String) -> Ended {
    match code {
        // A frame the relay calls malformed, misaddressed or spoofed: a bug or
        // an incompatible build, which reconnecting would only repeat. The
        // rest (room full, rate, slow consumer, idle, restart) are retried.
        close::BAD_FRAME | close::WRONG_ROOM | close::SPOOFED_SENDER | close::UNSUPPORTED_DATA => {
            Ended::Fatal(NetError::Refused { code, reason })
        }
        _ => {
            warn!("relay closed the connection: {reason} (code {code})");
            Ended::Dropped(format!("closed by the relay: {reason} (code {code})"))
        }
    }
}

/// Starts the embedded relay on the default address; false if the port is
/// taken (another peer hosts it, or something else listens there).
async fn host_embedded_relay() -> bool {
    let listener = match tokio::net::TcpListener::bind(DEFAULT_LISTEN).await {
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
