//! The offline bundle: a workspace's documents in one file, for a USB stick or
//! an email attachment. Importing is a CRDT merge, so a bundle can be imported
//! twice, or bundles in any order, with the same result.
//!
//! Layout (all integers big-endian), documented in `docs/FORMAT.md`:
//!
//! ```text
//! magic   8 bytes  "CUEBNDL1"
//! wsid   16 bytes  workspace id
//! count   u32      number of entries
//! entry:  kind u8 (0 = index, 1 = file), id 16 bytes (zero for the index),
//!         len u64, then len bytes: a standard saved automerge document
//! ```

use crate::limits::{MAX_BUNDLE_BYTES, MAX_BUNDLE_DOCS, MAX_INFLATED_BYTES};
use crate::store::DocKey;
use crate::{FileId, WorkspaceId};

const MAGIC: &[u8; 8] = b"CUEBNDL1";
/// Largest document accepted from a bundle: what one document may inflate
/// to (its automerge bytes are then checked by `crate::guard` before they
/// are merged).
pub const MAX_ENTRY_BYTES: u64 = MAX_INFLATED_BYTES;
/// Bytes of one entry's head: kind, id, length.
const ENTRY_HEAD: usize = 1 + 16 + 8;

/// A decoded bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub workspace: WorkspaceId,
    pub docs: Vec<(DocKey, Vec<u8>)>,
}

/// Why a bundle could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a cue bundle (bad magic bytes); was it made by `cue export`?")]
    NotABundle,
    #[error("bundle is truncated: it ends in the middle of entry {0}")]
    Truncated(usize),
    #[error("bundle entry {0} has unknown kind {1}")]
    UnknownKind(usize, u8),
    #[error("bundle entry {0} claims {1} bytes, over the {MAX_ENTRY_BYTES}-byte limit")]
    TooLarge(usize, u64),
    #[error("bundle has {0} bytes of trailing garbage")]
    Trailing(usize),
    #[error("bundle claims {0} documents, over the limit of {MAX_BUNDLE_DOCS} (MAX_BUNDLE_DOCS)")]
    TooManyDocs(u64),
    #[error("bundle is {0} bytes, over the limit of {MAX_BUNDLE_BYTES} (MAX_BUNDLE_BYTES)")]
    TooBig(u64),
}

impl Bundle {
    /// Serialises the bundle.
    pub fn encode(&self) -> Vec<u8> {
        let total: usize = self.docs.iter().map(|(_, b)| b.len() + 25).sum();
        let mut out = Vec::with_capacity(28 + total);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.workspace.0);
        out.extend_from_slice(&(self.docs.len() as u32).to_be_bytes());
        for (key, bytes) in &self.docs {
            match key {
                DocKey::Index => {
                    out.push(0);
                    out.extend_from_slice(&[0u8; 16]);
                }
                DocKey::File(id) => {
                    out.push(1);
                    out.extend_from_slice(&id.0);
                }
            }
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Parses a bundle, checking every count and length against the limits
    /// and the data actually present before allocating for it.
    pub fn decode(data: &[u8]) -> Result<Bundle, BundleError> {
        if data.len() as u64 > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooBig(data.len() as u64));
        }
        let mut r = Reader { data, pos: 0 };
        if r.take(8).ok_or(BundleError::NotABundle)? != MAGIC {
            return Err(BundleError::NotABundle);
        }
        let mut ws = [0u8; 16];
        ws.copy_from_slice(r.take(16).ok_or(BundleError::NotABundle)?);
        let count = u32::from_be_bytes(r.array().ok_or(BundleError::NotABundle)?);
        if u64::from(count) > MAX_BUNDLE_DOCS {
            return Err(BundleError::TooManyDocs(u64::from(count)));
        }
        let count = count as usize;
        // Every entry takes at least its head: a count the data cannot hold
        // is truncated, whatever it claims.
        let room = (data.len() - r.pos) / ENTRY_HEAD;
        let mut docs = Vec::with_capacity(count.min(room));
        for i in 0..count {
            let kind = r.take(1).ok_or(BundleError::Truncated(i))?[0];
            let mut id = [0u8; 16];
            id.copy_from_slice(r.take(16).ok_or(BundleError::Truncated(i))?);
            let len = u64::from_be_bytes(r.array().ok_or(BundleError::Truncated(i))?);
            if len > MAX_ENTRY_BYTES {
                return Err(BundleError::TooLarge(i, len));
            }
            let bytes = r
                .take(len as usize)
                .ok_or(BundleError::Truncated(i))?
                .to_vec();
            let key = match kind {
                0 => DocKey::Index,
                1 => DocKey::File(FileId(id)),
                k => return Err(BundleError::UnknownKind(i, k)),
            };
            docs.push((key, bytes));
        }
        if r.pos != data.len() {
            return Err(BundleError::Trailing(data.len() - r.pos));
        }
        Ok(Bundle {
            workspace: WorkspaceId(ws),
            docs,
        })
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let b = Bundle {
            workspace: WorkspaceId([7; 16]),
            docs: vec![
                (DocKey::Index, vec![1, 2, 3]),
                (DocKey::File(FileId([9; 16])), vec![]),
            ],
        };
        assert_eq!(Bundle::decode(&b.encode()), Ok(b));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Bundle::decode(b"nope"), Err(BundleError::NotABundle));
        let b = Bundle {
            workspace: WorkspaceId([0; 16]),
            docs: vec![(DocKey::Index, vec![1; 10])],
        };
        let enc = b.encode();
        assert_eq!(
            Bundle::decode(&enc[..enc.len() - 1]),
            Err(BundleError::Truncated(0))
        );
        let mut extra = enc.clone();
        extra.push(0);
        assert_eq!(Bundle::decode(&extra), Err(BundleError::Trailing(1)));
    }

    #[test]
    fn counts_and_sizes_are_bounded_before_allocating() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Bundle::decode(&b),
            Err(BundleError::TooManyDocs(u64::from(u32::MAX)))
        );
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&1000u32.to_be_bytes());
        assert_eq!(Bundle::decode(&b), Err(BundleError::Truncated(0)));
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&1u32.to_be_bytes());
        b.push(1);
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&(MAX_ENTRY_BYTES + 1).to_be_bytes());
        assert_eq!(
            Bundle::decode(&b),
            Err(BundleError::TooLarge(0, MAX_ENTRY_BYTES + 1))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Bundle::decode(&data);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&data);
            let _ = Bundle::decode(&with_magic);
        }
    }
}
