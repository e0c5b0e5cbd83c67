//! Health, metrics and graceful shutdown.

use cue_wire::FrameKind;

use cue_wire::PeerId;

use crate::testkit::{http_get, TestRelay};

#[tokio::test]
async fn healthz_answers_ok() {
    let relay = TestRelay::with_defaults().await;
    let (status, _, body) = http_get(relay.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    let (status, _, body) = http_get(relay.addr, "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("/v2/rooms/<room id hex>"), "{body}");
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format() {
    let relay = TestRelay::with_defaults().await;
    let mut peers = relay.room_of(1, 2).await;
    let first = peers[0].peer;
    peers[0].broadcast(&[1; 100]).await;
    peers[1].expect_payload(first, &[1; 100]).await;
    peers[0].direct(PeerId([3; 16]), b"to nobody").await;
    relay.wait_metrics(|m| m.direct_dropped == 1).await;

    let (status, head, body) = http_get(relay.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for line in [
        "cue_relay_connections 2",
        "cue_relay_connections_total 2",
        "cue_relay_rooms 1",
        "cue_relay_frames_in_total 2",
        "cue_relay_bytes_in_total 241",
        "cue_relay_direct_dropped_total 1",
        "cue_relay_slow_consumer_disconnects_total 0",
        "cue_relay_rate_limited_total 0",
        "cue_relay_auth_rejected_total 0",
        "cue_relay_admitted_total 2",
        "cue_relay_unadmitted 1",
        "cue_relay_admission_refused_total 0",
        "cue_relay_header_timeouts_total 0",
        "cue_relay_per_ip_refused_total 0",
        "# TYPE cue_relay_frames_out_total counter",
        "# TYPE cue_relay_bytes_out_total counter",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    // Writes are counted once they complete: two Challenges, two Welcomes,
    // one PeerJoined, one broadcast.
    relay.wait_metrics(|m| m.frames_out == 6).await;
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_and_stops_listening() {
    let relay = TestRelay::with_defaults().await;
    let addr = relay.addr;
    let mut peers = relay.room_of(1, 2).await;
    let mut other = relay.room_of(2, 1).await;
    let metrics = relay.metrics.clone();

    let stopped = tokio::spawn(relay.shutdown());
    for client in peers.iter_mut().chain(other.iter_mut()) {
        loop {
            match client.recv_or_close().await {
                // A peer may see the other leave before its own close.
                Ok(frame) => assert_eq!(frame.header.kind, FrameKind::PeerLeft),
                Err(close) => {
                    assert_eq!(close, (1001, "relay shutting down".into()));
                    // Reading on lets the client answer the close, as real clients do.
                    client.until_end().await;
                    break;
                }
            }
        }
    }
    stopped.await.unwrap().unwrap();
    assert_eq!(metrics.snapshot().connections_current, 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
