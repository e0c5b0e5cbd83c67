//! Where a peer keeps what it knows, behind a trait.
//!
//! The product stores to SQLite (in the `cue` crate); the simulator stores in
//! memory and drops uncommitted batches to model a crash. Every mutation goes
//! through one [`Batch`] that is committed atomically, and is committed before
//! anything derived from it is written to the user's files or sent to a peer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::doc::ChangeHash;
use crate::FileId;

/// A document's storage key: the index, or one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocKey {
    Index,
    File(FileId),
}

impl DocKey {
    /// The key as text: `index`, or the file id in hex.
    pub fn as_string(&self) -> String {
        match self {
            DocKey::Index => "index".into(),
            DocKey::File(id) => id.to_hex(),
        }
    }

    /// Parses [`Self::as_string`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "index" {
            Some(DocKey::Index)
        } else {
            FileId::parse(s).map(DocKey::File)
        }
    }
}

/// What is stored of a document besides its bytes: enough to know whether it
/// changed without loading it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocInfo {
    pub heads: Vec<ChangeHash>,
    /// Incremental chunks stored after the snapshot; compacted past a limit.
    pub chunks: u32,
    /// Bytes of the snapshot, and of the chunks after it: a document is
    /// compacted when its chunks outgrow its snapshot.
    pub snapshot_bytes: u64,
    pub chunk_bytes: u64,
}

/// What this peer last wrote to, or read from, the user's disk for one file.
/// A file whose size and mtime still match is not re-read; one whose hash still
/// matches was not edited by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub path: String,
    pub hash: [u8; 32],
    pub size: u64,
    pub mtime_ns: i64,
    /// The document heads whose rendering is what's on disk.
    pub heads: Vec<ChangeHash>,
}

/// One line of the activity log, derived from a document change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRow {
    pub change: ChangeHash,
    pub time_s: i64,
    pub actor: String,
    pub file: Option<FileId>,
    /// The file's path when the change was recorded here.
    pub path: String,
    pub action: String,
}

/// One atomic unit of storage work.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<BatchOp>,
}

/// A single storage operation.
#[derive(Debug)]
pub enum BatchOp {
    /// Append changes to a document (bytes from `save_after`).
    AppendChunk {
        doc: DocKey,
        bytes: Vec<u8>,
        heads: Vec<ChangeHash>,
    },
    /// Replace a document's snapshot and drop its chunks (compaction).
    ReplaceDoc {
        doc: DocKey,
        snapshot: Vec<u8>,
        heads: Vec<ChangeHash>,
    },
    PutLocalFile {
        id: FileId,
        file: LocalFile,
    },
    DeleteLocalFile {
        id: FileId,
    },
    PutMeta {
        key: String,
        value: Vec<u8>,
    },
    AddActivity(ActivityRow),
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn push(&mut self, op: BatchOp) {
        self.ops.push(op);
    }
}

/// Why the peer's durable state could not be read or written. The variant
/// tells a person where to look: the file system (space, permissions) or the
/// database itself. The cause is kept as the error's source, so `{:#}` prints
/// it once, after what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or folder of the state could not be created, opened or locked.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database refused a read or a write (a full disk, a damaged or
    /// read-only database file). Boxed: this crate names no database.
    #[error("the local sync state database failed while {action}")]
    Database {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A peer's durable state.
pub trait Store {
    /// A document's snapshot followed by its chunks, or `None` if unknown.
    fn load_doc(&mut self, doc: DocKey) -> Result<Option<Vec<Vec<u8>>>, StoreError>;
    /// Every stored document with its heads.
    fn docs(&mut self) -> Result<BTreeMap<DocKey, DocInfo>, StoreError>;
    /// What is on disk, per file.
    fn local_files(&mut self) -> Result<BTreeMap<FileId, LocalFile>, StoreError>;
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Activity rows with `time_s >= since_s`, oldest first.
    fn activity(&mut self, since_s: i64) -> Result<Vec<ActivityRow>, StoreError>;
    /// Applies every op of the batch, or none of them.
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError>;
}

/// An in-memory [`Store`] for tests and the simulator.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    docs: BTreeMap<DocKey, (Vec<Vec<u8>>, DocInfo)>,
    files: BTreeMap<FileId, LocalFile>,
    meta: BTreeMap<String, Vec<u8>>,
    activity: BTreeMap<ChangeHash, ActivityRow>,
}

impl Store for MemStore {
    fn load_doc(&mut self, doc: DocKey) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        Ok(self.docs.get(&doc).map(|(c, _)| c.clone()))
    }
    fn docs(&mut self) -> Result<BTreeMap<DocKey, DocInfo>, StoreError> {
        Ok(self
            .docs
            .iter()
            .map(|(k, (_, i))| (*k, i.clone()))
            .collect())
    }
    fn local_files(&mut self) -> Result<BTreeMap<FileId, LocalFile>, StoreError> {
        Ok(self.files.clone())
    }
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key).cloned())
    }
    fn activity(&mut self, since_s: i64) -> Result<Vec<ActivityRow>, StoreError> {
        let mut rows: Vec<ActivityRow> = self
            .activity
            .values()
            .filter(|r| r.time_s >= since_s)
            .cloned()
            .collect();
        rows.sort_by_key(|r| (r.time_s, r.change));
        Ok(rows)
    }
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        for op in batch.ops {
            match op {
                BatchOp::AppendChunk { doc, bytes, heads } => {
                    let entry = self.docs.entry(doc).or_default();
                    entry.1.chunks += 1;
                    entry.1.chunk_bytes += bytes.len() as u64;
                    entry.1.heads = heads;
                    entry.0.push(bytes);
                }
                BatchOp::ReplaceDoc {
                    doc,
                    snapshot,
                    heads,
                } => {
                    let info = DocInfo {
                        heads,
                        chunks: 0,
                        snapshot_bytes: snapshot.len() as u64,
                        chunk_bytes: 0,
                    };
                    self.docs.insert(doc, (vec![snapshot], info));
                }
                BatchOp::PutLocalFile { id, file } => {
                    self.files.insert(id, file);
                }
                BatchOp::DeleteLocalFile { id } => {
                    self.files.remove(&id);
                }
                BatchOp::PutMeta { key, value } => {
                    self.meta.insert(key, value);
                }
                BatchOp::AddActivity(row) => {
                    self.activity.insert(row.change, row);
                }
            }
        }
        Ok(())
    }
}
