//! The peer's durable state in SQLite (`.cuedeck/sync/state.db`).
//!
//! Why SQLite: every recorded edit must survive `kill -9` and power loss, and
//! one recording touches several things at once (a file document, the index,
//! what is on disk). SQLite in WAL mode with `synchronous=FULL` commits a batch
//! atomically and durably in one fsync, and recovers by itself after a crash:
//! a torn write can never leave a half-applied batch. Documents are stored as a
//! compacted snapshot plus appended incremental chunks (see cue-core's store).

use std::collections::BTreeMap;
use std::path::Path;

use cue_core::doc::ChangeHash;
use cue_core::store::{ActivityRow, Batch, BatchOp, DocInfo, DocKey, LocalFile, Store, StoreError};
use cue_core::FileId;
use rusqlite::{params, Connection, OptionalExtension};

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Connection,
    /// Inside [`SqliteStore::begin_bulk`]: batches join one outer transaction.
    bulk: bool,
    /// `PRAGMA data_version` at open, then at the last
    /// [`SqliteStore::changed_by_others`].
    data_version: i64,
}

/// Wraps a database error with what was being done when it failed.
fn db(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database {
        action,
        source: Box::new(e),
    }
}

/// Wraps a file-system error with the operation and the path it concerned.
fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn heads_to_blob(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

fn heads_from_blob(blob: &[u8]) -> Vec<ChangeHash> {
    blob.chunks_exact(32)
        .filter_map(|c| ChangeHash::try_from(c).ok())
        .collect()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS docs (key TEXT PRIMARY KEY, heads BLOB NOT NULL, chunks INTEGER NOT NULL, snapshot_bytes INTEGER NOT NULL DEFAULT 0, chunk_bytes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS doc_chunks (key TEXT NOT NULL, seq INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (key, seq));
CREATE TABLE IF NOT EXISTS local_files (id TEXT PRIMARY KEY, path TEXT NOT NULL, hash BLOB NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, heads BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS activity (change BLOB PRIMARY KEY, time_s INTEGER NOT NULL, actor TEXT NOT NULL, file TEXT, path TEXT NOT NULL, action TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS activity_time ON activity (time_s);
";

/// Makes `.cuedeck/sync/` private: the folder (and any folder in it) 0700,
/// every file in it 0600, whatever the umask. It holds every document (deleted
/// ones too), the workspace key, the daemon's log and status: readable by this
/// user only. Run on every open, so a workspace made by an older `cue` (or
/// under a loose umask) is fixed the next time it is used.
pub fn secure_sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    secure_tree(dir)
}

#[cfg(unix)]
fn secure_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    set_mode(dir, 0o700)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Not followed: a symlink in here is not ours to change.
        let kind = entry.file_type()?;
        if kind.is_dir() {
            secure_tree(&entry.path())?;
        } else if kind.is_file() && entry.metadata()?.permissions().mode() & 0o077 != 0 {
            set_mode(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn secure_tree(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Sets a file's permission bits (Unix), if they differ.
#[cfg(unix)]
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if current != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Options that create a file readable and writable by this user only
/// (mode 0600 from its first byte, not after a `chmod`).
pub fn private_file() -> std::fs::OpenOptions {
    let mut opts = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts
}

impl SqliteStore {
    /// Opens (or creates) the database, recovering from any earlier crash.
    /// The folder is made private first, and the database file is created
    /// 0600: SQLite gives its `-wal` and `-shm` files the database's mode.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            secure_sync_dir(dir).map_err(io("make private", dir))?;
        }
        private_file()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("create", path))?;
        let conn = Connection::open(path).map_err(db("opening state.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db("setting up state.db"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("setting up state.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db("setting up state.db"))?;
        conn.execute_batch(SCHEMA)
            .map_err(db("setting up state.db"))?;
        migrate(&conn)?;
        // The baseline is taken now, so that a commit by another process at
        // any time after this open is noticed by `changed_by_others`.
        let data_version = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db("setting up state.db"))?;
        Ok(SqliteStore {
            conn,
            bulk: false,
            data_version,
        })
    }

    /// Whether another process (a `cue` command while the daemon runs) has
    /// committed since the last call: SQLite's `data_version` changes only for
    /// other connections' commits, so the daemon reloads only when it must.
    pub fn changed_by_others(&mut self) -> Result<bool, StoreError> {
        let v: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db("checking for commits by other processes"))?;
        let changed = self.data_version != v;
        self.data_version = v;
        Ok(changed)
    }

    /// Starts one transaction for many batches (an initial import of thousands
    /// of files): one fsync at [`SqliteStore::end_bulk`] instead of one per file.
    /// A crash before the end loses the whole import, never part of a batch.
    pub fn begin_bulk(&mut self) -> Result<(), StoreError> {
        if !self.bulk {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(db("starting a bulk import"))?;
            self.bulk = true;
        }
        Ok(())
    }

    /// Commits everything since [`SqliteStore::begin_bulk`].
    pub fn end_bulk(&mut self) -> Result<(), StoreError> {
        if self.bulk {
            self.conn
                .execute_batch("COMMIT")
                .map_err(db("committing a bulk import"))?;
            self.bulk = false;
        }
        Ok(())
    }
}

/// Brings a state written by an older `cue` up to this schema.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("PRAGMA table_info(docs)")
        .map_err(db("upgrading its schema"))?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))
        .map_err(db("upgrading its schema"))?
        .collect::<Result<_, _>>()
        .map_err(db("upgrading its schema"))?;
    for col in ["snapshot_bytes", "chunk_bytes"] {
        if !columns.iter().any(|c| c == col) {
            conn.execute_batch(&format!(
                "ALTER TABLE docs ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0"
            ))
            .map_err(db("upgrading its schema"))?;
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    fn load_doc(&mut self, doc: DocKey) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let key = doc.as_string();
        let exists: Option<i64> = self
            .conn
            .query_row("SELECT chunks FROM docs WHERE key = ?1", [&key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db("loading a document"))?;
        if exists.is_none() {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bytes FROM doc_chunks WHERE key = ?1 ORDER BY seq")
            .map_err(db("loading a document"))?;
        let rows = stmt
            .query_map([&key], |r| r.get::<_, Vec<u8>>(0))
            .map_err(db("loading a document"))?;
        Ok(Some(
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(db("loading a document"))?,
        ))
    }

    fn docs(&mut self) -> Result<BTreeMap<DocKey, DocInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, heads, chunks, snapshot_bytes, chunk_bytes FROM docs")
            .map_err(db("listing documents"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(db("listing documents"))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (key, heads, chunks, snapshot_bytes, chunk_bytes) =
                row.map_err(db("listing documents"))?;
            if let Some(k) = DocKey::parse(&key) {
                out.insert(
                    k,
                    DocInfo {
                        heads: heads_from_blob(&heads),
                        chunks,
                        snapshot_bytes: snapshot_bytes.max(0) as u64,
                        chunk_bytes: chunk_bytes.max(0) as u64,
                    },
                );
            }
        }
        Ok(out)
    }

    fn local_files(&mut self) -> Result<BTreeMap<FileId, LocalFile>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, path, hash, size, mtime_ns, heads FROM local_files")
            .map_err(db("reading the recorded files"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .map_err(db("reading the recorded files"))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (id, path, hash, size, mtime_ns, heads) =
                row.map_err(db("reading the recorded files"))?;
            let (Some(id), Ok(hash)) = (FileId::parse(&id), <[u8; 32]>::try_from(hash.as_slice()))
            else {
                continue;
            };
            out.insert(
                id,
                LocalFile {
                    path,
                    hash,
                    size: size as u64,
                    mtime_ns,
                    heads: heads_from_blob(&heads),
                },
            );
        }
        Ok(out)
    }

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(db("reading a stored setting"))
    }

    fn activity(&mut self, since_s: i64) -> Result<Vec<ActivityRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT change, time_s, actor, file, path, action FROM activity WHERE time_s >= ?1 ORDER BY time_s, rowid")
            .map_err(db("reading the activity log"))?;
        let rows = stmt
            .query_map([since_s], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(db("reading the activity log"))?;
        let mut out = Vec::new();
        for row in rows {
            let (change, time_s, actor, file, path, action) =
                row.map_err(db("reading the activity log"))?;
            let Ok(change) = ChangeHash::try_from(change.as_slice()) else {
                continue;
            };
            out.push(ActivityRow {
                change,
                time_s,
                actor,
                file: file.as_deref().and_then(FileId::parse),
                path,
                action,
            });
        }
        Ok(out)
    }

    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.bulk {
            self.conn
                .execute_batch("SAVEPOINT batch")
                .map_err(db("committing a change"))?;
            let result = apply_ops(&self.conn, batch);
            let end = if result.is_ok() {
                "RELEASE batch"
            } else {
                "ROLLBACK TO batch; RELEASE batch"
            };
            self.conn
                .execute_batch(end)
                .map_err(db("committing a change"))?;
            return result;
        }
        let tx = self.conn.transaction().map_err(db("committing a change"))?;
        apply_ops(&tx, batch)?;
        tx.commit().map_err(db("committing a change"))
    }
}

fn apply_ops(tx: &Connection, batch: Batch) -> Result<(), StoreError> {
    {
        for op in batch.ops {
            match op {
                BatchOp::AppendChunk { doc, bytes, heads } => {
                    let key = doc.as_string();
                    let len = bytes.len() as i64;
                    tx.execute(
                        "INSERT INTO doc_chunks (key, seq, bytes) VALUES (?1, (SELECT COALESCE(MAX(seq), -1) + 1 FROM doc_chunks WHERE key = ?1), ?2)",
                        params![key, bytes],
                    )
                    .map_err(db("committing a change"))?;
                    tx.execute(
                        "INSERT INTO docs (key, heads, chunks, chunk_bytes) VALUES (?1, ?2, 1, ?3)
                         ON CONFLICT (key) DO UPDATE SET heads = excluded.heads, chunks = chunks + 1, chunk_bytes = chunk_bytes + ?3",
                        params![key, heads_to_blob(&heads), len],
                    )
                    .map_err(db("committing a change"))?;
                }
                BatchOp::ReplaceDoc {
                    doc,
                    snapshot,
                    heads,
                } => {
                    let key = doc.as_string();
                    let len = snapshot.len() as i64;
                    tx.execute("DELETE FROM doc_chunks WHERE key = ?1", [&key])
                        .map_err(db("committing a change"))?;
                    tx.execute(
                        "INSERT INTO doc_chunks (key, seq, bytes) VALUES (?1, 0, ?2)",
                        params![key, snapshot],
                    )
                    .map_err(db("committing a change"))?;
                    tx.execute(
                        "INSERT INTO docs (key, heads, chunks, snapshot_bytes, chunk_bytes) VALUES (?1, ?2, 0, ?3, 0)
                         ON CONFLICT (key) DO UPDATE SET heads = excluded.heads, chunks = 0, snapshot_bytes = ?3, chunk_bytes = 0",
                        params![key, heads_to_blob(&heads), len],
                    )
                    .map_err(db("committing a change"))?;
                }
                BatchOp::PutLocalFile { id, file } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO local_files (id, path, hash, size, mtime_ns, heads) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![id.to_hex(), file.path, file.hash.to_vec(), file.size as i64, file.mtime_ns, heads_to_blob(&file.heads)],
                    )
                    .map_err(db("committing a change"))?;
                }
                BatchOp::DeleteLocalFile { id } => {
                    tx.execute("DELETE FROM local_files WHERE id = ?1", [id.to_hex()])
                        .map_err(db("committing a change"))?;
                }
                BatchOp::PutMeta { key, value } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                        params![key, value],
                    )
                    .map_err(db("committing a change"))?;
                }
                BatchOp::AddActivity(row) => {
                    tx.execute(
                        "INSERT OR IGNORE INTO activity (change, time_s, actor, file, path, action) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![row.change.0.to_vec(), row.time_s, row.actor, row.file.map(|f| f.to_hex()), row.path, row.action],
                    )
                    .map_err(db("committing a change"))?;
                }
            }
        }
        Ok(())
    }
}

/// Serialises the processes that write one workspace's state: the daemon
/// (per event) and every `cue` command (for its whole run).
///
/// They share the peer's automerge actor, so two processes must never build
/// changes from different in-memory states: each takes this lock, checks
/// whether another process committed meanwhile (and reloads if so), works,
/// commits, and releases. The OS releases the lock (`File::lock`) if the holder
/// dies, so a crash never leaves the workspace locked.
pub struct WriteLock {
    _file: std::fs::File,
}

impl WriteLock {
    /// Waits for the lock on the state in `sync_dir`.
    pub fn acquire(sync_dir: &Path) -> Result<WriteLock, StoreError> {
        let path = sync_dir.join("write.lock");
        let file = private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        loop {
            match file.lock() {
                Ok(()) => return Ok(WriteLock { _file: file }),
                // A signal woke the wait; the lock is still wanted.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("lock", &path)(e)),
            }
        }
    }
}
