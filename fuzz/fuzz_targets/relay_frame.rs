//! The relay's check of one client frame after admission
//! (`cue_relay::check_client_frame`): for a connection seated in ROOM as PEER, arbitrary bytes are either
//! refused with one of the three documented close codes and a reason that
//! fits a WebSocket close frame, or accepted as a Broadcast or Direct frame
//! of that room, from that peer, whose bytes are exactly its header plus payload.
//!
//! The first input byte steers: with bit 0 set, the frame's room and sender
//! are overwritten with the connection's, so the fuzzer also explores the
//! checks that come after them.
#![no_main]

use cue_relay::{check_client_frame, close};
use cue_wire::{FrameKind, Header, PeerId, RoomId, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

const ROOM: RoomId = RoomId([7; 32]);
const PEER: PeerId = PeerId([1; 16]);
/// Longest reason a close frame carries (125 bytes less the 2-byte code).
const MAX_REASON: usize = 123;

fuzz_target!(|input: &[u8]| {
    let Some((&steer, rest)) = input.split_first() else {
        return;
    };
    let mut frame = rest.to_vec();
    if steer & 1 == 1 && frame.len() >= HEADER_LEN {
        frame[2..34].copy_from_slice(&ROOM.0);
        frame[34..50].copy_from_slice(&PEER.0);
    }
    match check_client_frame(&frame, ROOM, PEER) {
        Ok(header) => {
            assert!(matches!(
                header.kind,
                FrameKind::Broadcast | FrameKind::Direct
            ));
            assert!(!header.kind.is_from_relay());
            assert_eq!(header.room, ROOM);
            assert_eq!(header.sender, PEER);
            assert_eq!(
                header.recipient.is_zero(),
                header.kind == FrameKind::Broadcast
            );
            assert_eq!(&header.to_bytes()[..], &frame[..HEADER_LEN]);
            assert_eq!(Header::decode(&frame), Ok(header));
        }
        Err(c) => {
            assert!(
                matches!(
                    c.code,
                    close::BAD_FRAME | close::WRONG_ROOM | close::SPOOFED_SENDER
                ),
                "unexpected close code {}",
                c.code
            );
            assert!(!c.reason.is_empty());
            assert!(c.reason.len() <= MAX_REASON, "{c:?}");
            // Anything the wire format accepts is refused only for its room,
            // sender, a relay-only kind, or an Auth (only a first frame).
            if let Ok(h) = Header::decode(&frame) {
                assert!(
                    h.room != ROOM
                        || h.sender != PEER
                        || h.kind.is_from_relay()
                        || h.kind == FrameKind::Auth
                );
            } else {
                assert_eq!(c.code, close::BAD_FRAME);
            }
        }
    }
});
