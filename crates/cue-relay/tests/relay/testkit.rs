//! A relay on a free port, a WebSocket client that speaks cue-wire (and passes
//! room admission with the room's key), and a tiny HTTP client for the plain
//! endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use cue_relay::{MetricsSnapshot, Relay, RelayConfig, RelayError, RelayMetrics};
use cue_wire::admission::Challenge;
use cue_wire::{AdmissionKey, Frame, FrameKind, PeerId, RoomId};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound on any single wait; generous so a loaded machine never fails a test.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The admission key of room `n`: what its members hold.
pub fn key(n: u8) -> AdmissionKey {
    AdmissionKey::from_seed([n; 32])
}

/// The room id of room `n`, derived from its key as members derive it.
pub fn room(n: u8) -> RoomId {
    key(n).room_id()
}

/// A key for a room that is not `room(n)`'s: a stranger's.
pub fn stranger_key() -> AdmissionKey {
    AdmissionKey::from_seed([0xee; 32])
}

/// A relay served in-process on 127.0.0.1 with a free port.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub metrics: RelayMetrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RelayError>>,
}

impl TestRelay {
    pub async fn start(config: RelayConfig) -> TestRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = Relay::new(config).unwrap();
        let metrics = relay.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.serve(listener, async {
            let _ = stopped.await;
        }));
        TestRelay {
            addr,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    pub async fn with_defaults() -> TestRelay {
        TestRelay::start(RelayConfig::default()).await
    }

    pub fn url(&self, room: RoomId) -> String {
        format!("ws://{}/v2/rooms/{room}", self.addr)
    }

    /// Opens a WebSocket to room `n` without admission: the test plays the
    /// client's side of the exchange itself.
    pub async fn open(&self, n: u8) -> Client {
        self.open_with(n, None).await
    }

    /// Opens a WebSocket to room `n` with an optional bearer token.
    pub async fn open_with(&self, n: u8, token: Option<&str>) -> Client {
        let ws = self.try_connect(&self.url(room(n)), token).await.unwrap();
        Client {
            ws,
            room: room(n),
            peer: PeerId::ZERO,
        }
    }

    /// Opens a WebSocket to room `n` and passes admission with its key; the
    /// Welcome is the next frame.
    pub async fn connect(&self, n: u8) -> Client {
        self.connect_with(n, None).await
    }

    /// Opens an admitted WebSocket with an optional bearer token.
    pub async fn connect_with(&self, n: u8, token: Option<&str>) -> Client {
        let mut client = self.open_with(n, token).await;
        client.authenticate(&key(n)).await;
        client
    }

    /// Attempts an upgrade, returning the handshake error (with the HTTP response).
    pub async fn try_connect(
        &self,
        url: &str,
        token: Option<&str>,
    ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tungstenite::Error> {
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        let (ws, _response) = timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect timed out")?;
        Ok(ws)
    }

    /// Connects to room `n`, passes admission and reads the Welcome, so the
    /// peer is known to have joined. Returns the client (its `peer` the id the
    /// relay assigned) and the peers the Welcome listed.
    pub async fn join(&self, n: u8) -> (Client, Vec<PeerId>) {
        let mut client = self.connect(n).await;
        let present = client.welcome().await;
        (client, present)
    }

    /// Joins `count` peers to room `n` in order and drains the PeerJoined
    /// notices, so every client's next frame is whatever the test does next.
    pub async fn room_of(&self, n: u8, count: usize) -> Vec<Client> {
        let mut clients: Vec<Client> = Vec::new();
        for _ in 0..count {
            let (client, _) = self.join(n).await;
            for earlier in &mut clients {
                earlier
                    .expect_notice(FrameKind::PeerJoined, client.peer)
                    .await;
            }
            clients.push(client);
        }
        clients
    }

    /// Waits until the counters satisfy `ready`, and returns them.
    pub async fn wait_metrics(&self, ready: impl Fn(&MetricsSnapshot) -> bool) -> MetricsSnapshot {
        let wait = async {
            loop {
                let snapshot = self.metrics.snapshot();
                if ready(&snapshot) {
                    return snapshot;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        match timeout(TIMEOUT, wait).await {
            Ok(snapshot) => snapshot,
            Err(_) => panic!("metrics never got there: {:?}", self.metrics.snapshot()),
        }
    }

    /// Triggers the shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> Result<(), RelayError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(TIMEOUT, &mut self.task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
    }
}

/// A peer's WebSocket.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub room: RoomId,
    pub peer: PeerId,
}

/// What a client saw instead of the frame it expected.
#[derive(Debug)]
pub enum Event {
    Frame(Frame),
    Close(u16, String),
    End(String),
}

impl Client {
    /// Reads the relay's Challenge; notes the peer id it assigns.
    pub async fn challenge(&mut self) -> Challenge {
        let frame = self.recv().await;
        assert_eq!(frame.header.kind, FrameKind::Challenge, "{frame:?}");
        let challenge = Challenge::decode(&frame.encode()).unwrap();
        assert_eq!(challenge.room, self.room);
        assert!(!challenge.peer.is_zero());
        self.peer = challenge.peer;
        challenge
    }

    /// Answers the relay's Challenge with `key`'s proof.
    pub async fn authenticate(&mut self, key: &AdmissionKey) {
        let challenge = self.challenge().await;
        self.send(&key.sign(&challenge).to_frame(&challenge)).await;
    }

    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        timeout(TIMEOUT, self.ws.send(Message::Binary(bytes.into())))
            .await
            .expect("send timed out")
            .unwrap();
    }

    pub async fn send(&mut self, frame: &Frame) {
        self.send_bytes(frame.encode()).await;
    }

    pub async fn broadcast(&mut self, payload: &[u8]) {
        let frame = Frame::broadcast(self.room, self.peer, payload.to_vec());
        self.send(&frame).await;
    }

    pub async fn direct(&mut self, to: PeerId, payload: &[u8]) {
        let frame = Frame::direct(self.room, self.peer, to, payload.to_vec());
        self.send(&frame).await;
    }

    /// The next frame, close or end of stream, skipping pings and pongs.
    pub async fn next_event(&mut self) -> Event {
        let next = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Binary(bytes))) => {
                        return Event::Frame(Frame::decode(&bytes).expect("relay sent a bad frame"))
                    }
                    Some(Ok(Message::Close(Some(close)))) => {
                        return Event::Close(u16::from(close.code), close.reason.to_string())
                    }
                    Some(Ok(Message::Close(None))) => return Event::Close(1005, String::new()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Text(text))) => panic!("relay sent text: {text}"),
                    Some(Err(err)) => return Event::End(err.to_string()),
                    None => return Event::End("stream ended".into()),
                }
            }
        };
        timeout(TIMEOUT, next)
            .await
            .expect("nothing arrived in time")
    }

    /// The next frame; panics on anything else.
    pub async fn recv(&mut self) -> Frame {
        match self.next_event().await {
            Event::Frame(frame) => frame,
            other => panic!("{} expected a frame, got {other:?}", self.peer),
        }
    }

    /// Expects a Welcome naming this client's assigned id, and returns the
    /// peers it lists.
    pub async fn welcome(&mut self) -> Vec<PeerId> {
        let frame = self.recv().await;
        assert_eq!(frame.header.kind, FrameKind::Welcome, "{frame:?}");
        assert_eq!(frame.header.room, self.room);
        assert_eq!(
            frame.header.recipient, self.peer,
            "the Welcome names our id"
        );
        frame.welcome_peers().collect()
    }

    /// Expects a PeerJoined or PeerLeft about `about`.
    pub async fn expect_notice(&mut self, kind: FrameKind, about: PeerId) {
        let frame = self.recv().await;
        assert_eq!(
            (frame.header.kind, frame.header.sender),
            (kind, about),
            "{} got {frame:?}",
            self.peer
        );
        assert!(frame.payload.is_empty());
    }

    /// Expects a peer frame from `from` carrying `payload`.
    pub async fn expect_payload(&mut self, from: PeerId, payload: &[u8]) -> Frame {
        let frame = self.recv().await;
        assert_eq!(frame.header.sender, from, "{} got {frame:?}", self.peer);
        assert_eq!(frame.payload, payload, "{} got {frame:?}", self.peer);
        frame
    }

    /// Reads past any frames until the close frame, and returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next_event().await {
                Event::Frame(_) => {}
                Event::Close(code, reason) => return (code, reason),
                Event::End(why) => {
                    panic!("{} expected a close frame, stream ended: {why}", self.peer)
                }
            }
        }
    }

    /// The next frame, or the close frame's code and reason.
    pub async fn recv_or_close(&mut self) -> Result<Frame, (u16, String)> {
        match self.next_event().await {
            Event::Frame(frame) => Ok(frame),
            Event::Close(code, reason) => Err((code, reason)),
            Event::End(why) => panic!(
                "{} expected a frame or a close, stream ended: {why}",
                self.peer
            ),
        }
    }

    /// Reads until the stream ends (after a close handshake or a reset).
    pub async fn until_end(&mut self) {
        while !matches!(self.next_event().await, Event::End(_)) {}
    }
}

/// A plain HTTP/1.1 GET; returns the status, the headers (lowercased) and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    };
    let response = timeout(TIMEOUT, exchange)
        .await
        .expect("HTTP request timed out");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The status and body of a refused WebSocket upgrade.
pub fn refusal(err: tungstenite::Error) -> (u16, String) {
    match err {
        tungstenite::Error::Http(response) => {
            let body = response.body().clone().unwrap_or_default();
            (response.status().as_u16(), String::from_utf8(body).unwrap())
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// A peer that completes the WebSocket handshake (and, if given a key, room
/// admission) and then never writes again, not even the pongs a WebSocket
/// library sends by itself: a client that went silent. It reads raw frames, so
/// the test sees exactly what the relay sent.
pub struct SilentClient {
    stream: TcpStream,
}

impl SilentClient {
    pub async fn connect(addr: SocketAddr, n: u8, key: Option<&AdmissionKey>) -> SilentClient {
        let room = room(n);
        let handshake = async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "GET /v2/rooms/{room} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            // Read the response head byte by byte, so no frame bytes are consumed.
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(stream.read_u8().await.unwrap());
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            stream
        };
        let stream = timeout(TIMEOUT, handshake)
            .await
            .expect("handshake timed out");
        let mut client = SilentClient { stream };
        if let Some(key) = key {
            let (opcode, payload) = client.next_frame().await;
            assert_eq!(opcode, 0x2, "the challenge is a binary frame");
            let challenge = Challenge::decode(&payload).unwrap();
            let auth = key.sign(&challenge).to_frame(&challenge).encode();
            client.send_masked_binary(&auth).await;
        }
        client
    }

    /// Writes one masked binary frame (clients must mask), then nothing more.
    async fn send_masked_binary(&mut self, payload: &[u8]) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x82];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next frame's opcode and payload (frames from a server are unmasked).
    pub async fn next_frame(&mut self) -> (u8, Vec<u8>) {
        let read = async {
            let first = self.stream.read_u8().await.unwrap();
            let second = self.stream.read_u8().await.unwrap();
            assert_eq!(second & 0x80, 0, "server frames are not masked");
            let len = match second & 0x7f {
                126 => u64::from(self.stream.read_u16().await.unwrap()),
                127 => self.stream.read_u64().await.unwrap(),
                short => u64::from(short),
            };
            let mut payload = vec![0; usize::try_from(len).unwrap()];
            self.stream.read_exact(&mut payload).await.unwrap();
            (first & 0x0f, payload)
        };
        timeout(TIMEOUT, read).await.expect("no frame in time")
    }

    /// Skips data frames and pings until the close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let (opcode, payload) = self.next_frame().await;
            if opcode == 0x8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8(payload[2..].to_vec()).unwrap());
            }
        }
    }
}
