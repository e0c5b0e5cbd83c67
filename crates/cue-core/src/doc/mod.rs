//! The CRDT documents, behind a vocabulary of files, paths and fields.
//!
//! A workspace is one [`IndexDoc`] (metadata, members, and per file its id, path
//! and lifecycle) plus one [`FileDoc`] per file (text, frontmatter fields, who
//! changed it last). Why not one document for everything, as the seed sketched?
//! Measured on this 2-core machine (ARCHITECTURE.md): one document holding
//! 10,000 files takes 11.6 s to load, paid by every process start, while a
//! one-file document loads and saves in about 1 ms and only the files a command
//! touches need loading. Renames change the index only, so a file's document
//! (and its history) survives them.
//!
//! automerge stays inside this module: callers never see an `ObjId`, so the CRDT
//! library could change without touching the rest of the code. Both documents
//! are plain automerge documents; `docs/FORMAT.md` describes their schema so
//! another implementation can read them.

/// The storage side shared by both kinds of document (each wraps an `AutoCommit` in `doc`).
macro_rules! impl_storage {
    ($t:ty) => {
        impl $t {
            /// The document's heads: what this peer has seen of it.
            pub fn heads(&mut self) -> Vec<ChangeHash> {
                self.doc.get_heads()
            }

            /// The whole document, compacted.
            pub fn save(&mut self) -> Vec<u8> {
                self.doc.save()
            }

            /// The changes not covered by `heads`, for appending to storage or sending.
            pub fn save_after(&mut self, heads: &[ChangeHash]) -> Vec<u8> {
                self.doc.save_after(heads)
            }

            /// Merges saved bytes or changes from elsewhere; harmless if already
            /// known. All or nothing: bytes that are refused (see
            /// [`merge_untrusted`](crate::doc::merge_untrusted)) leave the document as it was.
            pub fn apply(&mut self, bytes: &[u8]) -> Result<(), DocError> {
                // Bounded before automerge inflates or expands anything.
                let usage = $crate::guard::check_chunks(bytes)?;
                let next = $crate::doc::merge_untrusted(&mut self.doc, |doc| {
                    doc.load_incremental(bytes)?;
                    Ok(())
                })?;
                self.accept(next, usage)
            }

            /// Whether this document holds every change in `heads`.
            pub fn has_all(&mut self, heads: &[ChangeHash]) -> bool {
                heads
                    .iter()
                    .all(|h| self.doc.get_change_by_hash(h).is_some())
            }

            /// The next automerge sync message for the peer whose state is `state`.
            pub fn sync_generate(&mut self, state: &mut $crate::doc::SyncState) -> Option<Vec<u8>> {
                use automerge::sync::SyncDoc;
                self.doc
                    .sync()
                    .generate_sync_message(state)
                    .map(|m| m.encode())
            }

            /// Takes in an automerge sync message from the peer whose state is `state`.
            pub fn sync_receive(
                &mut self,
                state: &mut $crate::doc::SyncState,
                message: &[u8],
            ) -> Result<(), DocError> {
                use automerge::sync::SyncDoc;
                // `Message::decode` allocates per listed item and the changes
                // inflate when loaded: the raw bytes are bounded first.
                let usage = $crate::guard::check_sync_message(message)?;
                // On copies, so that a refused message changes neither.
                let mut next_state = state.clone();
                let next = $crate::doc::merge_untrusted(&mut self.doc, |doc| {
                    let message = automerge::sync::Message::decode(message)
                        .map_err(|_| DocError::BadSyncMessage)?;
                    doc.sync().receive_sync_message(&mut next_state, message)?;
                    Ok(())
                })?;
                self.accept(next, usage)?;
                *state = next_state;
                Ok(())
            }

            /// The history since `heads`, for the activity log.
            pub fn changes_since(&mut self, heads: &[ChangeHash]) -> Vec<$crate::doc::ChangeInfo> {
                $crate::doc::change_infos(&mut self.doc, heads)
            }
        }
    };
}
pub(crate) use impl_storage;

mod file;
mod index;

pub use automerge::sync::State as SyncState;
pub use automerge::ChangeHash;
pub use file::FileDoc;
pub use index::{FileEntry, IndexDoc, Tombstone, Touched, WorkspaceMeta};

use crate::guard::LimitError;
use crate::limits::{MAX_CHANGES_PER_DOC, MAX_OPS_PER_DOC};

/// Something went wrong inside a CRDT document: corrupt bytes, or a document
/// that does not have the shape this version of `cue` writes.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("document bytes are corrupt or not an automerge document: {0}")]
    Corrupt(#[from] automerge::AutomergeError),
    #[error("document is missing its {0:?} field (written by an incompatible peer?)")]
    Shape(&'static str),
    #[error("a peer sent a sync message that does not decode")]
    BadSyncMessage,
    #[error("refused changes from elsewhere: {0}")]
    Refused(String),
    /// Bytes from elsewhere past a size limit (see [`crate::limits`]).
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// The furthest from the Unix epoch, either way, that a change's time (in
/// seconds) may be when it comes from elsewhere. automerge 0.12 keeps change
/// times as deltas in an i64 column and panics ("delta value overflows i64",
/// in hexane 1.0.0-alpha.5's `compute_slab_agg`) when two changes' times
/// differ by more than an i64 holds: one change dated near `i64::MIN` would
/// crash every peer that merged it, or the next commit after it. Within this
/// bound no two times can overflow, and no real clock comes near it.
pub const MAX_CHANGE_TIME_S: i64 = 1 << 62;

/// `doc` after `merge` took in bytes from elsewhere (a peer, a bundle, a
/// relay), or why they were refused; `doc` itself is not touched, so a refusal
/// leaves nothing half-applied. The merge runs on a copy; a panic inside
/// automerge becomes [`DocError::Refused`] instead of taking the process down
/// (the panic hook still prints it), and changes dated beyond
/// [`MAX_CHANGE_TIME_S`] are refused before anything can commit after them.
/// Found by the `bundle_import` fuzz target (fuzz/README.md).
pub(crate) fn merge_untrusted(
    doc: &mut automerge::AutoCommit,
    merge: impl FnOnce(&mut automerge::AutoCommit) -> Result<(), DocError>,
) -> Result<automerge::AutoCommit, DocError> {
    let before = doc.get_heads();
    forget_patches(doc);
    let mut next = doc.clone();
    let merged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| merge(&mut next)));
    forget_patches(&mut next);
    match merged {
        Ok(result) => result?,
        Err(_) => {
            return Err(DocError::Refused(
                "automerge panicked while merging them".into(),
            ))
        }
    }
    check_times(&mut next, &before)?;
    check_size(&next)?;
    Ok(next)
}

/// Refuses changes after `before` dated beyond [`MAX_CHANGE_TIME_S`].
pub(crate) fn check_times(
    doc: &mut automerge::AutoCommit,
    before: &[ChangeHash],
) -> Result<(), DocError> {
    let times = -MAX_CHANGE_TIME_S..=MAX_CHANGE_TIME_S;
    if let Some(bad) = doc
        .get_changes_meta(before)
        .iter()
        .find(|c| !times.contains(&c.timestamp))
    {
        return Err(DocError::Refused(format!(
            "change {} is dated {} s from the Unix epoch, beyond the 2^62 s accepted",
            bad.hash, bad.timestamp
        )));
    }
    Ok(())
}

/// Refuses a document past [`MAX_OPS_PER_DOC`] operations or
/// [`MAX_CHANGES_PER_DOC`] changes: each message is bounded by the guard,
/// this bounds what many of them add up to. O(1): automerge counts both.
pub(crate) fn check_size(doc: &automerge::AutoCommit) -> Result<(), DocError> {
    use automerge::ReadDoc;
    let stats = doc.stats();
    if stats.num_ops > MAX_OPS_PER_DOC {
        return Err(LimitError::DocTooLarge {
            items: "operations",
            count: stats.num_ops,
            limit: MAX_OPS_PER_DOC,
        }
        .into());
    }
    if stats.num_changes > MAX_CHANGES_PER_DOC {
        return Err(LimitError::DocTooLarge {
            items: "changes",
            count: stats.num_changes,
            limit: MAX_CHANGES_PER_DOC,
        }
        .into());
    }
    Ok(())
}

/// Loads stored chunks (a snapshot, then incremental chunks) into `doc`,
/// bounded like bytes from elsewhere: a store can hold what a peer sent.
pub(crate) fn load_chunks(
    doc: &mut automerge::AutoCommit,
    chunks: &[Vec<u8>],
) -> Result<crate::guard::Usage, DocError> {
    let usage = crate::guard::check_chunk_list(chunks)?;
    for c in chunks {
        doc.load_incremental(c)?;
    }
    forget_patches(doc);
    Ok(usage)
}

/// Drops the patch events automerge logged while applying changes. automerge
/// 0.12 records them when merging in a batch even though no diff cursor is
/// set (its log is "inactive"), so without this they pile up for as long as
/// a document stays loaded: memory that grows with every remote edit, and
/// most of the CPU of cloning a document for [`merge_untrusted`] (measured
/// with perf on the latency bench).
pub(crate) fn forget_patches(doc: &mut automerge::AutoCommit) {
    doc.reset_diff_cursor();
}

/// Who makes a change and when: recorded in each automerge change so the
/// activity log can be read from the documents' own history.
#[derive(Debug, Clone)]
pub struct Author<'a> {
    /// The member's display name (from `cue init --name` or the OS user).
    pub member: &'a str,
    /// Wall-clock time in milliseconds since the Unix epoch, supplied by the caller.
    pub now_ms: i64,
}

pub(crate) fn commit(
    doc: &mut automerge::AutoCommit,
    author: &Author<'_>,
    message: String,
) -> Option<ChangeHash> {
    doc.commit_with(
        automerge::transaction::CommitOptions::default()
            .with_message(message)
            .with_time(author.now_ms / 1000),
    )
}

/// Change metadata read back out of a document: the raw material of the activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeInfo {
    pub hash: ChangeHash,
    /// The automerge actor that made it (hex); the index maps actors to members.
    pub actor: String,
    /// Seconds since the Unix epoch, as the author's clock said.
    pub time_s: i64,
    /// What the change did, e.g. "edit" or "rename docs/a.md -> docs/b.md".
    pub message: String,
}

pub(crate) fn change_infos(
    doc: &mut automerge::AutoCommit,
    since: &[ChangeHash],
) -> Vec<ChangeInfo> {
    // Metadata only: building full changes would re-encode every op.
    doc.get_changes_meta(since)
        .into_iter()
        .map(|c| ChangeInfo {
            hash: c.hash,
            actor: c.actor.to_hex_string(),
            time_s: c.timestamp,
            message: c.message.map(|m| m.to_string()).unwrap_or_default(),
        })
        .collect()
}
