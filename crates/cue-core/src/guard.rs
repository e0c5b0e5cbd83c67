//! The inflate guard: bounds what automerge bytes from elsewhere expand to,
//! before automerge sees them.
//!
//! automerge 0.12 inflates a compressed chunk or column into memory without
//! any bound (a 1 MB bundle made `cue import` peak at 3 GB), and its
//! run-length columns can declare billions of operations in a few bytes. This
//! module walks automerge's binary format without materialising it and refuses
//! anything past the limits in [`crate::limits`]:
//!
//! - a stream of chunks (what `load_incremental` takes): each chunk is
//!   `magic (85 6f 4a 83) | checksum 4 | type u8 | length uLEB | data`;
//!   type 0 is a document, 1 a change, 2 a change whose data is raw DEFLATE,
//!   3 an (experimental) automerge bundle, which `cue` never sends and refuses;
//! - a change: dependencies, actor, seq, start op, time, message, other actors,
//!   then column metadata (`count`, `(spec, length)` pairs) and column data;
//! - a document: actors, heads, change-column metadata, op-column metadata,
//!   then the column data (a column whose spec has bit 3 set is raw DEFLATE);
//! - column data by type (`spec & 7`): run-length encoded integers or strings
//!   (`count sLEB`: > 0 a run of one value, < 0 that many literal values,
//!   0 a run of `uLEB` nulls), booleans (alternating run lengths), raw values;
//! - an automerge sync message (`0x42`/`0x43`, heads, needs, haves with bloom
//!   filters, change entries, flags): the counts, the bloom parameters (a
//!   bloom filter with entries and no bits made automerge divide by zero when
//!   it next replied), and every change entry as a stream of chunks.
//!
//! Compressed data is inflated through a streaming decoder with a hard output
//! limit and walked as it comes, so the guard itself holds a few kilobytes,
//! whatever the input. Everything is checked in one pass, linear in the
//! inflated size (itself bounded).

use std::io::Read;

use crate::limits::{
    MAX_BLOOM_BITS_PER_ENTRY, MAX_BLOOM_PROBES, MAX_CHANGES_PER_DOC, MAX_CHANGES_PER_SYNC_MESSAGE,
    MAX_COLUMNS_PER_CHUNK, MAX_EXPANDED_STRING_BYTES, MAX_HASHES_PER_LIST, MAX_INFLATED_BYTES,
    MAX_OPS_PER_DOC, MAX_SYNC_HAVES,
};

/// The first four bytes of every automerge chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Actors named in one chunk. Every peer is one actor, and so is every edit
/// recorded against an older state (a fork); each costs an allocation in
/// automerge, so a list of millions of one-byte actors is an expansion.
pub const MAX_ACTORS_PER_CHUNK: u64 = 1 << 20;

/// Why bytes from elsewhere were refused before automerge saw them. Each
/// message names what was refused and the limit (see `crate::limits`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("refused {what}: it inflates to more than {limit} bytes (MAX_INFLATED_BYTES bounds the memory one document or message may take)")]
    Inflated { what: &'static str, limit: u64 },
    #[error("refused {what}: its columns declare more than {limit} operations (MAX_OPS_PER_DOC; a run-length column can claim billions in a few bytes)")]
    Ops { what: &'static str, limit: u64 },
    #[error("refused {what}: it carries more than {limit} changes (MAX_CHANGES_PER_DOC)")]
    Changes { what: &'static str, limit: u64 },
    #[error("refused {what}: repeated strings in its columns expand to more than {limit} bytes (MAX_EXPANDED_STRING_BYTES)")]
    Strings { what: &'static str, limit: u64 },
    #[error("refused {what}: it lists {count} {items}, over the limit of {limit}")]
    Count {
        what: &'static str,
        items: &'static str,
        count: u64,
        limit: u64,
    },
    #[error("refused {what}: its bloom filter {reason}")]
    Bloom {
        what: &'static str,
        reason: &'static str,
    },
    #[error("refused {what}: {reason}")]
    Malformed {
        what: &'static str,
        reason: &'static str,
    },
    #[error("refused changes: the document would hold {count} {items}, over the limit of {limit}")]
    DocTooLarge {
        items: &'static str,
        count: u64,
        limit: u64,
    },
}

impl LimitError {
    /// Whether the bytes were refused for their form (not automerge's format)
    /// rather than for going past a limit.
    pub fn is_malformed(&self) -> bool {
        matches!(self, LimitError::Malformed { .. })
    }
}

/// What a piece of bytes adds up to once inflated and expanded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Raw bytes plus every compressed part decompressed.
    pub inflated_bytes: u64,
    /// Operations its columns declare.
    pub ops: u64,
    /// Changes (automerge commits) it carries.
    pub changes: u64,
    /// Bytes that runs of repeated strings expand to.
    pub expanded_string_bytes: u64,
}

/// Checks a stream of automerge chunks (saved document, `save_after` output,
/// changes), as passed to automerge's `load_incremental`.
pub fn check_chunks(bytes: &[u8]) -> Result<Usage, LimitError> {
    let mut usage = Usage::default();
    walk_chunks(bytes, &mut usage)?;
    Ok(usage)
}

/// Checks a document stored as several streams of chunks (a snapshot, then
/// incremental chunks), against one budget: together they are one document.
pub fn check_chunk_list(chunks: &[Vec<u8>]) -> Result<Usage, LimitError> {
    let mut usage = Usage::default();
    for c in chunks {
        walk_chunks(c, &mut usage)?;
    }
    Ok(usage)
}

/// Checks an encoded automerge sync message, before `Message::decode` (which
/// allocates per listed item) and before its changes are loaded.
pub fn check_sync_message(bytes: &[u8]) -> Result<Usage, LimitError> {
    const WHAT: &str = "a sync message";
    let mut usage = Usage::default();
    let mut s = Slice::new(bytes, WHAT);
    match s.byte()? {
        Some(0x42) | Some(0x43) => {}
        _ => {
            return Err(malformed(
                WHAT,
                "it does not start with a sync message type (0x42 or 0x43)",
            ))
        }
    }
    skip_hashes(&mut s, WHAT, "heads")?;
    skip_hashes(&mut s, WHAT, "needed changes")?;
    let haves = count(
        &mut s,
        WHAT,
        "bloom filter summaries (haves)",
        MAX_SYNC_HAVES,
    )?;
    for _ in 0..haves {
        skip_hashes(&mut s, WHAT, "last-sync heads")?;
        let len = uleb(&mut s)?;
        check_bloom(s.take(len)?)?;
    }
    let entries = count(&mut s, WHAT, "change entries", MAX_CHANGES_PER_SYNC_MESSAGE)?;
    for _ in 0..entries {
        let len = uleb(&mut s)?;
        let entry = s.take(len)?;
        if entry.is_empty() {
            return Err(malformed(WHAT, "it carries an empty change entry"));
        }
        walk_chunks(entry, &mut usage)?;
    }
    // What follows (the flags) is a few bytes that automerge reads as such.
    Ok(usage)
}

fn malformed(what: &'static str, reason: &'static str) -> LimitError {
    LimitError::Malformed { what, reason }
}

/// A bloom filter as automerge's `BloomFilter::parse` reads it.
fn check_bloom(bytes: &[u8]) -> Result<(), LimitError> {
    const WHAT: &str = "a sync message";
    if bytes.is_empty() {
        return Ok(());
    }
    let mut s = Slice::new(bytes, WHAT);
    let entries = u32_leb(&mut s)?;
    let bits_per_entry = u32_leb(&mut s)?;
    let probes = u32_leb(&mut s)?;
    let bloom = |reason| LimitError::Bloom { what: WHAT, reason };
    if probes > MAX_BLOOM_PROBES {
        return Err(bloom(
            "asks for more probes per entry than MAX_BLOOM_PROBES",
        ));
    }
    if bits_per_entry > MAX_BLOOM_BITS_PER_ENTRY {
        return Err(bloom(
            "uses more bits per entry than MAX_BLOOM_BITS_PER_ENTRY",
        ));
    }
    let bytes_needed = (u64::from(entries) * u64::from(bits_per_entry)).div_ceil(8);
    if entries > 0 && bytes_needed == 0 {
        return Err(bloom(
            "declares entries but no bits (automerge would divide by zero)",
        ));
    }
    if bytes_needed > s.remaining() {
        return Err(bloom("is shorter than its declared size"));
    }
    Ok(())
}

// ---- sources of bytes ----------------------------------------------------------------

/// Sequential bytes, from a slice or from a decompressor.
trait Source {
    /// The next byte, or `None` at the end.
    fn byte(&mut self) -> Result<Option<u8>, LimitError>;
    /// Skips `n` bytes; false if the source ended first.
    fn skip(&mut self, n: u64) -> Result<bool, LimitError>;
    /// What is being checked, for error messages.
    fn what(&self) -> &'static str;
}

struct Slice<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Slice<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Slice { bytes, what }
    }
    fn remaining(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn take(&mut self, n: u64) -> Result<&'a [u8], LimitError> {
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.bytes.len())
            .ok_or_else(|| malformed(self.what, "a length points past its end"))?;
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
}

impl Source for Slice<'_> {
    fn byte(&mut self) -> Result<Option<u8>, LimitError> {
        Ok(self.bytes.split_first().map(|(b, rest)| {
            self.bytes = rest;
            *b
        }))
    }
    fn skip(&mut self, n: u64) -> Result<bool, LimitError> {
        match usize::try_from(n) {
            Ok(n) if n <= self.bytes.len() => {
                self.bytes = &self.bytes[n..];
                Ok(true)
            }
            _ => {
                self.bytes = &[];
                Ok(false)
            }
        }
    }
    fn what(&self) -> &'static str {
        self.what
    }
}

/// Raw DEFLATE data, inflated a buffer at a time; refuses to produce more
/// than `limit` bytes.
struct Inflate<'a> {
    decoder: flate2::bufread::DeflateDecoder<&'a [u8]>,
    buf: Box<[u8; INFLATE_BUF]>,
    pos: usize,
    len: usize,
    produced: u64,
    limit: u64,
    what: &'static str,
}

/// Bytes inflated at a time: the guard's whole working memory for compressed data.
const INFLATE_BUF: usize = 16 * 1024;

impl<'a> Inflate<'a> {
    fn new(data: &'a [u8], limit: u64, what: &'static str) -> Self {
        Inflate {
            decoder: flate2::bufread::DeflateDecoder::new(data),
            buf: Box::new([0; INFLATE_BUF]),
            pos: 0,
            len: 0,
            produced: 0,
            limit,
            what,
        }
    }

    /// Refills the buffer; false at the end of the data.
    fn fill(&mut self) -> Result<bool, LimitError> {
        if self.pos < self.len {
            return Ok(true);
        }
        let n = loop {
            match self.decoder.read(&mut self.buf[..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(malformed(self.what, "its DEFLATE data is corrupt")),
            }
        };
        self.produced += n as u64;
        if self.produced > self.limit {
            return Err(LimitError::Inflated {
                what: self.what,
                limit: MAX_INFLATED_BYTES,
            });
        }
        self.pos = 0;
        self.len = n;
        Ok(n > 0)
    }

    /// Inflates whatever is left (counting it against the limit).
    fn drain(&mut self) -> Result<(), LimitError> {
        while self.fill()? {
            self.pos = self.len;
        }
        Ok(())
    }
}

impl Source for Inflate<'_> {
    fn byte(&mut self) -> Result<Option<u8>, LimitError> {
        if !self.fill()? {
            return Ok(None);
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(Some(b))
    }
    fn skip(&mut self, mut n: u64) -> Result<bool, LimitError> {
        while n > 0 {
            if !self.fill()? {
                return Ok(false);
            }
            let step = (self.len - self.pos).min(usize::try_from(n).unwrap_or(usize::MAX));
            self.pos += step;
            n -= step as u64;
        }
        Ok(true)
    }
    fn what(&self) -> &'static str {
        self.what
    }
}

/// At most `left` bytes of another source: one column's data.
struct Take<'s, S: Source> {
    inner: &'s mut S,
    left: u64,
}

impl<S: Source> Source for Take<'_, S> {
    fn byte(&mut self) -> Result<Option<u8>, LimitError> {
        if self.left == 0 {
            return Ok(None);
        }
        match self.inner.byte()? {
            Some(b) => {
                self.left -= 1;
                Ok(Some(b))
            }
            None => Err(malformed(
                self.what(),
                "a column ends before its declared length",
            )),
        }
    }
    fn skip(&mut self, n: u64) -> Result<bool, LimitError> {
        let step = n.min(self.left);
        if !self.inner.skip(step)? {
            return Err(malformed(
                self.what(),
                "a column ends before its declared length",
            ));
        }
        self.left -= step;
        Ok(step == n)
    }
    fn what(&self) -> &'static str {
        self.inner.what()
    }
}

// ---- LEB128 ----------------------------------------------------------------------------

/// An unsigned LEB128, or `None` if the source is already at its end.
fn uleb_opt<S: Source>(s: &mut S) -> Result<Option<u64>, LimitError> {
    let Some(first) = s.byte()? else {
        return Ok(None);
    };
    let mut value = u64::from(first & 0x7f);
    let mut byte = first;
    let mut shift = 7;
    while byte & 0x80 != 0 {
        byte = s
            .byte()?
            .ok_or_else(|| malformed(s.what(), "a number (LEB128) is cut short"))?;
        let bits = u64::from(byte & 0x7f);
        if shift >= 64 || (shift == 63 && bits > 1) {
            return Err(malformed(
                s.what(),
                "a number (LEB128) is larger than 64 bits",
            ));
        }
        value |= bits << shift;
        shift += 7;
    }
    Ok(Some(value))
}

fn uleb<S: Source>(s: &mut S) -> Result<u64, LimitError> {
    uleb_opt(s)?.ok_or_else(|| malformed(s.what(), "it ends where a number was expected"))
}

fn u32_leb<S: Source>(s: &mut S) -> Result<u32, LimitError> {
    u32::try_from(uleb(s)?)
        .map_err(|_| malformed(s.what(), "a 32-bit number is larger than 32 bits"))
}

/// A signed LEB128, or `None` at the end of the source.
fn sleb_opt<S: Source>(s: &mut S) -> Result<Option<i64>, LimitError> {
    let Some(first) = s.byte()? else {
        return Ok(None);
    };
    let mut value: i64 = i64::from(first & 0x7f);
    let mut byte = first;
    let mut shift = 7;
    while byte & 0x80 != 0 {
        byte = s
            .byte()?
            .ok_or_else(|| malformed(s.what(), "a number (LEB128) is cut short"))?;
        if shift >= 64 {
            return Err(malformed(
                s.what(),
                "a number (LEB128) is larger than 64 bits",
            ));
        }
        value |= i64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    if shift < 64 && byte & 0x40 != 0 {
        value |= -1i64 << shift;
    }
    Ok(Some(value))
}

fn sleb<S: Source>(s: &mut S) -> Result<i64, LimitError> {
    sleb_opt(s)?.ok_or_else(|| malformed(s.what(), "it ends where a number was expected"))
}

/// Skips `n` bytes that must be there.
fn skip_exact<S: Source>(s: &mut S, n: u64) -> Result<(), LimitError> {
    if s.skip(n)? {
        Ok(())
    } else {
        Err(malformed(s.what(), "a length points past its end"))
    }
}

/// A count of items, checked against `limit` before anything is read.
fn count<S: Source>(
    s: &mut S,
    what: &'static str,
    items: &'static str,
    limit: u64,
) -> Result<u64, LimitError> {
    let n = uleb(s)?;
    if n > limit {
        return Err(LimitError::Count {
            what,
            items,
            count: n,
            limit,
        });
    }
    Ok(n)
}

fn skip_hashes<S: Source>(
    s: &mut S,
    what: &'static str,
    items: &'static str,
) -> Result<(), LimitError> {
    let n = count(s, what, items, MAX_HASHES_PER_LIST)?;
    skip_exact(s, n * 32)
}

fn skip_actors<S: Source>(s: &mut S, what: &'static str) -> Result<(), LimitError> {
    let n = count(s, what, "actors", MAX_ACTORS_PER_CHUNK)?;
    for _ in 0..n {
        let len = uleb(s)?;
        skip_exact(s, len)?;
    }
    Ok(())
}

// ---- chunks ----------------------------------------------------------------------------

fn walk_chunks(bytes: &[u8], usage: &mut Usage) -> Result<(), LimitError> {
    let mut s = Slice::new(bytes, "a chunk of changes");
    while s.remaining() > 0 {
        if s.take(4).ok() != Some(&MAGIC[..]) {
            return Err(malformed(
                "a chunk of changes",
                "it is not an automerge chunk (bad magic bytes)",
            ));
        }
        s.take(4)?; // checksum: automerge checks it
        let kind = s.byte()?;
        let len = uleb(&mut s)?;
        let data = s.take(len)?;
        add_inflated(usage, len, "a chunk of changes")?;
        match kind {
            Some(0) => walk_document(data, usage)?,
            Some(1) => {
                let mut src = Slice::new(data, "a change");
                walk_change(&mut src, usage)?;
            }
            Some(2) => {
                const WHAT: &str = "a compressed change";
                let room = MAX_INFLATED_BYTES - usage.inflated_bytes;
                let mut src = Inflate::new(data, room, WHAT);
                walk_change(&mut src, usage)?;
                src.drain()?;
                add_inflated(usage, src.produced, WHAT)?;
            }
            Some(3) => {
                return Err(malformed(
                    "a chunk of changes",
                    "it is an automerge bundle chunk (experimental; cue never sends them)",
                ))
            }
            _ => {
                return Err(malformed(
                    "a chunk of changes",
                    "it has an unknown automerge chunk type",
                ))
            }
        }
    }
    Ok(())
}

fn add_inflated(usage: &mut Usage, n: u64, what: &'static str) -> Result<(), LimitError> {
    usage.inflated_bytes = usage.inflated_bytes.saturating_add(n);
    if usage.inflated_bytes > MAX_INFLATED_BYTES {
        return Err(LimitError::Inflated {
            what,
            limit: MAX_INFLATED_BYTES,
        });
    }
    Ok(())
}

fn add_ops(usage: &mut Usage, n: u64, what: &'static str) -> Result<(), LimitError> {
    usage.ops = usage.ops.saturating_add(n);
    if usage.ops > MAX_OPS_PER_DOC {
        return Err(LimitError::Ops {
            what,
            limit: MAX_OPS_PER_DOC,
        });
    }
    Ok(())
}

fn add_changes(usage: &mut Usage, n: u64, what: &'static str) -> Result<(), LimitError> {
    usage.changes = usage.changes.saturating_add(n);
    if usage.changes > MAX_CHANGES_PER_DOC {
        return Err(LimitError::Changes {
            what,
            limit: MAX_CHANGES_PER_DOC,
        });
    }
    Ok(())
}

/// One column's metadata: `spec` (id << 4 | deflate << 3 | type) and length.
#[derive(Clone, Copy)]
struct Column {
    spec: u32,
    len: u64,
}

impl Column {
    fn id(self) -> u32 {
        self.spec >> 4
    }
    fn kind(self) -> u32 {
        self.spec & 7
    }
    fn deflated(self) -> bool {
        self.spec & 8 != 0
    }
}

const GROUP: u32 = 0;
const BOOLEAN: u32 = 4;
const STRING: u32 = 5;
const VALUE: u32 = 7;

fn read_columns<S: Source>(s: &mut S) -> Result<Vec<Column>, LimitError> {
    let what = s.what();
    let n = count(s, what, "columns", MAX_COLUMNS_PER_CHUNK)?;
    let mut cols = Vec::new();
    for _ in 0..n {
        let spec = u32_leb(s)?;
        let len = uleb(s)?;
        cols.push(Column { spec, len });
    }
    Ok(cols)
}

fn total_len(cols: &[Column], what: &'static str) -> Result<u64, LimitError> {
    cols.iter()
        .try_fold(0u64, |acc, c| acc.checked_add(c.len))
        .ok_or_else(|| malformed(what, "its column lengths overflow"))
}

/// Rows of a set of columns: the most rows of any column not inside a group
/// (a group column's sub-columns have one row per group member, not per row).
fn rows_of(cols: &[Column], rows: &[u64]) -> u64 {
    let grouped: Vec<u32> = cols
        .iter()
        .filter(|c| c.kind() == GROUP)
        .map(|c| c.id())
        .collect();
    cols.iter()
        .zip(rows)
        .filter(|(c, _)| c.kind() == GROUP || !grouped.contains(&c.id()))
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(0)
}

/// A change chunk's data (or the inflated data of a compressed change).
fn walk_change<S: Source>(s: &mut S, usage: &mut Usage) -> Result<(), LimitError> {
    let what = s.what();
    skip_hashes(s, what, "dependencies")?;
    let actor = uleb(s)?;
    skip_exact(s, actor)?;
    uleb(s)?; // seq
    uleb(s)?; // start op
    sleb(s)?; // time
    let message = uleb(s)?;
    skip_exact(s, message)?;
    skip_actors(s, what)?;
    let cols = read_columns(s)?;
    total_len(&cols, what)?;
    let mut rows = Vec::with_capacity(cols.len());
    for c in &cols {
        if c.deflated() {
            // automerge refuses them in changes too.
            return Err(malformed(what, "a change's columns may not be compressed"));
        }
        let mut col = Take {
            inner: &mut *s,
            left: c.len,
        };
        // Reads the column to its end (or fails if the data ends first).
        rows.push(walk_column(&mut col, c.kind(), usage)?);
    }
    add_ops(usage, rows_of(&cols, &rows), what)?;
    add_changes(usage, 1, what)?;
    // Anything after the columns is extra data automerge keeps as bytes.
    while s.skip(INFLATE_BUF as u64)? {}
    Ok(())
}

/// A document chunk's data. Its columns may each be compressed.
fn walk_document(data: &[u8], usage: &mut Usage) -> Result<(), LimitError> {
    const WHAT: &str = "a document";
    let mut s = Slice::new(data, WHAT);
    skip_actors(&mut s, WHAT)?;
    skip_hashes(&mut s, WHAT, "heads")?;
    let change_cols = read_columns(&mut s)?;
    let op_cols = read_columns(&mut s)?;
    let change_data = s.take(total_len(&change_cols, WHAT)?)?;
    let op_data = s.take(total_len(&op_cols, WHAT)?)?;
    // The rest is the heads' indices: a few numbers, not expanded.
    let changes = rows_of(
        &change_cols,
        &walk_columns(&change_cols, change_data, usage)?,
    );
    add_changes(usage, changes, WHAT)?;
    let ops = rows_of(&op_cols, &walk_columns(&op_cols, op_data, usage)?);
    add_ops(usage, ops, WHAT)
}

fn walk_columns(cols: &[Column], data: &[u8], usage: &mut Usage) -> Result<Vec<u64>, LimitError> {
    const WHAT: &str = "a document";
    let mut s = Slice::new(data, WHAT);
    let mut rows = Vec::with_capacity(cols.len());
    for c in cols {
        let bytes = s.take(c.len)?;
        if c.deflated() {
            let room = MAX_INFLATED_BYTES - usage.inflated_bytes;
            let mut src = Inflate::new(bytes, room, WHAT);
            rows.push(walk_column(&mut src, c.kind(), usage)?);
            src.drain()?;
            add_inflated(usage, src.produced, WHAT)?;
        } else {
            rows.push(walk_column(&mut Slice::new(bytes, WHAT), c.kind(), usage)?);
        }
    }
    Ok(rows)
}

/// Counts one column's rows without materialising them; returns them.
fn walk_column<S: Source>(s: &mut S, kind: u32, usage: &mut Usage) -> Result<u64, LimitError> {
    let what = s.what();
    let too_many = || LimitError::Ops {
        what,
        limit: MAX_OPS_PER_DOC,
    };
    let add = |rows: u64, n: u64| {
        rows.checked_add(n)
            .filter(|r| *r <= MAX_OPS_PER_DOC)
            .ok_or_else(too_many)
    };
    let mut rows = 0u64;
    match kind {
        VALUE => {
            // Raw bytes; their lengths are in the value-metadata column.
            while s.skip(INFLATE_BUF as u64)? {}
        }
        BOOLEAN => {
            // Alternating run lengths of false and true.
            while let Some(n) = uleb_opt(s)? {
                rows = add(rows, n)?;
            }
        }
        _ => {
            let mut group_members = 0u64;
            while let Some(run) = sleb_opt(s)? {
                if run > 0 {
                    let n = run.unsigned_abs();
                    rows = add(rows, n)?;
                    let v = value(s, kind)?;
                    if kind == GROUP {
                        group_members = add(group_members, n.saturating_mul(v))?;
                    }
                    if kind == STRING {
                        usage.expanded_string_bytes = usage
                            .expanded_string_bytes
                            .saturating_add(n.saturating_mul(v));
                        if usage.expanded_string_bytes > MAX_EXPANDED_STRING_BYTES {
                            return Err(LimitError::Strings {
                                what,
                                limit: MAX_EXPANDED_STRING_BYTES,
                            });
                        }
                    }
                } else if run < 0 {
                    // Literal values, each at least one byte of input.
                    for _ in 0..run.unsigned_abs() {
                        rows = add(rows, 1)?;
                        let v = value(s, kind)?;
                        if kind == GROUP {
                            group_members = add(group_members, v)?;
                        }
                    }
                } else {
                    rows = add(rows, uleb(s)?)?;
                }
            }
        }
    }
    Ok(rows)
}

/// Reads one value of a run-length column: the string's length for strings,
/// the number for group columns, skipped otherwise.
fn value<S: Source>(s: &mut S, kind: u32) -> Result<u64, LimitError> {
    match kind {
        STRING => {
            let len = uleb(s)?;
            skip_exact(s, len)?;
            Ok(len)
        }
        GROUP => uleb(s),
        _ => {
            // Signed or unsigned: the same bytes to skip.
            sleb(s)?;
            Ok(0)
        }
    }
}
