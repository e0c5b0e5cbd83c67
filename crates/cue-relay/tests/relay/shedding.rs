//! Sockets that never become peers: slowloris requests, floods from one
//! address, and what the relay logs about them (counts, never ids).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cue_relay::RelayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::testkit::{room, TestRelay, TIMEOUT};

/// Log lines written while it is alive (on this thread: the tests run the
/// relay on the test's current-thread runtime).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A TCP connection from loopback address `from` (127.0.0.x: every one of
/// them reaches the relay on 127.0.0.1, as a different client address).
async fn tcp_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Half a request head: what a slowloris sends, and then nothing.
async fn slowloris(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let mut tcp = tcp_from(from, to).await;
    let half = format!(
        "GET /v2/rooms/{} HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\n",
        room(1)
    );
    tcp.write_all(half.as_bytes()).await.unwrap();
    tcp
}

/// Reads until the relay closes the socket (EOF or reset); returns what it sent.
async fn until_closed(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    timeout(TIMEOUT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the relay never closed the socket");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn slowloris_sockets_are_closed_after_the_header_deadline() {
    let relay = TestRelay::start(RelayConfig {
        header_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    })
    .await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(slowloris([127, 0, 0, 1], relay.addr).await);
    }
    // A socket that connects and never sends a byte.
    sockets.push(tcp_from([127, 0, 0, 1], relay.addr).await);
    relay.wait_metrics(|m| m.unadmitted == 6).await;
    for tcp in &mut sockets {
        until_closed(tcp).await;
    }
    let m = relay
        .wait_metrics(|m| m.header_timeouts == 6 && m.unadmitted == 0)
        .await;
    assert_eq!(m.connections_total, 0, "none reached the WebSocket stage");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_not_counted_as_shed() {
    let relay = TestRelay::start(RelayConfig {
        header_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    })
    .await;
    let mut tcp = tcp_from([127, 0, 0, 1], relay.addr).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let m = relay.wait_metrics(|m| m.unadmitted == 0).await;
    assert_eq!(m.header_timeouts, 0);
}

#[tokio::test]
async fn a_member_gets_in_while_a_slowloris_fills_the_unadmitted_caps() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let relay = TestRelay::start(RelayConfig {
        // Long enough that the deadline never frees a slot during the test:
        // only the caps make room.
        header_timeout: Duration::from_secs(60),
        admission_timeout: Duration::from_secs(60),
        max_unadmitted_per_ip: 8,
        max_unadmitted: 20,
        ..RelayConfig::default()
    })
    .await;
    // 40 half-open requests: 20 from the member's own address, 20 from four
    // others. Far more than either cap holds.
    let mut sockets = Vec::new();
    for i in 0..40u8 {
        let from = if i % 2 == 0 { 1 } else { 2 + i % 4 };
        sockets.push(slowloris([127, 0, 0, from], relay.addr).await);
        let m = relay.metrics.snapshot();
        assert!(m.unadmitted <= 20, "{m:?}");
    }
    relay
        .wait_metrics(|m| m.unadmitted == 20 && m.unadmitted_evicted == 20)
        .await;

    // The member connects from the busiest address and is admitted: its
    // connection pushed out the oldest half-open one.
    let (mut member, _) = relay.join(1).await;
    let (mut other, _) = relay.join(1).await;
    member
        .expect_notice(cue_wire::FrameKind::PeerJoined, other.peer)
        .await;
    other.broadcast(b"synced").await;
    member.expect_payload(other.peer, b"synced").await;
    let m = relay.metrics.snapshot();
    assert_eq!(m.admitted, 2);
    assert!(m.unadmitted <= 20, "{m:?}");

    // The evicted sockets were closed, not left hanging.
    let mut closed = 0;
    for tcp in &mut sockets {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(20), tcp.read(&mut byte)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 20,
        "only {closed} of the evicted sockets were closed"
    );

    // Said in the log, without ids.
    let text = logs.text();
    assert!(text.contains("shedding load"), "{text}");
    assert!(text.contains("unadmitted"), "{text}");
    assert!(!text.contains(&room(1).to_string()), "{text}");
}

#[tokio::test]
async fn an_address_at_its_cap_is_refused_with_a_log_line_and_a_metric() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let relay = TestRelay::start(RelayConfig {
        max_conns_per_ip: 2,
        ..RelayConfig::default()
    })
    .await;
    // Two members from 127.0.0.1 fill its cap.
    let peers = relay.room_of(1, 2).await;

    let mut third = tcp_from([127, 0, 0, 1], relay.addr).await;
    let answer = until_closed(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer:?}");
    assert!(answer.contains("--max-conns-per-ip"), "{answer:?}");
    relay.wait_metrics(|m| m.per_ip_refused == 1).await;

    // Another address is not affected.
    let mut elsewhere = tcp_from([127, 0, 0, 9], relay.addr).await;
    elsewhere
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(until_closed(&mut elsewhere)
        .await
        .starts_with("HTTP/1.1 200"));

    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("shedding load"))
        .unwrap_or_else(|| panic!("no shed line in {text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("per_ip_cap"), "{line}");
    assert!(line.contains("count=1"), "{line}");
    assert!(!line.contains("127.0.0.1"), "{line}");
    drop(peers);
}

#[tokio::test]
async fn info_and_warn_lines_never_name_a_room_or_a_peer() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let relay = TestRelay::start(RelayConfig {
        admission_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    })
    .await;
    let mut peers = relay.room_of(1, 2).await;
    let ids: Vec<String> = peers.iter().map(|p| p.peer.to_string()).collect();
    peers[0].broadcast(b"x").await;
    peers[1].recv().await;
    // A stranger that fails admission, and one that never answers.
    let mut stranger = relay.open(1).await;
    let challenge = stranger.challenge().await;
    let proof = crate::testkit::stranger_key().sign(&challenge);
    stranger.send(&proof.to_frame(&challenge)).await;
    stranger.expect_close().await;
    let mut silent = relay.open(1).await;
    silent.challenge().await;
    silent.expect_close().await;
    for peer in &mut peers {
        peer.ws.close(None).await.unwrap();
    }
    relay.wait_metrics(|m| m.connections_current == 0).await;

    let text = logs.text();
    assert!(text.contains("admitted"), "{text}");
    assert!(text.contains("admission_refused"), "{text}");
    assert!(text.contains("admission_timeout"), "{text}");
    assert!(!text.contains(&room(1).to_string()), "{text}");
    for id in ids.iter().chain([&challenge.peer.to_string()]) {
        assert!(!text.contains(id.as_str()), "{id} in {text}");
    }
}
