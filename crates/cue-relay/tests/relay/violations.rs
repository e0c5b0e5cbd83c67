//! Frames a client may not send close its connection with a code that says why,
//! and never reach anyone.

use cue_relay::{close, RelayConfig};
use cue_wire::{Frame, FrameKind, Header, PeerId, HEADER_LEN};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::testkit::{room, TestRelay};

#[tokio::test]
async fn invalid_frames_close_the_connection_with_a_named_reason() {
    let relay = TestRelay::with_defaults().await;
    let here = room(1);
    let cases = |me: PeerId, other: PeerId| -> Vec<(&'static str, Vec<u8>, u16, &'static str)> {
        let mut unknown_kind = Frame::broadcast(here, me, vec![1]).encode();
        unknown_kind[1] = 99;
        vec![
            (
                "spoofed sender",
                Frame::broadcast(here, other, b"i am two".to_vec()).encode(),
                close::SPOOFED_SENDER,
                "spoofed sender",
            ),
            (
                "wrong room",
                Frame::broadcast(room(7), me, b"elsewhere".to_vec()).encode(),
                close::WRONG_ROOM,
                "wrong room",
            ),
            (
                "relay kind",
                Frame::peer_left(here, me).encode(),
                close::BAD_FRAME,
                "bad frame: peer-left frames come only from the relay",
            ),
            (
                "truncated",
                vec![1, 1, 0],
                close::BAD_FRAME,
                "bad frame: frame is 3 bytes, shorter than the 66-byte header",
            ),
            (
                "unknown kind",
                unknown_kind,
                close::BAD_FRAME,
                "bad frame: unknown frame kind 99",
            ),
            (
                "broadcast with a recipient",
                {
                    let mut frame = Frame::direct(here, me, other, vec![]);
                    frame.header.kind = FrameKind::Broadcast;
                    frame.encode()
                },
                close::BAD_FRAME,
                "carries a recipient",
            ),
            (
                "a second auth",
                Frame {
                    header: Header {
                        kind: FrameKind::Auth,
                        room: here,
                        sender: me,
                        recipient: PeerId::ZERO,
                    },
                    payload: vec![0; 96],
                }
                .encode(),
                close::BAD_FRAME,
                "only a connection's first frame",
            ),
        ]
    };
    let count = cases(PeerId::ZERO, PeerId::ZERO).len() as u64;

    for i in 0..count as usize {
        let mut peers = relay.room_of(1, 2).await;
        let me = peers[0].peer;
        let (what, bytes, code, reason) = cases(me, peers[1].peer).swap_remove(i);
        peers[0].send_bytes(bytes).await;
        let (got_code, got_reason) = peers[0].expect_close().await;
        assert_eq!(got_code, code, "{what}: {got_reason}");
        assert!(got_reason.contains(reason), "{what}: {got_reason}");
        // Nothing was forwarded: the other peer's next frame is the departure.
        peers[1].expect_notice(FrameKind::PeerLeft, me).await;
        peers[0].until_end().await;
        // Empty the room, so the next case starts from scratch.
        peers[1].ws.close(None).await.unwrap();
        peers[1].until_end().await;
        relay.wait_metrics(|m| m.rooms == 0).await;
    }
    relay.wait_metrics(|m| m.protocol_violations == count).await;
    assert_eq!(relay.metrics.snapshot().frames_in, 0);
}

#[tokio::test]
async fn text_messages_are_refused_with_1003() {
    let relay = TestRelay::with_defaults().await;
    let mut peers = relay.room_of(1, 2).await;
    let first = peers[0].peer;
    peers[0].ws.send(Message::text("hello?")).await.unwrap();
    assert_eq!(
        peers[0].expect_close().await,
        (1003, "binary frames only".into())
    );
    peers[1].expect_notice(FrameKind::PeerLeft, first).await;
}

#[tokio::test]
async fn a_frame_over_the_cap_is_refused_with_1009() {
    let cap = 1024;
    let relay = TestRelay::start(RelayConfig {
        max_frame_bytes: cap,
        ..RelayConfig::default()
    })
    .await;
    let mut peers = relay.room_of(1, 2).await;
    let first = peers[0].peer;

    // Exactly at the cap is fine.
    let fits = vec![7u8; cap - HEADER_LEN];
    peers[0].broadcast(&fits).await;
    peers[1].expect_payload(first, &fits).await;

    peers[0].broadcast(&vec![7u8; cap]).await;
    assert_eq!(
        peers[0].expect_close().await,
        (1009, "frame too large".into())
    );
    peers[1].expect_notice(FrameKind::PeerLeft, first).await;
}
