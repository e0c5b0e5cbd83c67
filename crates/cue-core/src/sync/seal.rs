//! End-to-end sealing: the relay routes frames it can never read.
//!
//! One random 32-byte [`WorkspaceKey`] is created by `cue init` and travels only
//! inside join codes. HKDF-SHA256 derives two values from it: the seed of the
//! room admission key pair (Ed25519), whose public key's hash is the room id
//! the relay sees (so the relay can check that a client holds the key without
//! learning it, and cannot even learn the workspace id), and the
//! XChaCha20-Poly1305 key that seals every payload. The frame's 66-byte routing
//! header is the AEAD's associated data, so a sealed payload moved into another
//! room, or re-sent under another sender or recipient, fails to open.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use cue_wire::{AdmissionKey, Frame, Header, RoomId};
use hkdf::Hkdf;
use sha2::Sha256;

/// Bytes of the random nonce that starts every sealed payload.
pub const NONCE_LEN: usize = 24;
/// Bytes the AEAD adds: the nonce and the Poly1305 tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;

/// HKDF info of the admission key pair's seed. v2: v1 derived the room id
/// directly from the key, and v1 clients had no admission.
const ADMISSION_INFO: &[u8] = b"cuedeck sync v2 room admission";
const PAYLOAD_INFO: &[u8] = b"cuedeck sync v1 payload key";

/// The secret every member of a workspace holds: whoever has it can read and
/// write the workspace, so it is shown only in join codes.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkspaceKey([u8; 32]);

impl std::fmt::Debug for WorkspaceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkspaceKey(..)")
    }
}

impl WorkspaceKey {
    /// A fresh random key.
    pub fn random(rng: &mut impl rand::Rng) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        WorkspaceKey(bytes)
    }

    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        WorkspaceKey(bytes)
    }

    /// The raw bytes, for the key file and join codes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The room on the relay: a one-way function of the key (the hash of the
    /// admission public key, see [`cue_wire::admission::room_id_for`]).
    pub fn room_id(&self) -> RoomId {
        self.admission_key().room_id()
    }

    /// The key pair that answers the relay's challenge to prove, without
    /// revealing anything reusable, that this peer holds the workspace key.
    pub fn admission_key(&self) -> AdmissionKey {
        AdmissionKey::from_seed(self.expand(ADMISSION_INFO))
    }

    /// The sealer for this key's payloads.
    pub fn sealer(&self) -> Sealer {
        let key = self.expand(PAYLOAD_INFO);
        Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// A 32-byte value derived from the key for one purpose (`info`), such
    /// as the MAC key of rotation records.
    pub(crate) fn derive(&self, info: &[u8]) -> [u8; 32] {
        self.expand(info)
    }

    fn expand(&self, info: &[u8]) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 8160, so this cannot fail.
        if hk.expand(info, &mut out).is_err() {
            unreachable!("HKDF output length is fixed and valid");
        }
        out
    }
}

/// Why a sealed payload did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Too short to hold a nonce and a tag: damaged, or not from a peer.
    #[error("payload of {len} bytes is too short to be sealed")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The tag did not verify: the sender holds another workspace key, or the
    /// frame was altered or moved to another room or recipient.
    #[error(
        "payload does not open with this workspace's key (a different key, or an altered frame)"
    )]
    WrongKey,
}

/// Seals and opens payloads under one workspace's payload key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// One frame per packed envelope, all under `header`, each sealed with
    /// a fresh random nonce: how the engine and a beacon put messages on the
    /// wire.
    pub fn seal_frames(
        &self,
        header: Header,
        envelopes: Vec<Vec<u8>>,
        rng: &mut impl rand::Rng,
    ) -> Vec<Frame> {
        envelopes
            .into_iter()
            .map(|envelope| {
                let mut nonce = [0u8; NONCE_LEN];
                rng.fill_bytes(&mut nonce);
                let payload = self.seal(&header, &envelope, nonce);
                Frame { header, payload }
            })
            .collect()
    }

    /// `nonce || ciphertext+tag`, bound to `header`.
    pub fn seal(&self, header: &Header, plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let aad = header.to_bytes();
        let nonce_arr = XNonce::from(nonce);
        let Ok(sealed) = self.cipher.encrypt(
            &nonce_arr,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        ) else {
            // XChaCha20-Poly1305 only fails for messages beyond 256 GiB.
            unreachable!("payloads are capped far below the AEAD's limit");
        };
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of a payload sealed for `header`.
    pub fn open(&self, header: &Header, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(SealError::TooShort { len: sealed.len() });
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let mut nonce_arr = [0u8; NONCE_LEN];
        nonce_arr.copy_from_slice(nonce);
        let aad = header.to_bytes();
        self.cipher
            .decrypt(
                &XNonce::from(nonce_arr),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cue_wire::{FrameKind, PeerId};

    fn header(room: RoomId, sender: u8) -> Header {
        Header {
            kind: FrameKind::Broadcast,
            room,
            sender: PeerId([sender; 16]),
            recipient: PeerId::ZERO,
        }
    }

    #[test]
    fn seals_and_opens_only_under_the_same_key_room_and_sender() {
        let key = WorkspaceKey::from_bytes([7; 32]);
        let other = WorkspaceKey::from_bytes([8; 32]);
        assert_ne!(key.room_id(), other.room_id());
        let h = header(key.room_id(), 1);
        let sealed = key.sealer().seal(&h, b"secret body", [3; NONCE_LEN]);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            key.sealer().open(&h, &sealed).as_deref(),
            Ok(&b"secret body"[..])
        );
        assert_eq!(other.sealer().open(&h, &sealed), Err(SealError::WrongKey));
        let moved = header(other.room_id(), 1);
        assert_eq!(key.sealer().open(&moved, &sealed), Err(SealError::WrongKey));
        let spoofed = header(key.room_id(), 2);
        assert_eq!(
            key.sealer().open(&spoofed, &sealed),
            Err(SealError::WrongKey)
        );
        assert_eq!(
            key.sealer().open(&h, &sealed[..10]),
            Err(SealError::TooShort { len: 10 })
        );
    }

    #[test]
    fn the_room_is_the_hash_of_the_admission_public_key() {
        let key = WorkspaceKey::from_bytes([7; 32]);
        let admission = key.admission_key();
        assert_eq!(
            key.room_id(),
            cue_wire::admission::room_id_for(&admission.public_key())
        );
        assert_eq!(admission.room_id(), key.room_id());
        // Deterministic: every member derives the same pair.
        assert_eq!(
            admission.public_key(),
            WorkspaceKey::from_bytes([7; 32])
                .admission_key()
                .public_key()
        );
        assert_ne!(
            admission.public_key(),
            WorkspaceKey::from_bytes([8; 32])
                .admission_key()
                .public_key()
        );
    }
}
