//! Fan-out, direct delivery, and the membership notices.

use cue_wire::FrameKind;

use crate::testkit::{peer, room, TestRelay};

#[tokio::test]
async fn broadcast_reaches_every_other_peer_but_not_the_sender() {
    let relay = TestRelay::with_defaults().await;
    let mut peers = relay.room_of(room(1), 4).await;
    let mut elsewhere = relay.room_of(room(2), 2).await;

    peers[0].broadcast(b"hello room").await;
    for other in &mut peers[1..] {
        let frame = other.expect_payload(peer(1), b"hello room").await;
        assert_eq!(frame.header.kind, FrameKind::Broadcast);
        assert_eq!(frame.header.room, room(1));
    }

    // Had the relay echoed the broadcast to its sender, the echo would have been
    // queued before this later frame.
    peers[1].direct(peer(1), b"after").await;
    peers[0].expect_payload(peer(2), b"after").await;

    // Another room saw nothing: its next frame is its own traffic.
    elsewhere[1].broadcast(b"other room").await;
    elsewhere[0].expect_payload(peer(2), b"other room").await;

    let metrics = relay.metrics.snapshot();
    assert_eq!(metrics.frames_in, 3);
    assert_eq!(metrics.rooms, 2);
}

#[tokio::test]
async fn direct_reaches_only_its_recipient() {
    let relay = TestRelay::with_defaults().await;
    let mut peers = relay.room_of(room(1), 3).await;

    peers[0].direct(peer(2), b"for two").await;
    let frame = peers[1].expect_payload(peer(1), b"for two").await;
    assert_eq!(frame.header.kind, FrameKind::Direct);
    assert_eq!(frame.header.recipient, peer(2));

    // The relay handles one connection's frames in order: had peer 3 been sent
    // the direct frame, it would come before this broadcast.
    peers[0].broadcast(b"marker").await;
    peers[2].expect_payload(peer(1), b"marker").await;
    peers[1].expect_payload(peer(1), b"marker").await;

    // A recipient that is not in the room: dropped and counted.
    peers[0].direct(peer(9), b"nobody").await;
    relay.wait_metrics(|m| m.direct_dropped == 1).await;
    peers[0].broadcast(b"still fine").await;
    peers[2].expect_payload(peer(1), b"still fine").await;
}

#[tokio::test]
async fn welcome_lists_present_peers_and_notices_follow_joins_and_leaves() {
    let relay = TestRelay::with_defaults().await;

    let (mut a, present) = relay.join(room(1), peer(1)).await;
    assert!(present.is_empty());

    let (mut b, present) = relay.join(room(1), peer(2)).await;
    assert_eq!(present, vec![peer(1)]);
    a.expect_notice(FrameKind::PeerJoined, peer(2)).await;

    let (mut c, mut present) = relay.join(room(1), peer(3)).await;
    present.sort();
    assert_eq!(present, vec![peer(1), peer(2)]);
    a.expect_notice(FrameKind::PeerJoined, peer(3)).await;
    b.expect_notice(FrameKind::PeerJoined, peer(3)).await;
    assert_eq!(relay.metrics.snapshot().rooms, 1);

    b.ws.close(None).await.unwrap();
    a.expect_notice(FrameKind::PeerLeft, peer(2)).await;
    c.expect_notice(FrameKind::PeerLeft, peer(2)).await;

    // The room disappears with its last peer.
    drop(a);
    drop(c);
    relay
        .wait_metrics(|m| m.rooms == 0 && m.connections_current == 0)
        .await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_peer_id_replaces_the_first() {
    let relay = TestRelay::with_defaults().await;
    let mut peers = relay.room_of(room(1), 2).await;

    let (mut again, present) = relay.join(room(1), peer(1)).await;
    assert_eq!(present, vec![peer(2)]);
    assert_eq!(
        peers[0].expect_close().await,
        (
            4009,
            "replaced by a newer connection with the same peer id".into()
        )
    );
    // The others learn the peer (re)joined, so they resync with it...
    peers[1].expect_notice(FrameKind::PeerJoined, peer(1)).await;
    // ...and once the old connection is fully gone, they have heard no PeerLeft:
    // the next thing they get is the new connection's traffic.
    peers[0].until_end().await;
    again.broadcast(b"from the new connection").await;
    peers[1]
        .expect_payload(peer(1), b"from the new connection")
        .await;
    peers[1].broadcast(b"back").await;
    again.expect_payload(peer(2), b"back").await;
}
