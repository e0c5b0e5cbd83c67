//! What is refused before the upgrade (401, 400) and at join (room full).

use cue_relay::RelayConfig;
use cue_wire::FrameKind;

use crate::testkit::{peer, refusal, room, TestRelay};

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_with_401() {
    let relay = TestRelay::start(RelayConfig {
        auth_token: Some("s3cret".into()),
        ..RelayConfig::default()
    })
    .await;
    let url = relay.url(room(1), peer(1));

    for token in [None, Some("wrong"), Some("s3cre")] {
        let err = relay.try_connect(&url, token).await.err().unwrap();
        let (status, body) = refusal(err);
        assert_eq!(status, 401, "token {token:?}");
        assert!(body.contains("Authorization: Bearer <token>"), "{body}");
    }
    assert_eq!(relay.metrics.snapshot().auth_rejected, 3);

    let mut client = relay.connect_with(room(1), peer(1), Some("s3cret")).await;
    assert!(client.welcome().await.is_empty());
    assert_eq!(relay.metrics.snapshot().auth_rejected, 3);
}

#[tokio::test]
async fn malformed_ids_are_refused_with_400_and_a_reason() {
    let relay = TestRelay::with_defaults().await;
    let base = format!("ws://{}/v1/rooms", relay.addr);
    let good_room = room(1);
    let good_peer = peer(1);
    let cases = [
        (format!("{base}/not-hex?peer={good_peer}"), "bad room id"),
        (
            format!("{base}/abcd?peer={good_peer}"),
            "expected 64 hex characters, got 4",
        ),
        (format!("{base}/{good_room}"), "missing peer id"),
        (format!("{base}/{good_room}?peer=zz"), "bad peer id"),
        (
            format!("{base}/{good_room}?peer={}", "0".repeat(32)),
            "reserved",
        ),
    ];
    for (url, expected) in cases {
        let err = relay.try_connect(&url, None).await.err().unwrap();
        let (status, body) = refusal(err);
        assert_eq!(status, 400, "{url}");
        assert!(body.contains(expected), "{url}: {body}");
    }
    assert_eq!(relay.metrics.snapshot().connections_total, 0);
}

#[tokio::test]
async fn the_peer_past_the_room_limit_is_closed_with_4003() {
    let relay = TestRelay::start(RelayConfig {
        max_peers_per_room: 2,
        ..RelayConfig::default()
    })
    .await;
    let mut peers = relay.room_of(room(1), 2).await;

    let mut third = relay.connect(room(1), peer(3)).await;
    assert_eq!(
        third.expect_close().await,
        (4003, "room full (2 peers)".into())
    );
    assert_eq!(relay.metrics.snapshot().room_full_rejected, 1);

    // A full room is about who is there now: once a peer leaves, there is room.
    let mut first = peers.remove(0);
    first.ws.close(None).await.unwrap();
    peers[0].expect_notice(FrameKind::PeerLeft, peer(1)).await;
    let (_third, present) = relay.join(room(1), peer(3)).await;
    assert_eq!(present, vec![peer(2)]);
    peers[0].expect_notice(FrameKind::PeerJoined, peer(3)).await;
}
