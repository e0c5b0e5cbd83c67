//! What is refused before the upgrade (401, 400), room admission after it
//! (4401, 4410, 4428, 4426), and at join (room full).

use std::time::Duration;

use cue_relay::{close, RelayConfig};
use cue_wire::admission::{AuthProof, Challenge};
use cue_wire::{Frame, FrameKind, PeerId};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::testkit::{key, refusal, room, stranger_key, Client, SilentClient, TestRelay};

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_with_401() {
    let relay = TestRelay::start(RelayConfig {
        auth_token: Some("s3cret".into()),
        ..RelayConfig::default()
    })
    .await;
    let url = relay.url(room(1));

    for token in [None, Some("wrong"), Some("s3cre")] {
        let err = relay.try_connect(&url, token).await.err().unwrap();
        let (status, body) = refusal(err);
        assert_eq!(status, 401, "token {token:?}");
        assert!(body.contains("Authorization: Bearer <token>"), "{body}");
    }
    assert_eq!(relay.metrics.snapshot().auth_rejected, 3);

    let mut client = relay.connect_with(1, Some("s3cret")).await;
    assert!(client.welcome().await.is_empty());
    assert_eq!(relay.metrics.snapshot().auth_rejected, 3);
}

#[tokio::test]
async fn malformed_room_ids_are_refused_with_400_and_a_reason() {
    let relay = TestRelay::with_defaults().await;
    let base = format!("ws://{}/v2/rooms", relay.addr);
    let cases = [
        (format!("{base}/not-hex"), "bad room id"),
        (format!("{base}/abcd"), "expected 64 hex characters, got 4"),
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
async fn the_key_admits_and_the_welcome_names_the_assigned_id() {
    let relay = TestRelay::with_defaults().await;
    let mut client = relay.open(1).await;
    let challenge = client.challenge().await;
    assert_eq!(challenge.room, room(1));
    let proof = key(1).sign(&challenge);
    client.send(&proof.to_frame(&challenge)).await;
    assert!(client.welcome().await.is_empty());
    assert_eq!(client.peer, challenge.peer);
    let m = relay.metrics.snapshot();
    assert_eq!((m.admitted, m.admission_refused), (1, 0));
}

/// Opens a connection, reads its challenge, sends `answer(challenge)`, and
/// returns the close the relay sent.
async fn refused(relay: &TestRelay, answer: impl FnOnce(&Challenge) -> Vec<u8>) -> (u16, String) {
    let mut client = relay.open(1).await;
    let challenge = client.challenge().await;
    client.send_bytes(answer(&challenge)).await;
    client.expect_close().await
}

#[tokio::test]
async fn admission_without_the_key_is_refused_and_no_one_hears_of_it() {
    let relay = TestRelay::with_defaults().await;
    let mut member = relay.room_of(1, 1).await.remove(0);

    // A stranger's own key: its public key is not the room's.
    let (code, reason) = refused(&relay, |c| stranger_key().sign(c).to_frame(c).encode()).await;
    assert_eq!(code, close::ADMISSION_REFUSED);
    assert!(reason.contains("does not belong to this room"), "{reason}");

    // The room's public key (a relay log or an eavesdropper may know it) with
    // a signature made by another key.
    let (code, reason) = refused(&relay, |c| {
        AuthProof {
            public_key: key(1).public_key(),
            ..stranger_key().sign(c)
        }
        .to_frame(c)
        .encode()
    })
    .await;
    assert_eq!(code, close::ADMISSION_REFUSED);
    assert!(reason.contains("signature"), "{reason}");

    // A member's real proof, captured from another connection: bound to that
    // connection's nonce and id, it proves nothing here.
    let mut victim = relay.open(1).await;
    let victims = victim.challenge().await;
    let captured = key(1).sign(&victims);
    let (code, _) = refused(&relay, |c| captured.to_frame(c).encode()).await;
    assert_eq!(code, close::ADMISSION_REFUSED);
    // Sent as the victim's id instead: the sender is not the assigned one.
    let (code, reason) = refused(&relay, |_| captured.to_frame(&victims).encode()).await;
    assert_eq!(code, close::ADMISSION_REFUSED);
    assert!(reason.contains("sender"), "{reason}");
    // The victim itself is still admitted with it.
    victim.send(&captured.to_frame(&victims)).await;
    victim.welcome().await;

    let m = relay.wait_metrics(|m| m.admission_refused == 4).await;
    assert_eq!(m.admitted, 2);
    // The member heard of the victim joining, and of nobody else.
    member
        .expect_notice(FrameKind::PeerJoined, victim.peer)
        .await;
    victim.broadcast(b"marker").await;
    member.expect_payload(victim.peer, b"marker").await;
}

#[tokio::test]
async fn a_data_frame_before_auth_is_refused_with_4428_and_goes_nowhere() {
    let relay = TestRelay::with_defaults().await;
    let mut member = relay.room_of(1, 1).await.remove(0);

    // A stranger who knows the room id and a member's peer id poses as it.
    let posing = member.peer;
    let (code, reason) = refused(&relay, |c| {
        Frame::broadcast(c.room, posing, b"i am the member".to_vec()).encode()
    })
    .await;
    assert_eq!(code, close::ADMISSION_REQUIRED);
    assert!(reason.contains("must be an Auth frame"), "{reason}");
    // With its assigned id: the same.
    let (code, _) = refused(&relay, |c| {
        Frame::broadcast(c.room, c.peer, b"hello?".to_vec()).encode()
    })
    .await;
    assert_eq!(code, close::ADMISSION_REQUIRED);
    // Text first.
    let mut client = relay.open(1).await;
    client.challenge().await;
    client.ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(client.expect_close().await.0, close::ADMISSION_REQUIRED);

    relay.wait_metrics(|m| m.admission_not_auth == 3).await;
    // Nothing reached the member: its next frame is a real peer's.
    let (mut other, _) = relay.join(1).await;
    member
        .expect_notice(FrameKind::PeerJoined, other.peer)
        .await;
    other.broadcast(b"real").await;
    member.expect_payload(other.peer, b"real").await;
    assert_eq!(relay.metrics.snapshot().frames_in, 1);
}

#[tokio::test]
async fn no_answer_before_the_deadline_is_closed_with_4410() {
    let relay = TestRelay::start(RelayConfig {
        admission_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    })
    .await;
    // A client that upgrades, reads the challenge and says nothing more
    // (not even pongs).
    let mut silent = SilentClient::connect(relay.addr, 1, None).await;
    let (opcode, _) = silent.next_frame().await;
    assert_eq!(opcode, 0x2, "the challenge");
    let (code, reason) = silent.expect_close().await;
    assert_eq!(code, close::ADMISSION_TIMEOUT, "{reason}");
    let m = relay
        .wait_metrics(|m| m.admission_timeouts == 1 && m.unadmitted == 0)
        .await;
    assert_eq!(m.admitted, 0);
    // A member is admitted as usual.
    relay.join(1).await;
}

#[tokio::test]
async fn a_v1_client_is_told_to_upgrade() {
    let relay = TestRelay::with_defaults().await;
    let url = format!(
        "ws://{}/v1/rooms/{}?peer={}",
        relay.addr,
        room(1),
        PeerId([1; 16])
    );
    let ws = relay.try_connect(&url, None).await.unwrap();
    let mut client = Client {
        ws,
        room: room(1),
        peer: PeerId([1; 16]),
    };
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, close::OUTDATED_PROTOCOL);
    assert!(reason.contains("upgrade cue"), "{reason}");
    relay.wait_metrics(|m| m.outdated_clients == 1).await;
}

#[tokio::test]
async fn the_peer_past_the_room_limit_is_closed_with_4003() {
    let relay = TestRelay::start(RelayConfig {
        max_peers_per_room: 2,
        ..RelayConfig::default()
    })
    .await;
    let mut peers = relay.room_of(1, 2).await;

    let mut third = relay.connect(1).await;
    assert_eq!(
        third.expect_close().await,
        (4003, "room full (2 peers)".into())
    );
    assert_eq!(relay.metrics.snapshot().room_full_rejected, 1);

    // A full room is about who is there now: once a peer leaves, there is room.
    let mut first = peers.remove(0);
    let gone = first.peer;
    first.ws.close(None).await.unwrap();
    peers[0].expect_notice(FrameKind::PeerLeft, gone).await;
    let (third, present) = relay.join(1).await;
    assert_eq!(present, vec![peers[0].peer]);
    peers[0]
        .expect_notice(FrameKind::PeerJoined, third.peer)
        .await;
}
