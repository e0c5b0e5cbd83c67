//! Members' own key pairs, and the record that removes a member by rotating
//! the workspace key.
//!
//! Every member holds an X25519 key pair (made at `cue init` / `cue clone`,
//! the secret kept 0600 in `.cuedeck/sync/`) and publishes the public half in
//! the index (`metadata.member_keys`). Removing a member makes a fresh
//! workspace key (so a new room and a new admission key) and seals it to each
//! remaining member's public key: the removed member gets no copy, so it can
//! read nothing written under the new key.
//!
//! A [`Rotation`] record is what carries the sealed copies. It is bound to
//! the workspace key it replaces twice over, so that only someone holding
//! that key (a member of the epoch being closed) can make one: the record is
//! MACed with a key derived from the old workspace key, and each sealed copy's
//! key is derived from both the X25519 shared secret and the old workspace
//! key. A stranger who knows every public key (they are in any bundle) still
//! cannot make a record a member would follow.
//!
//! Record layout (integers big-endian, `str` = `u16 length | UTF-8`):
//! `"CUEROT" | version u8 = 1 | epoch u32 | at_ms i64 | by str | removed str |
//! new room (32) | ephemeral public key (32) | count u16 |
//! (member str | nonce (24) | sealed key (48))* | mac (32)`.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use cue_wire::RoomId;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use super::seal::WorkspaceKey;

/// Bytes of an X25519 key, public or secret.
pub const MEMBER_KEY_LEN: usize = 32;
/// Largest rotation record accepted: about 400 members' sealed copies.
pub const MAX_ROTATION_BYTES: usize = 64 * 1024;
/// Longest member name in a record.
const MAX_NAME_BYTES: usize = 256;
const MAGIC: &[u8; 6] = b"CUEROT";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const SEALED_LEN: usize = 32 + 16;
const MAC_LEN: usize = 32;
const MAC_INFO: &[u8] = b"cuedeck rotation v1 mac";
const SEAL_SALT_INFO: &[u8] = b"cuedeck rotation v1 seal salt";
const SEAL_INFO: &[u8] = b"cuedeck rotation v1 sealed key";

/// A member's secret X25519 key: never leaves its machine.
#[derive(Clone)]
pub struct MemberSecret(x25519_dalek::StaticSecret);

impl std::fmt::Debug for MemberSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberSecret(..)")
    }
}

impl MemberSecret {
    /// A fresh random secret.
    pub fn random(rng: &mut impl rand::Rng) -> Self {
        let mut bytes = [0u8; MEMBER_KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// The secret from its raw bytes (the key file).
    pub fn from_bytes(bytes: [u8; MEMBER_KEY_LEN]) -> Self {
        MemberSecret(x25519_dalek::StaticSecret::from(bytes))
    }

    /// The raw bytes, for the key file.
    pub fn to_bytes(&self) -> [u8; MEMBER_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The public half, published in the index.
    pub fn public(&self) -> MemberPublic {
        MemberPublic(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }
}

/// A member's public X25519 key, as published in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberPublic(pub [u8; MEMBER_KEY_LEN]);

impl MemberPublic {
    /// 64 hex digits, the form kept in the index.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the index's form; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; MEMBER_KEY_LEN];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(MemberPublic(bytes))
    }

    /// A short fingerprint to compare out of band (`cue member list`): the
    /// first 8 bytes of SHA-256 of the key, in groups of four hex digits.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        digest[..8]
            .chunks(2)
            .map(hex::encode)
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Why a rotation record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("malformed rotation record: {0}")]
    Malformed(&'static str),
    #[error("rotation record of {0} bytes, over the limit of {MAX_ROTATION_BYTES}")]
    TooLarge(usize),
    #[error("rotation record not made by a holder of this workspace's current key (its MAC does not verify); ignored")]
    NotFromMember,
    #[error("the rotation record holds no new key for member {0:?}")]
    NotForUs(String),
    #[error("the new key sealed for member {0:?} does not open with this member's key")]
    DoesNotOpen(String),
    #[error("the key sealed in the rotation record does not derive the room the record names")]
    WrongRoom,
}

/// One remaining member's copy of the new workspace key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub member: String,
    nonce: [u8; NONCE_LEN],
    sealed: [u8; SEALED_LEN],
}

/// A key rotation: the workspace moves to a new key (epoch `epoch`), sealed
/// to every member but `removed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// 1 for the first rotation of a workspace, then 2, ...
    pub epoch: u32,
    pub at_ms: i64,
    /// The member who made it.
    pub by: String,
    /// The member who is removed (gets no copy).
    pub removed: String,
    /// The room the new key derives: lets a peer tell it already moved.
    pub new_room: RoomId,
    ephemeral: [u8; MEMBER_KEY_LEN],
    pub sealed: Vec<SealedKey>,
}

impl Rotation {
    /// Makes a rotation away from `old`: a fresh workspace key sealed to each
    /// of `recipients` (the remover included, if it is to follow). Returns
    /// the encoded record and the new key.
    pub fn create(
        old: &WorkspaceKey,
        epoch: u32,
        at_ms: i64,
        by: &str,
        removed: &str,
        recipients: &[(String, MemberPublic)],
        rng: &mut impl rand::Rng,
    ) -> Result<(Vec<u8>, WorkspaceKey), RotationError> {
        let new_key = WorkspaceKey::random(rng);
        let ephemeral = MemberSecret::random(rng);
        let mut rotation = Rotation {
            epoch,
            at_ms,
            by: by.to_string(),
            removed: removed.to_string(),
            new_room: new_key.room_id(),
            ephemeral: ephemeral.public().0,
            sealed: Vec::new(),
        };
        let header = rotation.header()?;
        let salt = old.derive(SEAL_SALT_INFO);
        for (member, public) in recipients {
            check_name(member)?;
            let shared = ephemeral
                .0
                .diffie_hellman(&x25519_dalek::PublicKey::from(public.0));
            let cipher = seal_cipher(&salt, shared.as_bytes(), &rotation.ephemeral, public);
            let mut nonce = [0u8; NONCE_LEN];
            rng.fill_bytes(&mut nonce);
            let aad = entry_aad(&header, member);
            let Ok(ct) = cipher.encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: new_key.as_bytes(),
                    aad: &aad,
                },
            ) else {
                unreachable!("a 32-byte message is far below the AEAD's limit");
            };
            let mut sealed = [0u8; SEALED_LEN];
            if ct.len() != SEALED_LEN {
                unreachable!("XChaCha20-Poly1305 adds exactly a 16-byte tag");
            }
            sealed.copy_from_slice(&ct);
            rotation.sealed.push(SealedKey {
                member: member.clone(),
                nonce,
                sealed,
            });
        }
        let bytes = rotation.encode(old)?;
        if bytes.len() > MAX_ROTATION_BYTES {
            return Err(RotationError::TooLarge(bytes.len()));
        }
        Ok((bytes, new_key))
    }

    /// Reads a record and checks that a holder of `current` made it. Checked
    /// for size before anything is read.
    pub fn decode_verified(
        bytes: &[u8],
        current: &WorkspaceKey,
    ) -> Result<Rotation, RotationError> {
        let rotation = Self::decode(bytes)?;
        let (body, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let want = mac_of(current, body);
        // Constant time: the comparison does not stop at the first difference.
        let diff = want.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(RotationError::NotFromMember);
        }
        Ok(rotation)
    }

    /// Reads a record without checking who made it (to show it, or to read
    /// its epoch and room before choosing the key to check it with).
    pub fn decode(bytes: &[u8]) -> Result<Rotation, RotationError> {
        if bytes.len() > MAX_ROTATION_BYTES {
            return Err(RotationError::TooLarge(bytes.len()));
        }
        if bytes.len() < MAC_LEN {
            return Err(RotationError::Malformed("too short"));
        }
        let mut r = Reader(&bytes[..bytes.len() - MAC_LEN]);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(RotationError::Malformed("not a rotation record"));
        }
        if r.u8()? != VERSION {
            return Err(RotationError::Malformed("unknown version"));
        }
        let epoch = u32::from_be_bytes(r.array()?);
        let at_ms = i64::from_be_bytes(r.array()?);
        let by = r.name()?;
        let removed = r.name()?;
        let new_room = RoomId(r.array()?);
        let ephemeral = r.array()?;
        let count = usize::from(u16::from_be_bytes(r.array()?));
        let mut sealed = Vec::new();
        for _ in 0..count {
            sealed.push(SealedKey {
                member: r.name()?,
                nonce: r.array()?,
                sealed: r.array()?,
            });
        }
        if !r.0.is_empty() {
            return Err(RotationError::Malformed("trailing bytes"));
        }
        if epoch == 0 {
            return Err(RotationError::Malformed("epoch 0"));
        }
        Ok(Rotation {
            epoch,
            at_ms,
            by,
            removed,
            new_room,
            ephemeral,
            sealed,
        })
    }

    /// The new workspace key, as sealed for `member`, opened with its secret.
    /// `old` is the key the record rotates away from.
    pub fn open(
        &self,
        member: &str,
        secret: &MemberSecret,
        old: &WorkspaceKey,
    ) -> Result<WorkspaceKey, RotationError> {
        let entry = self
            .sealed
            .iter()
            .find(|s| s.member == member)
            .ok_or_else(|| RotationError::NotForUs(member.to_string()))?;
        let header = self.header()?;
        let public = secret.public();
        let shared = secret
            .0
            .diffie_hellman(&x25519_dalek::PublicKey::from(self.ephemeral));
        let cipher = seal_cipher(
            &old.derive(SEAL_SALT_INFO),
            shared.as_bytes(),
            &self.ephemeral,
            &public,
        );
        let plain = cipher
            .decrypt(
                &XNonce::from(entry.nonce),
                Payload {
                    msg: &entry.sealed,
                    aad: &entry_aad(&header, member),
                },
            )
            .map_err(|_| RotationError::DoesNotOpen(member.to_string()))?;
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| RotationError::DoesNotOpen(member.to_string()))?;
        let key = WorkspaceKey::from_bytes(bytes);
        if key.room_id() != self.new_room {
            return Err(RotationError::WrongRoom);
        }
        Ok(key)
    }

    /// Everything before the sealed copies: what each copy is bound to.
    fn header(&self) -> Result<Vec<u8>, RotationError> {
        check_name(&self.by)?;
        check_name(&self.removed)?;
        let mut w = Vec::new();
        w.extend_from_slice(MAGIC);
        w.push(VERSION);
        w.extend_from_slice(&self.epoch.to_be_bytes());
        w.extend_from_slice(&self.at_ms.to_be_bytes());
        put_name(&mut w, &self.by);
        put_name(&mut w, &self.removed);
        w.extend_from_slice(self.new_room.as_bytes());
        w.extend_from_slice(&self.ephemeral);
        Ok(w)
    }

    fn encode(&self, old: &WorkspaceKey) -> Result<Vec<u8>, RotationError> {
        let mut w = self.header()?;
        let count =
            u16::try_from(self.sealed.len()).map_err(|_| RotationError::TooLarge(usize::MAX))?;
        w.extend_from_slice(&count.to_be_bytes());
        for s in &self.sealed {
            put_name(&mut w, &s.member);
            w.extend_from_slice(&s.nonce);
            w.extend_from_slice(&s.sealed);
        }
        let mac = mac_of(old, &w);
        w.extend_from_slice(&mac);
        Ok(w)
    }
}

fn check_name(name: &str) -> Result<(), RotationError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(RotationError::Malformed("member name empty or too long"));
    }
    Ok(())
}

fn put_name(w: &mut Vec<u8>, name: &str) {
    // Checked by `check_name`: at most MAX_NAME_BYTES, so it fits a u16.
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    w.extend_from_slice(&len.to_be_bytes());
    w.extend_from_slice(name.as_bytes());
}

fn entry_aad(header: &[u8], member: &str) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(member.as_bytes());
    aad
}

/// HMAC-SHA256 of `body` under a key derived from the workspace key (HKDF's
/// extract step is exactly HMAC with the salt as key).
fn mac_of(key: &WorkspaceKey, body: &[u8]) -> [u8; MAC_LEN] {
    let mac_key = key.derive(MAC_INFO);
    let (prk, _) = Hkdf::<Sha256>::extract(Some(&mac_key), body);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&prk);
    out
}

/// The AEAD that seals one member's copy: its key mixes the X25519 shared
/// secret with the old workspace key, so neither alone opens or forges it.
fn seal_cipher(
    salt: &[u8; 32],
    shared: &[u8; 32],
    ephemeral: &[u8; MEMBER_KEY_LEN],
    recipient: &MemberPublic,
) -> XChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(salt), shared);
    let mut info = SEAL_INFO.to_vec();
    info.extend_from_slice(ephemeral);
    info.extend_from_slice(&recipient.0);
    let mut key = [0u8; 32];
    if hk.expand(&info, &mut key).is_err() {
        unreachable!("32 bytes is a valid HKDF-SHA256 output length");
    }
    XChaCha20Poly1305::new(&key.into())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RotationError> {
        if self.0.len() < n {
            return Err(RotationError::Malformed("ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RotationError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, RotationError> {
        Ok(self.array::<1>()?[0])
    }
    fn name(&mut self) -> Result<String, RotationError> {
        let n = usize::from(u16::from_be_bytes(self.array()?));
        if n == 0 || n > MAX_NAME_BYTES {
            return Err(RotationError::Malformed("member name empty or too long"));
        }
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| RotationError::Malformed("member name is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    type Setup = (
        StdRng,
        WorkspaceKey,
        Vec<(String, MemberSecret)>,
        Vec<(String, MemberPublic)>,
    );

    fn setup() -> Setup {
        let mut rng = StdRng::seed_from_u64(11);
        let old = WorkspaceKey::random(&mut rng);
        let members: Vec<(String, MemberSecret)> = ["alice", "bob", "carol"]
            .iter()
            .map(|n| (n.to_string(), MemberSecret::random(&mut rng)))
            .collect();
        let remaining = members
            .iter()
            .filter(|(n, _)| n != "carol")
            .map(|(n, s)| (n.clone(), s.public()))
            .collect();
        (rng, old, members, remaining)
    }

    #[test]
    fn the_sealed_key_opens_only_for_its_recipient() {
        let (mut rng, old, members, remaining) = setup();
        let (bytes, new_key) = Rotation::create(&old, 1, 5, "alice", "carol", &remaining, &mut rng)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(new_key, old);
        let rotation = Rotation::decode_verified(&bytes, &old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rotation.epoch, rotation.removed.as_str()), (1, "carol"));
        assert_eq!(rotation.new_room, new_key.room_id());
        let secret = |name: &str| {
            members
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| panic!("{name}"))
        };
        for name in ["alice", "bob"] {
            assert_eq!(
                rotation.open(name, &secret(name), &old),
                Ok(new_key.clone())
            );
        }
        // The removed member has no copy, and its secret opens nobody else's.
        assert_eq!(
            rotation.open("carol", &secret("carol"), &old),
            Err(RotationError::NotForUs("carol".into()))
        );
        assert_eq!(
            rotation.open("bob", &secret("carol"), &old),
            Err(RotationError::DoesNotOpen("bob".into()))
        );
        // Nor does a member's own secret open its copy without the old key.
        let stranger_key = WorkspaceKey::random(&mut rng);
        assert_eq!(
            rotation.open("bob", &secret("bob"), &stranger_key),
            Err(RotationError::DoesNotOpen("bob".into()))
        );
    }

    #[test]
    fn a_record_from_a_non_member_or_altered_or_malformed_is_refused() {
        let (mut rng, old, _, remaining) = setup();
        // A stranger knows every public key but not the workspace key.
        let stranger = WorkspaceKey::random(&mut rng);
        let (forged, _) = Rotation::create(&stranger, 1, 5, "alice", "bob", &remaining, &mut rng)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Rotation::decode_verified(&forged, &old),
            Err(RotationError::NotFromMember)
        );
        let (bytes, _) = Rotation::create(&old, 1, 5, "alice", "carol", &remaining, &mut rng)
            .unwrap_or_else(|e| panic!("{e}"));
        // "removed: carol" changed to "removed: alice" (same length).
        let mut altered = bytes.clone();
        let at = altered
            .windows(5)
            .position(|w| w == b"carol")
            .unwrap_or_else(|| panic!("no name"));
        altered[at..at + 5].copy_from_slice(b"alice");
        assert_eq!(
            Rotation::decode_verified(&altered, &old),
            Err(RotationError::NotFromMember)
        );
        for cut in [0, 5, 40, bytes.len() - 1] {
            assert!(Rotation::decode_verified(&bytes[..cut], &old).is_err());
        }
        let huge = vec![0u8; MAX_ROTATION_BYTES + 1];
        assert_eq!(
            Rotation::decode(&huge),
            Err(RotationError::TooLarge(MAX_ROTATION_BYTES + 1))
        );
        let mut garbage = bytes.clone();
        garbage[0] = b'X';
        assert!(matches!(
            Rotation::decode(&garbage),
            Err(RotationError::Malformed(_))
        ));
    }

    #[test]
    fn fingerprints_are_short_and_stable() {
        let key = MemberSecret::from_bytes([3; 32]).public();
        let fp = key.fingerprint();
        assert_eq!(fp.len(), 19);
        assert_eq!(MemberPublic::parse(&key.to_hex()), Some(key));
        assert_eq!(MemberPublic::parse("zz"), None);
    }
}
