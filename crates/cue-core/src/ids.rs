//! Identifiers that name things across peers.

use std::fmt;

/// A file's stable identity: random, assigned at creation, kept across renames.
/// Its automerge document is stored and synced under this id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub [u8; 16]);

/// The workspace's identity, recorded in the index document's metadata.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkspaceId(pub [u8; 16]);

macro_rules! hex_id {
    ($t:ident) => {
        impl $t {
            /// A fresh random id from the caller's RNG (seeded in simulations).
            pub fn random(rng: &mut impl rand::Rng) -> Self {
                let mut bytes = [0u8; 16];
                rng.fill_bytes(&mut bytes);
                $t(bytes)
            }

            /// Parses the 32-character lowercase hex form used in documents.
            pub fn parse(s: &str) -> Option<Self> {
                let mut bytes = [0u8; 16];
                hex::decode_to_slice(s, &mut bytes).ok()?;
                Some($t(bytes))
            }

            /// The 32-character hex form used in documents and storage.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), &self.to_hex()[..8])
            }
        }
    };
}

hex_id!(FileId);
hex_id!(WorkspaceId);
