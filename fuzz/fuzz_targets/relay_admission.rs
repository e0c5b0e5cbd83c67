//! The relay's room admission (`cue_relay::check_auth_frame`): for a
//! connection that was sent CHALLENGE (room of KEY, assigned PEER, a nonce),
//! arbitrary bytes as its first frame are either refused with one of the
//! documented close codes and a reason that fits a close frame, or accepted,
//! and accepted only if they are the genuine Auth frame KEY makes for this
//! challenge: nobody without the key gets in, whatever the bytes.
//!
//! The first input byte steers, so the fuzzer reaches the later checks:
//! bit 0 forces the frame's version, kind, room and sender to an Auth of the
//! connection's; bit 1 puts the room's real public key in the payload (what
//! an eavesdropper knows), so the signature is what decides; bit 2 starts from
//! the genuine Auth frame and XORs the rest of the input into it.
#![no_main]

use cue_relay::{check_auth_frame, close};
use cue_wire::admission::{Challenge, AUTH_PAYLOAD_LEN};
use cue_wire::{AdmissionKey, FrameKind, PeerId, HEADER_LEN, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const PEER: PeerId = PeerId([0x42; 16]);
/// Longest reason a close frame carries (125 bytes less the 2-byte code).
const MAX_REASON: usize = 123;

struct Fixture {
    key: AdmissionKey,
    challenge: Challenge,
    genuine: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = AdmissionKey::from_seed([7; 32]);
        let challenge = Challenge {
            room: key.room_id(),
            peer: PEER,
            nonce: [0x5c; 32],
        };
        let genuine = key.sign(&challenge).to_frame(&challenge).encode();
        Fixture {
            key,
            challenge,
            genuine,
        }
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&steer, rest)) = input.split_first() else {
        return;
    };
    let f = fixture();
    let mut frame = if steer & 4 == 4 {
        let mut genuine = f.genuine.clone();
        for (byte, x) in genuine.iter_mut().zip(rest) {
            *byte ^= x;
        }
        genuine
    } else {
        rest.to_vec()
    };
    if steer & 1 == 1 && frame.len() >= HEADER_LEN {
        frame[0] = PROTOCOL_VERSION;
        frame[1] = FrameKind::Auth.as_byte();
        frame[2..34].copy_from_slice(&f.challenge.room.0);
        frame[34..50].copy_from_slice(&PEER.0);
        frame[50..66].fill(0);
    }
    if steer & 2 == 2 && frame.len() >= HEADER_LEN + 32 {
        frame[HEADER_LEN..HEADER_LEN + 32].copy_from_slice(&f.key.public_key());
    }

    match check_auth_frame(&frame, &f.challenge) {
        Ok(()) => {
            // Ed25519 signatures are deterministic and strict verification
            // refuses every other encoding: the genuine frame is the only one.
            assert_eq!(frame, f.genuine, "admitted without the key's own proof");
            assert_eq!(frame.len(), HEADER_LEN + AUTH_PAYLOAD_LEN);
        }
        Err(c) => {
            assert!(
                matches!(
                    c.code,
                    close::BAD_FRAME
                        | close::ADMISSION_REFUSED
                        | close::ADMISSION_REQUIRED
                        | close::OUTDATED_PROTOCOL
                ),
                "unexpected close code {}",
                c.code
            );
            assert!(!c.reason.is_empty());
            assert!(c.reason.len() <= MAX_REASON, "{c:?}");
            assert_ne!(frame, f.genuine, "the genuine proof was refused: {c:?}");
            // Another kind of frame first is always 4428, never a refusal
            // that hides what was wrong.
            if let Ok(h) = cue_wire::Header::decode(&frame) {
                if h.kind != FrameKind::Auth {
                    assert_eq!(c.code, close::ADMISSION_REQUIRED, "{c:?}");
                }
            }
        }
    }
});
