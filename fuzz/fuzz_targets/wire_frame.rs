//! The routing envelope: `Header::decode`, `FrameRef::decode` and `Frame::decode`
//! on arbitrary bytes must agree with each other, and whatever decodes must
//! re-encode to exactly the input (the layout is fixed, so there is one
//! encoding per frame). The same bytes, read as text, go through the hex id
//! parsers that take room and peer ids from URLs.
#![no_main]

use cue_wire::{Frame, FrameKind, FrameRef, Header, PeerId, RoomId, WireError, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = Header::decode(data);
    let borrowed = FrameRef::decode(data);
    let owned = Frame::decode(data);

    match &header {
        Ok(h) => {
            assert!(data.len() >= HEADER_LEN);
            assert_eq!(&h.to_bytes()[..], &data[..HEADER_LEN], "header re-encodes");
            assert_eq!(h.validate(), Ok(()));
            // Who may send what: the per-kind rules hold for every decoded header.
            let no_sender = matches!(h.kind, FrameKind::Welcome | FrameKind::Challenge);
            assert_eq!(h.sender.is_zero(), no_sender);
            match h.kind {
                FrameKind::Direct | FrameKind::Challenge => assert!(!h.recipient.is_zero()),
                // The peer id the relay assigned, or zero from a model relay.
                FrameKind::Welcome => {}
                _ => assert!(h.recipient.is_zero()),
            }
        }
        Err(WireError::TooShort { len }) => assert!(*len == data.len() && *len < HEADER_LEN),
        Err(_) => {}
    }

    match (&header, &borrowed) {
        (Ok(h), Ok(f)) => {
            assert_eq!(f.header, *h);
            assert_eq!(f.payload, &data[HEADER_LEN..]);
            let frame = f.to_frame();
            assert_eq!(frame.encode(), data, "frame re-encodes byte for byte");
            assert_eq!(frame.encoded_len(), data.len());
            assert_eq!(frame.as_frame_ref(), *f);
            let peers: Vec<PeerId> = f.welcome_peers().collect();
            if h.kind == FrameKind::Welcome {
                assert_eq!(peers.len() * PeerId::LEN, f.payload.len());
                assert_eq!(Frame::welcome_for(h.room, h.recipient, &peers), frame);
            } else {
                assert!(peers.is_empty());
            }
        }
        // What FrameRef adds to Header: the payload checks of Welcome
        // (whole peer ids) and of the fixed-size kinds (Challenge, Auth).
        (Ok(h), Err(e)) => {
            let len = data.len() - HEADER_LEN;
            match h.kind.payload_len() {
                Some(expected) => assert_eq!(
                    *e,
                    WireError::BadPayloadLength {
                        kind: h.kind,
                        len,
                        expected
                    }
                ),
                None => {
                    assert_eq!(h.kind, FrameKind::Welcome);
                    assert_eq!(*e, WireError::BadWelcomePayload { len });
                }
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Err(_), Ok(_)) => panic!("frame decoded but its header did not"),
    }
    assert_eq!(owned, borrowed.map(|f| f.to_frame()));

    // Every error has a message (the relay sends it as a close reason).
    if let Err(e) = borrowed {
        assert!(!e.to_string().is_empty());
    }

    // Ids as typed in URLs and config files.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(peer) = text.parse::<PeerId>() {
            assert_eq!(peer.to_string(), text.to_ascii_lowercase());
        }
        if let Ok(room) = text.parse::<RoomId>() {
            assert_eq!(room.to_string(), text.to_ascii_lowercase());
        }
    }
});
