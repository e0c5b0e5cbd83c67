//! Room admission: how a client proves to the relay that it holds the
//! workspace key, in a way the relay can check but never reuse.
//!
//! Every member derives the same Ed25519 key pair from the workspace key (the
//! seed comes from HKDF, see `cue_core::sync::WorkspaceKey::admission_key`).
//! The room id the relay routes by is a hash of the public key,
//! [`room_id_for`], so the relay can tell whether a presented public key
//! belongs to the room in the URL without learning anything about the
//! workspace key.
//!
//! The exchange, right after the WebSocket upgrade:
//!
//! 1. relay → client: a [`Challenge`] frame. Its recipient is the peer id the
//!    relay assigns to this connection; its payload a fresh random 32-byte nonce.
//! 2. client → relay: an Auth frame, its first and only Auth, sent as that
//!    peer id: an [`AuthProof`], the public key and an Ed25519 signature over
//!    [`signed_message`] (a fixed context string, the room, the nonce, the
//!    assigned peer id).
//! 3. the relay checks the key against the room and the signature
//!    ([`verify`]), and only then seats the connection and sends its Welcome.
//!
//! A signature is bound to one nonce and one assigned peer id, so a relay, or
//! anyone who captured it, cannot replay it to join as someone else or later.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{Frame, FrameKind, FrameRef, PeerId, RoomId, WireError};

/// Bytes of the relay's random nonce in a Challenge payload.
pub const NONCE_LEN: usize = 32;
/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of an Auth payload: public key, then signature.
pub const AUTH_PAYLOAD_LEN: usize = PUBLIC_KEY_LEN + SIGNATURE_LEN;

/// Prefix of the hash that turns an admission public key into a room id;
/// versioned so that a future derivation can never collide with this one.
const ROOM_ID_CONTEXT: &[u8] = b"cuedeck sync v2 room id";

/// Prefix of every signed admission message: domain separation, so that a
/// signature made for admission can never be taken for anything else the
/// same key might one day sign.
const SIGNED_CONTEXT: &[u8] = b"cuedeck sync v2 admission proof\0";

/// Length of [`signed_message`]'s output: context, room, nonce, peer.
pub const SIGNED_MESSAGE_LEN: usize = SIGNED_CONTEXT.len() + 32 + NONCE_LEN + PeerId::LEN;

/// Why an admission exchange failed. The relay turns these into close reasons
/// (4401, 4428), and a client into an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The frame is not a valid frame at all.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// A Challenge was expected (client side) or an Auth (relay side).
    #[error("expected a {expected} frame, got {got}")]
    UnexpectedKind {
        /// Kind the exchange needed.
        expected: FrameKind,
        /// Kind that arrived.
        got: FrameKind,
    },
    /// The frame names another room than the connection's.
    #[error("the frame is for another room than this connection's")]
    WrongRoom,
    /// The Auth frame's sender is not the peer id the relay assigned.
    #[error("the auth frame's sender is not the peer id the challenge assigned")]
    WrongPeer,
    /// The public key does not hash to the connection's room id: the client
    /// holds another workspace's key, or none.
    #[error("the public key does not belong to this room")]
    ForeignKey,
    /// The 32 bytes are not a valid Ed25519 public key.
    #[error("the public key is not a valid Ed25519 point")]
    BadPublicKey,
    /// The signature does not verify over this connection's challenge.
    #[error("the signature does not verify for this challenge")]
    BadSignature,
}

/// The room id of the workspace whose admission public key is `public_key`.
pub fn room_id_for(public_key: &[u8; PUBLIC_KEY_LEN]) -> RoomId {
    let mut hash = Sha256::new();
    hash.update(ROOM_ID_CONTEXT);
    hash.update(public_key);
    RoomId(hash.finalize().into())
}

/// What a client signs to be admitted to `room` as `peer` on the connection
/// that was sent `nonce`. Fixed-size fields, so the encoding is unambiguous.
pub fn signed_message(
    room: &RoomId,
    nonce: &[u8; NONCE_LEN],
    peer: &PeerId,
) -> [u8; SIGNED_MESSAGE_LEN] {
    let mut out = [0u8; SIGNED_MESSAGE_LEN];
    let (context, rest) = out.split_at_mut(SIGNED_CONTEXT.len());
    context.copy_from_slice(SIGNED_CONTEXT);
    let (room_part, rest) = rest.split_at_mut(32);
    room_part.copy_from_slice(&room.0);
    let (nonce_part, peer_part) = rest.split_at_mut(NONCE_LEN);
    nonce_part.copy_from_slice(nonce);
    peer_part.copy_from_slice(&peer.0);
    out
}

/// The relay's challenge to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The room of the connection (from its URL).
    pub room: RoomId,
    /// The peer id the relay assigns to the connection.
    pub peer: PeerId,
    /// Fresh random bytes, never reused, that the answer must sign.
    pub nonce: [u8; NONCE_LEN],
}

impl Challenge {
    /// The Challenge frame the relay sends.
    pub fn to_frame(&self) -> Frame {
        Frame::with(
            FrameKind::Challenge,
            self.room,
            PeerId::ZERO,
            self.peer,
            self.nonce.to_vec(),
        )
    }

    /// Reads a Challenge frame (what a client does with the relay's first frame).
    pub fn decode(bytes: &[u8]) -> Result<Challenge, AdmissionError> {
        let frame = FrameRef::decode(bytes)?;
        if frame.header.kind != FrameKind::Challenge {
            return Err(AdmissionError::UnexpectedKind {
                expected: FrameKind::Challenge,
                got: frame.header.kind,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        // FrameRef::decode checked that the payload is exactly NONCE_LEN bytes.
        nonce.copy_from_slice(frame.payload);
        Ok(Challenge {
            room: frame.header.room,
            peer: frame.header.recipient,
            nonce,
        })
    }
}

/// A client's answer to a challenge: the payload of its Auth frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthProof {
    /// The admission public key; its hash must be the room id.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Ed25519 signature over [`signed_message`] for the challenge.
    pub signature: [u8; SIGNATURE_LEN],
}

impl AuthProof {
    /// The Auth frame that carries this proof, sent as the assigned peer.
    pub fn to_frame(&self, challenge: &Challenge) -> Frame {
        let mut payload = Vec::with_capacity(AUTH_PAYLOAD_LEN);
        payload.extend_from_slice(&self.public_key);
        payload.extend_from_slice(&self.signature);
        Frame::with(
            FrameKind::Auth,
            challenge.room,
            challenge.peer,
            PeerId::ZERO,
            payload,
        )
    }

    /// Reads an Auth frame sent on the connection that got `challenge`: the
    /// frame must be an Auth for that room from the assigned peer. Nothing
    /// is verified yet; see [`verify`].
    pub fn decode(bytes: &[u8], challenge: &Challenge) -> Result<AuthProof, AdmissionError> {
        let frame = FrameRef::decode(bytes)?;
        if frame.header.kind != FrameKind::Auth {
            return Err(AdmissionError::UnexpectedKind {
                expected: FrameKind::Auth,
                got: frame.header.kind,
            });
        }
        if frame.header.room != challenge.room {
            return Err(AdmissionError::WrongRoom);
        }
        if frame.header.sender != challenge.peer {
            return Err(AdmissionError::WrongPeer);
        }
        // FrameRef::decode checked that the payload is exactly AUTH_PAYLOAD_LEN bytes.
        let (public, signature) = frame.payload.split_at(PUBLIC_KEY_LEN);
        let mut proof = AuthProof {
            public_key: [0; PUBLIC_KEY_LEN],
            signature: [0; SIGNATURE_LEN],
        };
        proof.public_key.copy_from_slice(public);
        proof.signature.copy_from_slice(signature);
        Ok(proof)
    }
}

/// Whether `proof` answers `challenge`: its public key derives the
/// challenge's room, and its signature verifies over the challenge (strict
/// Ed25519 verification, which refuses malleable and small-order cases).
///
/// The room check comes first: it is one hash, so a stranger who does not
/// even know the room's public key costs the relay no signature verification.
pub fn verify(challenge: &Challenge, proof: &AuthProof) -> Result<(), AdmissionError> {
    if room_id_for(&proof.public_key) != challenge.room {
        return Err(AdmissionError::ForeignKey);
    }
    let key =
        VerifyingKey::from_bytes(&proof.public_key).map_err(|_| AdmissionError::BadPublicKey)?;
    let signature = Signature::from_bytes(&proof.signature);
    let message = signed_message(&challenge.room, &challenge.nonce, &challenge.peer);
    key.verify_strict(&message, &signature)
        .map_err(|_| AdmissionError::BadSignature)
}

/// The signing half, held by members: answers challenges for its one room.
///
/// Its secret is zeroed when dropped, and `Debug` never shows it.
#[derive(Clone)]
pub struct AdmissionKey {
    signing: SigningKey,
    room: RoomId,
}

impl std::fmt::Debug for AdmissionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionKey")
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

impl AdmissionKey {
    /// The key pair whose Ed25519 seed is `seed`: members derive the seed
    /// from the workspace key, so they all hold the same pair.
    pub fn from_seed(seed: [u8; 32]) -> AdmissionKey {
        let signing = SigningKey::from_bytes(&seed);
        let room = room_id_for(signing.verifying_key().as_bytes());
        AdmissionKey { signing, room }
    }

    /// The public key, as the Auth frame carries it.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.signing.verifying_key().to_bytes()
    }

    /// The room this key admits to: [`room_id_for`] of its public key.
    pub fn room_id(&self) -> RoomId {
        self.room
    }

    /// The proof for `challenge`, whatever room it names (see [`Self::answer`]
    /// for the check a client should make).
    pub fn sign(&self, challenge: &Challenge) -> AuthProof {
        let message = signed_message(&challenge.room, &challenge.nonce, &challenge.peer);
        AuthProof {
            public_key: self.public_key(),
            signature: self.signing.sign(&message).to_bytes(),
        }
    }

    /// Reads the relay's first frame and returns the assigned peer id and the
    /// Auth frame to send back. Refuses a challenge for another room than
    /// this key's, so a client never signs for a room it did not ask for.
    pub fn answer(&self, challenge_frame: &[u8]) -> Result<(PeerId, Frame), AdmissionError> {
        let challenge = Challenge::decode(challenge_frame)?;
        if challenge.room != self.room {
            return Err(AdmissionError::WrongRoom);
        }
        Ok((challenge.peer, self.sign(&challenge).to_frame(&challenge)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PEER: PeerId = PeerId([5; 16]);

    fn challenge_for(key: &AdmissionKey) -> Challenge {
        Challenge {
            room: key.room_id(),
            peer: PEER,
            nonce: [9; NONCE_LEN],
        }
    }

    #[test]
    fn an_honest_answer_verifies() {
        let key = AdmissionKey::from_seed([1; 32]);
        let challenge = challenge_for(&key);
        let (peer, frame) = key.answer(&challenge.to_frame().encode()).unwrap();
        assert_eq!(peer, PEER);
        let bytes = frame.encode();
        assert_eq!(bytes.len(), crate::HEADER_LEN + AUTH_PAYLOAD_LEN);
        let proof = AuthProof::decode(&bytes, &challenge).unwrap();
        assert_eq!(verify(&challenge, &proof), Ok(()));
        assert_eq!(room_id_for(&key.public_key()), key.room_id());
    }

    #[test]
    fn a_proof_is_bound_to_its_nonce_peer_and_room() {
        let key = AdmissionKey::from_seed([1; 32]);
        let challenge = challenge_for(&key);
        let proof = key.sign(&challenge);
        let other_nonce = Challenge {
            nonce: [8; NONCE_LEN],
            ..challenge
        };
        assert_eq!(
            verify(&other_nonce, &proof),
            Err(AdmissionError::BadSignature)
        );
        let other_peer = Challenge {
            peer: PeerId([6; 16]),
            ..challenge
        };
        assert_eq!(
            verify(&other_peer, &proof),
            Err(AdmissionError::BadSignature)
        );
        let other_room = Challenge {
            room: RoomId([3; 32]),
            ..challenge
        };
        assert_eq!(verify(&other_room, &proof), Err(AdmissionError::ForeignKey));
    }

    #[test]
    fn another_workspace_key_is_refused() {
        let key = AdmissionKey::from_seed([1; 32]);
        let stranger = AdmissionKey::from_seed([2; 32]);
        let challenge = challenge_for(&key);
        // Signing with its own key: the key is not the room's.
        let proof = stranger.sign(&challenge);
        assert_eq!(verify(&challenge, &proof), Err(AdmissionError::ForeignKey));
        // Presenting the room's public key with its own signature.
        let forged = AuthProof {
            public_key: key.public_key(),
            ..proof
        };
        assert_eq!(
            verify(&challenge, &forged),
            Err(AdmissionError::BadSignature)
        );
        // And a client refuses to sign for another room.
        assert_eq!(
            stranger.answer(&challenge.to_frame().encode()).unwrap_err(),
            AdmissionError::WrongRoom
        );
    }

    #[test]
    fn auth_frames_are_checked_against_the_challenge() {
        let key = AdmissionKey::from_seed([1; 32]);
        let challenge = challenge_for(&key);
        let good = key.sign(&challenge).to_frame(&challenge);

        let mut spoofed = good.clone();
        spoofed.header.sender = PeerId([7; 16]);
        assert_eq!(
            AuthProof::decode(&spoofed.encode(), &challenge),
            Err(AdmissionError::WrongPeer)
        );
        let mut moved = good.clone();
        moved.header.room = RoomId([4; 32]);
        assert_eq!(
            AuthProof::decode(&moved.encode(), &challenge),
            Err(AdmissionError::WrongRoom)
        );
        let data = Frame::broadcast(challenge.room, PEER, vec![1]);
        assert_eq!(
            AuthProof::decode(&data.encode(), &challenge),
            Err(AdmissionError::UnexpectedKind {
                expected: FrameKind::Auth,
                got: FrameKind::Broadcast
            })
        );
        let mut short = good.encode();
        short.pop();
        assert!(matches!(
            AuthProof::decode(&short, &challenge),
            Err(AdmissionError::Wire(WireError::BadPayloadLength { .. }))
        ));
    }

    #[test]
    fn a_public_key_off_the_curve_is_refused_not_panicked_on() {
        // Find bytes that hash to a room but do not decompress: the room is
        // made from them, so the hash check passes and decoding is reached.
        let bad = (0u8..=255)
            .map(|b| [b; 32])
            .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
            .unwrap();
        let challenge = Challenge {
            room: room_id_for(&bad),
            peer: PEER,
            nonce: [0; NONCE_LEN],
        };
        let proof = AuthProof {
            public_key: bad,
            signature: [0; SIGNATURE_LEN],
        };
        assert_eq!(
            verify(&challenge, &proof),
            Err(AdmissionError::BadPublicKey)
        );
    }

    #[test]
    fn the_signed_message_is_laid_out_field_by_field() {
        let message = signed_message(&RoomId([1; 32]), &[2; NONCE_LEN], &PeerId([3; 16]));
        // docs/FORMAT.md gives this layout and size.
        assert_eq!(SIGNED_MESSAGE_LEN, 112);
        assert_eq!(&message[..SIGNED_CONTEXT.len()], SIGNED_CONTEXT);
        let rest = &message[SIGNED_CONTEXT.len()..];
        assert_eq!(&rest[..32], &[1; 32]);
        assert_eq!(&rest[32..64], &[2; 32]);
        assert_eq!(&rest[64..], &[3; 16]);
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = AdmissionKey::from_seed([0x5a; 32]);
        let text = format!("{key:?}");
        assert!(!text.contains("5a5a"), "{text}");
        assert!(text.contains("AdmissionKey"));
    }
}
