//! Every size limit on what other peers, relays and bundles send, in one place.
//!
//! A member holds the workspace key and may edit the synced files, but must not
//! be able to exhaust another member's memory, CPU or disk (ARCHITECTURE.md,
//! "Trust boundaries"). So every count and size that arrives from elsewhere is
//! checked against one of these constants *before* it is decoded, inflated or
//! allocated for, and each refusal is a typed error naming the limit.
//! `docs/FORMAT.md` ("Limits") lists them with the reasons below.

/// Bytes one document, one sync message or one set of changes may take once
/// inflated: the raw bytes plus every DEFLATE-compressed part decompressed.
/// Equal to the largest batch a peer accepts on the wire, so compression never
/// lets a peer make us hold more than it could have sent uncompressed. A 1 MB
/// deflate bomb used to inflate to 3 GB inside automerge.
pub const MAX_INFLATED_BYTES: u64 = 96 * 1024 * 1024;

/// Bytes that runs of repeated strings in automerge's columns may expand to,
/// per document or message (a run of a million copies of a long map key costs
/// a few bytes on the wire). Same bound as [`MAX_INFLATED_BYTES`], for the same reason.
pub const MAX_EXPANDED_STRING_BYTES: u64 = MAX_INFLATED_BYTES;

/// Operations in one document, and in one message: what bounds a document's
/// memory. automerge 0.12 holds about 90 bytes per operation (measured: a
/// text of 16 M characters, saved in 16 KB, took 1.47 GB and 19 s to load),
/// so this cap bounds any one document to about 190 MB, whatever its bytes
/// compress to. A [`MAX_FILE_BYTES`] file typed from scratch takes at most
/// half of it; the rest is its history. automerge's run-length columns can
/// declare billions of operations in a few bytes: this caps every column.
pub const MAX_OPS_PER_DOC: u64 = 1 << 21;

/// Largest file recorded (bytes): one operation per character, so at most
/// half of [`MAX_OPS_PER_DOC`]. `cue`'s disk layer skips bigger files with a
/// warning. (A megabyte of Markdown is a book.)
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Changes (automerge commits) in one document's history, and in one message.
/// Every save of a file and every create, rename or delete in the index is one
/// change: about ten times the history of a busy 100,000-file index.
pub const MAX_CHANGES_PER_DOC: u64 = 1 << 20;

/// Change entries in one automerge sync message. automerge sends a whole
/// document instead once a peer needs more than a third of it, so a real list
/// stays far below this; each entry costs an allocation, so a list of a
/// hundred million empty entries (96 MiB) would have cost gigabytes.
pub const MAX_CHANGES_PER_SYNC_MESSAGE: u64 = 1 << 18;

/// Change hashes in one list (a sync message's heads, needs or last-sync, a
/// broadcast change's dependencies). Real lists hold the heads of one
/// document: a handful.
pub const MAX_HASHES_PER_LIST: u64 = 1 << 16;

/// "Have" summaries in one sync message: automerge sends one. Each is checked
/// against every change we hold, so many of them multiply our work.
pub const MAX_SYNC_HAVES: u64 = 16;

/// Probes per bloom filter entry in a sync message (automerge uses 7). Each
/// probe of each of our changes is work and memory in *our* next reply.
pub const MAX_BLOOM_PROBES: u32 = 64;

/// Bits per bloom filter entry in a sync message (automerge uses 10).
pub const MAX_BLOOM_BITS_PER_ENTRY: u32 = 64;

/// Columns in one automerge chunk: automerge writes about fifteen; a list of
/// millions of empty columns would be an allocation per column.
pub const MAX_COLUMNS_PER_CHUNK: u64 = 256;

/// Files (live or deleted) one workspace's index may name: a generous ceiling
/// (the design target is 10,000 notes). An index past it is refused, and so is
/// creating a file past it.
pub const MAX_FILES_PER_WORKSPACE: u64 = 100_000;

/// File documents a peer may hold that the index does not name (yet). File
/// documents are sent before the index entry that names them, so a peer that
/// creates 50,000 files at once legitimately sends 50,000 unnamed documents
/// first; past this many, documents under unknown keys are ignored (the sync
/// protocol fetches them again once the index names them).
pub const MAX_UNNAMED_DOCS: u64 = MAX_FILES_PER_WORKSPACE;

/// Documents one peer may hold: the index, every file, and the unnamed ones.
pub const MAX_DOCS_PER_WORKSPACE: u64 = 1 + MAX_FILES_PER_WORKSPACE + MAX_UNNAMED_DOCS;

/// Entries in one bundle: one per document a workspace may hold.
pub const MAX_BUNDLE_DOCS: u64 = MAX_DOCS_PER_WORKSPACE;

/// Bytes of one bundle file. Importing reads the whole file; 10,000 KiB per
/// file at the 100,000-file ceiling is far beyond real notes (2-5 KB each).
pub const MAX_BUNDLE_BYTES: u64 = 1024 * 1024 * 1024;

/// Messages in one batch (one reassembled stream). A sender packs a frame
/// (256 KiB) with at most about 26,000 of the smallest messages, and a batch of
/// several frames carries one large message; each decoded message costs far
/// more memory than its 10 bytes on the wire, so a 96 MiB batch of tiny
/// messages would have cost about a gigabyte.
pub const MAX_BATCH_MESSAGES: usize = 1 << 16;

/// Documents named in one SyncRequest: every document a peer may hold.
pub const MAX_SYNC_REQUEST_DOCS: usize = MAX_DOCS_PER_WORKSPACE as usize;

/// Bytes of unfinished streams kept for one sender while their parts arrive:
/// one full batch. A sender that starts more is dropped oldest first.
pub const MAX_REASSEMBLY_BYTES_PER_PEER: usize = 96 * 1024 * 1024;

/// Bytes of unfinished streams kept for all senders together: two full
/// batches, instead of 4 × 96 MiB for each of up to 49 senders. Past it, the
/// sender holding the most loses its oldest stream (sync repairs it).
pub const MAX_REASSEMBLY_BYTES_TOTAL: usize = 2 * MAX_REASSEMBLY_BYTES_PER_PEER;

/// Items in one frontmatter list. 100,000 tags render in well under a second;
/// a longer list is treated like frontmatter that does not parse (the file
/// still syncs as text).
pub const MAX_LIST_ITEMS: usize = 1_000_000;

/// Fields in one frontmatter map (top level or nested). Real cards have ten.
pub const MAX_MAP_FIELDS: usize = 10_000;
