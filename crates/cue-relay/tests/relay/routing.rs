//! Fan-out, direct delivery, and the membership notices.

use cue_wire::{FrameKind, PeerId};

use crate::testkit::{room, TestRelay};

#[tokio::test]
async fn broadcast_reaches_every_other_peer_but_not_the_sender() {
    let relay = TestRelay::with_defaults().await;
    let mut peers = relay.room_of(1, 4).await;
    let mut elsewhere = relay.room_of(2, 2).await;
    let first = peers[0].peer;

    peers[0].broadcast(b"hello room").await;
    for other in &mut peers[1..] {
        let frame = other.expect_payload(first, b"hello room").await;
        assert_eq!(frame.header.kind, FrameKind::Broadcast);
        assert_eq!(frame.header.room, room(1));
    }

    // Had the relay echoed the broadcast to its sender, the echo would have been
    // queued before this later frame.
    let second = peers[1].peer;
    peers[1].direct(first, b"after").await;
    peers[0].expect_payload(second, b"after").await;

    // Another room saw nothing: its next frame is its own traffic.
    let other = elsewhere[1].peer;
    elsewhere[1].broadcast(b"other room").await;
    elsewhere[0].expect_payload(other, b"other room").await;

    let metrics = relay.metrics.snapshot();
    assert_eq!(metrics.frames_in, 3);
    assert_eq!(metrics.rooms, 2);
    assert_eq!(metrics.admitted, 6);
}

#[tokio::test]
async fn direct_reaches_only_its_recipient() {
    let relay = TestRelay::with_defaults().await;
    let mut peers = relay.room_of(1, 3).await;
    let (one, two) = (peers[0].peer, peers[1].peer);

    peers[0].direct(two, b"for two").await;
    let frame = peers[1].expect_payload(one, b"for two").await;
    assert_eq!(frame.header.kind, FrameKind::Direct);
    assert_eq!(frame.header.recipient, two);

    // The relay handles one connection's frames in order: had peer 3 been sent
    // the direct frame, it would come before this broadcast.
    peers[0].broadcast(b"marker").await;
    peers[2].expect_payload(one, b"marker").await;
    peers[1].expect_payload(one, b"marker").await;

    // A recipient that is not in the room: dropped and counted.
    peers[0].direct(PeerId([9; 16]), b"nobody").await;
    relay.wait_metrics(|m| m.direct_dropped == 1).await;
    peers[0].broadcast(b"still fine").await;
    peers[2].expect_payload(one, b"still fine").await;
}

#[tokio::test]
async fn welcome_names_the_assigned_id_and_the_present_peers() {
    let relay = TestRelay::with_defaults().await;

    let (mut a, present) = relay.join(1).await;
    assert!(present.is_empty());

    let (mut b, present) = relay.join(1).await;
    assert_eq!(present, vec![a.peer]);
    a.expect_notice(FrameKind::PeerJoined, b.peer).await;

    let (mut c, mut present) = relay.join(1).await;
    present.sort();
    let mut expected = vec![a.peer, b.peer];
    expected.sort();
    assert_eq!(present, expected);
    a.expect_notice(FrameKind::PeerJoined, c.peer).await;
    b.expect_notice(FrameKind::PeerJoined, c.peer).await;
    assert_eq!(relay.metrics.snapshot().rooms, 1);
    // Every connection got an id of its own.
    assert!(a.peer != b.peer && b.peer != c.peer && a.peer != c.peer);

    let gone = b.peer;
    b.ws.close(None).await.unwrap();
    a.expect_notice(FrameKind::PeerLeft, gone).await;
    c.expect_notice(FrameKind::PeerLeft, gone).await;

    // The room disappears with its last peer.
    drop(a);
    drop(c);
    relay
        .wait_metrics(|m| m.rooms == 0 && m.connections_current == 0)
        .await;
}

#[tokio::test]
async fn a_member_reconnecting_gets_a_new_id_and_nobody_is_evicted() {
    let relay = TestRelay::with_defaults().await;
    let mut peers = relay.room_of(1, 2).await;
    let (one, two) = (peers[0].peer, peers[1].peer);

    // A second connection with the key: it cannot choose an id, so it can
    // take nobody's seat; the others just see one more peer.
    let (mut again, mut present) = relay.join(1).await;
    present.sort();
    let mut expected = vec![one, two];
    expected.sort();
    assert_eq!(present, expected);
    assert!(again.peer != one && again.peer != two);
    peers[0]
        .expect_notice(FrameKind::PeerJoined, again.peer)
        .await;
    peers[1]
        .expect_notice(FrameKind::PeerJoined, again.peer)
        .await;

    // Both original connections still work.
    peers[0].broadcast(b"still here").await;
    peers[1].expect_payload(one, b"still here").await;
    again.expect_payload(one, b"still here").await;
}
