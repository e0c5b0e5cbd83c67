//! The messages peers exchange inside sealed payloads, and how they are packed.
//!
//! A sealed payload opens to an envelope: `version u8 | stream u32 | part u32 |
//! parts u32 | data`. The data of all parts of one stream, joined, is a batch of
//! messages, each `kind u8 | length u32 | body`. Batching lets one frame carry
//! the sync messages of hundreds of small documents (the relay limits frames per
//! second, not bytes); parts let one message exceed the relay's frame limit.
//! Integers are big-endian; byte strings and lists carry a u32 length.

use std::collections::{BTreeMap, HashMap};

use cue_wire::PeerId;

use crate::doc::ChangeHash;
use crate::limits::{
    MAX_BATCH_MESSAGES, MAX_HASHES_PER_LIST, MAX_REASSEMBLY_BYTES_PER_PEER,
    MAX_REASSEMBLY_BYTES_TOTAL, MAX_SYNC_REQUEST_DOCS,
};
use crate::store::DocKey;
use crate::FileId;

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// The protocol a peer speaks, announced in its [`Message::Handshake`].
/// 2: whole documents for a peer that lacks them ([`Message::Snapshot`]), and
/// heartbeats that say whether their sender is still catching up.
/// 3: handshakes carry a fresh challenge nonce and echo the other peer's, and
/// a peer counts as present only once it has echoed ours (a replayed
/// handshake makes no ghost).
pub const PROTOCOL: u16 = 3;
/// Bytes of a handshake's challenge nonce.
pub const CHALLENGE_LEN: usize = 16;
/// Envelope bytes before the data.
const ENVELOPE_HEAD: usize = 13;
/// Data bytes per part: a sealed part fits the relay's frame limit with room to spare.
pub const PART_BYTES: usize = cue_wire::MAX_FRAME_BYTES - 1024;
/// Largest batch a peer accepts: a document at the size limits, with margin.
pub const MAX_BATCH_BYTES: usize = 96 * 1024 * 1024;
/// Unfinished streams kept per sender; older ones are dropped (the sync
/// protocol repairs whatever a dropped stream carried).
const MAX_OPEN_STREAMS: usize = 4;

/// One protocol message. The kinds are the seed's; catch-up runs automerge's
/// own sync protocol per document, and only documents whose heads differ
/// between two peers are synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Sent to each peer met (directed): who we are and a digest of every
    /// document's heads, equal only if the replicas are. It is also a
    /// challenge and an answer: `nonce` is fresh for this encounter with the
    /// recipient, `echo` repeats the recipient's latest `nonce` (zero while
    /// none is known). A peer counts the sender as present only once a
    /// handshake echoes the nonce it sent, so a handshake captured earlier and
    /// replayed proves nothing.
    Handshake {
        protocol: u16,
        member: String,
        /// The sender's workspace id; `None` for a peer still joining.
        workspace: Option<[u8; 16]>,
        digest: [u8; 32],
        nonce: [u8; CHALLENGE_LEN],
        echo: [u8; CHALLENGE_LEN],
        /// The recipient has echoed the sender's nonce (is present to it):
        /// when false, the recipient answers even a nonce it answered
        /// already, since that answer was lost.
        proved: bool,
    },
    /// "Here is a short hash of each document's heads; sync the ones that differ."
    /// `full`: sync every document regardless (after a long time offline).
    SyncRequest {
        full: bool,
        entries: Vec<(DocKey, [u8; 8])>,
    },
    /// One automerge sync message for one document.
    SyncResponse { doc: DocKey, sync: Vec<u8> },
    /// A local edit, broadcast at once: the changes after `deps`.
    Change {
        id: u64,
        doc: DocKey,
        deps: Vec<ChangeHash>,
        bytes: Vec<u8>,
    },
    /// Periodic liveness, carrying the digest so a missed message is noticed,
    /// and whether the sender is still catching up (nobody asks it to sync then).
    Heartbeat { digest: [u8; 32], catching_up: bool },
    /// "Change `id` is merged and on my disk": the sender may count it as delivered.
    Ack { id: u64, doc: DocKey },
    /// A whole document (its stored snapshot and chunks, as `load_incremental`
    /// takes them), for a peer whose sync request did not list it: one message
    /// instead of a sync conversation, so a newcomer receives the workspace as
    /// one stream.
    Snapshot { doc: DocKey, bytes: Vec<u8> },
    /// A key rotation record (see [`super::members::Rotation`]), sent by a
    /// peer that has moved to the new key and keeps a beacon in the old
    /// room, to members coming back to that room. Believed only if its MAC
    /// verifies under the key it rotates away from, whoever relays it.
    Rotation { record: Vec<u8> },
}

/// Why a payload could not be read as messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("message ends early (wanted {wanted} more bytes)")]
    Truncated { wanted: usize },
    #[error("envelope version {0} is not supported by this build (it speaks {ENVELOPE_VERSION}); update cue")]
    Version(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("invalid message: {0}")]
    Invalid(&'static str),
    #[error("message of {0} bytes exceeds the limit of {MAX_BATCH_BYTES} bytes")]
    TooLarge(usize),
    #[error("a batch of more than {MAX_BATCH_MESSAGES} messages (MAX_BATCH_MESSAGES)")]
    TooManyMessages,
    #[error("a sync request naming {0} documents, over the limit of {MAX_SYNC_REQUEST_DOCS} (MAX_SYNC_REQUEST_DOCS)")]
    TooManyDocs(usize),
    #[error("a list of {0} change hashes, over the limit of {MAX_HASHES_PER_LIST} (MAX_HASHES_PER_LIST)")]
    TooManyHashes(usize),
    #[error("unfinished streams needing more than {limit} bytes of reassembly memory ({which}); the stream was dropped")]
    ReassemblyFull { which: &'static str, limit: usize },
}

impl MessageError {
    /// Whether the payload was refused for going past a limit rather than for
    /// its form. (A part count too large for any batch is a malformed
    /// envelope, as before.)
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            MessageError::TooManyMessages
                | MessageError::TooManyDocs(_)
                | MessageError::TooManyHashes(_)
                | MessageError::ReassemblyFull { .. }
        )
    }
}

const HANDSHAKE: u8 = 1;
const SYNC_REQUEST: u8 = 2;
const SYNC_RESPONSE: u8 = 3;
const CHANGE: u8 = 4;
const HEARTBEAT: u8 = 5;
const ACK: u8 = 6;
const SNAPSHOT: u8 = 7;
const ROTATION: u8 = 8;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: usize) {
        let v = u32::try_from(v).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len());
        self.0.extend_from_slice(b);
    }
    fn doc(&mut self, key: DocKey) {
        match key {
            DocKey::Index => self.u8(0),
            DocKey::File(id) => {
                self.u8(1);
                self.0.extend_from_slice(&id.0);
            }
        }
    }
    fn hashes(&mut self, hashes: &[ChangeHash]) {
        self.u32(hashes.len());
        for h in hashes {
            self.0.extend_from_slice(&h.0);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if self.0.len() < n {
            return Err(MessageError::Truncated {
                wanted: n - self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, MessageError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<usize, MessageError> {
        Ok(u32::from_be_bytes(self.array()?) as usize)
    }
    fn u64(&mut self) -> Result<u64, MessageError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], MessageError> {
        let n = self.u32()?;
        self.take(n)
    }
    /// A count of items of at least `min_size` bytes each, checked against
    /// what is left so a forged count cannot make us allocate.
    fn count(&mut self, min_size: usize) -> Result<usize, MessageError> {
        let n = self.u32()?;
        if n.saturating_mul(min_size) > self.0.len() {
            return Err(MessageError::Truncated {
                wanted: n.saturating_mul(min_size) - self.0.len(),
            });
        }
        Ok(n)
    }
    fn doc(&mut self) -> Result<DocKey, MessageError> {
        match self.u8()? {
            0 => Ok(DocKey::Index),
            1 => Ok(DocKey::File(FileId(self.array()?))),
            _ => Err(MessageError::Invalid("unknown document key tag")),
        }
    }
    fn hashes(&mut self) -> Result<Vec<ChangeHash>, MessageError> {
        let n = self.count(32)?;
        if n as u64 > MAX_HASHES_PER_LIST {
            return Err(MessageError::TooManyHashes(n));
        }
        (0..n).map(|_| Ok(ChangeHash(self.array()?))).collect()
    }
    fn done(&self) -> Result<(), MessageError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(MessageError::Invalid("trailing bytes after message"))
        }
    }
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Handshake { .. } => HANDSHAKE,
            Message::SyncRequest { .. } => SYNC_REQUEST,
            Message::SyncResponse { .. } => SYNC_RESPONSE,
            Message::Change { .. } => CHANGE,
            Message::Heartbeat { .. } => HEARTBEAT,
            Message::Ack { .. } => ACK,
            Message::Snapshot { .. } => SNAPSHOT,
            Message::Rotation { .. } => ROTATION,
        }
    }

    fn encode_body(&self, w: &mut Writer) {
        match self {
            Message::Handshake {
                protocol,
                member,
                workspace,
                digest,
                nonce,
                echo,
                proved,
            } => {
                w.u16(*protocol);
                w.bytes(member.as_bytes());
                match workspace {
                    Some(id) => {
                        w.u8(1);
                        w.0.extend_from_slice(id);
                    }
                    None => w.u8(0),
                }
                w.0.extend_from_slice(digest);
                w.0.extend_from_slice(nonce);
                w.0.extend_from_slice(echo);
                w.u8(u8::from(*proved));
            }
            Message::SyncRequest { full, entries } => {
                w.u8(u8::from(*full));
                w.u32(entries.len());
                for (doc, hash) in entries {
                    w.doc(*doc);
                    w.0.extend_from_slice(hash);
                }
            }
            Message::SyncResponse { doc, sync } => {
                w.doc(*doc);
                w.bytes(sync);
            }
            Message::Change {
                id,
                doc,
                deps,
                bytes,
            } => {
                w.u64(*id);
                w.doc(*doc);
                w.hashes(deps);
                w.bytes(bytes);
            }
            Message::Heartbeat {
                digest,
                catching_up,
            } => {
                w.0.extend_from_slice(digest);
                w.u8(u8::from(*catching_up));
            }
            Message::Snapshot { doc, bytes } => {
                w.doc(*doc);
                w.bytes(bytes);
            }
            Message::Ack { id, doc } => {
                w.u64(*id);
                w.doc(*doc);
            }
            Message::Rotation { record } => w.bytes(record),
        }
    }

    fn decode_body(kind: u8, body: &[u8]) -> Result<Message, MessageError> {
        let mut r = Reader(body);
        let msg = match kind {
            HANDSHAKE => {
                let protocol = r.u16()?;
                let member = String::from_utf8(r.bytes()?.to_vec())
                    .map_err(|_| MessageError::Invalid("member name is not UTF-8"))?;
                let workspace = match r.u8()? {
                    0 => None,
                    1 => Some(r.array()?),
                    _ => return Err(MessageError::Invalid("bad workspace flag")),
                };
                let digest = r.array()?;
                // Protocol 2 ends here: decoded (nonces zero) so that the
                // engine can say "update cue" instead of "malformed".
                let (nonce, echo, proved) = if protocol < 3 && r.0.is_empty() {
                    ([0; CHALLENGE_LEN], [0; CHALLENGE_LEN], false)
                } else {
                    (r.array()?, r.array()?, r.u8()? != 0)
                };
                Message::Handshake {
                    protocol,
                    member,
                    workspace,
                    digest,
                    nonce,
                    echo,
                    proved,
                }
            }
            SYNC_REQUEST => {
                let full = r.u8()? != 0;
                let n = r.count(9)?;
                if n > MAX_SYNC_REQUEST_DOCS {
                    return Err(MessageError::TooManyDocs(n));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((r.doc()?, r.array()?));
                }
                Message::SyncRequest { full, entries }
            }
            SYNC_RESPONSE => Message::SyncResponse {
                doc: r.doc()?,
                sync: r.bytes()?.to_vec(),
            },
            CHANGE => Message::Change {
                id: r.u64()?,
                doc: r.doc()?,
                deps: r.hashes()?,
                bytes: r.bytes()?.to_vec(),
            },
            HEARTBEAT => Message::Heartbeat {
                digest: r.array()?,
                catching_up: r.u8()? != 0,
            },
            SNAPSHOT => Message::Snapshot {
                doc: r.doc()?,
                bytes: r.bytes()?.to_vec(),
            },
            ACK => Message::Ack {
                id: r.u64()?,
                doc: r.doc()?,
            },
            ROTATION => {
                let record = r.bytes()?;
                if record.len() > super::members::MAX_ROTATION_BYTES {
                    return Err(MessageError::Invalid("rotation record over its size limit"));
                }
                Message::Rotation {
                    record: record.to_vec(),
                }
            }
            other => return Err(MessageError::UnknownKind(other)),
        };
        r.done()?;
        Ok(msg)
    }
}

/// Encodes messages as one batch.
pub fn encode_batch(msgs: &[Message]) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    for m in msgs {
        w.u8(m.kind());
        let mut body = Writer(Vec::new());
        m.encode_body(&mut body);
        w.bytes(&body.0);
    }
    w.0
}

/// Decodes a batch; one bad message refuses the whole batch, and so do more
/// than [`MAX_BATCH_MESSAGES`] messages.
pub fn decode_batch(data: &[u8]) -> Result<Vec<Message>, MessageError> {
    let mut r = Reader(data);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        if out.len() >= MAX_BATCH_MESSAGES {
            return Err(MessageError::TooManyMessages);
        }
        let kind = r.u8()?;
        let body = r.bytes()?;
        out.push(Message::decode_body(kind, body)?);
    }
    Ok(out)
}

/// Splits messages into envelopes (plaintexts of sealed frames): as many
/// messages per envelope as fit, and one message larger than a frame split
/// into parts of one stream. `next_stream` numbers streams per sender.
pub fn pack(msgs: &[Message], next_stream: &mut u32) -> Vec<Vec<u8>> {
    let mut envelopes = Vec::new();
    let mut batch = Vec::new();
    let mut flush = |batch: &mut Vec<u8>, envelopes: &mut Vec<Vec<u8>>| {
        if batch.is_empty() {
            return;
        }
        let parts: Vec<&[u8]> = batch.chunks(PART_BYTES).collect();
        let stream = *next_stream;
        *next_stream = next_stream.wrapping_add(1);
        for (i, part) in parts.iter().enumerate() {
            let mut env = Vec::with_capacity(ENVELOPE_HEAD + part.len());
            env.push(ENVELOPE_VERSION);
            env.extend_from_slice(&stream.to_be_bytes());
            env.extend_from_slice(&(i as u32).to_be_bytes());
            env.extend_from_slice(&(parts.len() as u32).to_be_bytes());
            env.extend_from_slice(part);
            envelopes.push(env);
        }
        batch.clear();
    };
    for m in msgs {
        let one = encode_batch(std::slice::from_ref(m));
        if !batch.is_empty() && batch.len() + one.len() > PART_BYTES {
            flush(&mut batch, &mut envelopes);
        }
        batch.extend_from_slice(&one);
    }
    flush(&mut batch, &mut envelopes);
    envelopes
}

struct Partial {
    parts: u32,
    got: BTreeMap<u32, Vec<u8>>,
    bytes: usize,
}

/// Joins the parts of each sender's streams back into batches, holding at
/// most [`MAX_REASSEMBLY_BYTES_PER_PEER`] for one sender and
/// [`MAX_REASSEMBLY_BYTES_TOTAL`] for all of them.
pub struct Reassembler {
    open: HashMap<PeerId, BTreeMap<u32, Partial>>,
    per_peer: usize,
    total: usize,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::with_limits(MAX_REASSEMBLY_BYTES_PER_PEER, MAX_REASSEMBLY_BYTES_TOTAL)
    }
}

impl Reassembler {
    /// A reassembler with other limits than the product's (for tests).
    pub fn with_limits(per_peer: usize, total: usize) -> Self {
        Reassembler {
            open: HashMap::new(),
            per_peer,
            total,
        }
    }

    /// Bytes held for `peer`'s unfinished streams.
    fn held_by(&self, peer: &PeerId) -> usize {
        self.open
            .get(peer)
            .map(|s| s.values().map(|p| p.bytes).sum())
            .unwrap_or(0)
    }

    /// Bytes held for every sender's unfinished streams.
    fn held(&self) -> usize {
        self.open.keys().map(|p| self.held_by(p)).sum()
    }

    /// Drops `peer`'s oldest unfinished stream other than `keep`; false if it has none.
    fn drop_oldest(&mut self, peer: &PeerId, keep: Option<u32>) -> bool {
        let Some(streams) = self.open.get_mut(peer) else {
            return false;
        };
        // Stream numbers wrap rarely; the lowest is the oldest.
        let Some(oldest) = streams.keys().copied().find(|s| Some(*s) != keep) else {
            return false;
        };
        streams.remove(&oldest);
        if streams.is_empty() {
            self.open.remove(peer);
        }
        true
    }

    /// Makes room for `more` bytes of `from`'s stream `stream`: drops `from`'s
    /// older streams past its own limit, then, past the total, the oldest
    /// stream of whichever sender holds the most (a sender that hoards is
    /// the first to lose). Errs when even that is not enough.
    fn make_room(&mut self, from: PeerId, stream: u32, more: usize) -> Result<(), MessageError> {
        while self.held_by(&from) + more > self.per_peer {
            if !self.drop_oldest(&from, Some(stream)) {
                return Err(MessageError::ReassemblyFull {
                    which: "for this sender",
                    limit: self.per_peer,
                });
            }
        }
        while self.held() + more > self.total {
            let hoarder = self
                .open
                .keys()
                .copied()
                .max_by_key(|p| (self.held_by(p), *p));
            let dropped = match hoarder {
                Some(p) if p == from => self.drop_oldest(&p, Some(stream)),
                Some(p) => self.drop_oldest(&p, None),
                None => false,
            };
            if !dropped {
                return Err(MessageError::ReassemblyFull {
                    which: "for all senders",
                    limit: self.total,
                });
            }
        }
        Ok(())
    }
}

impl Reassembler {
    /// Takes one opened envelope; returns the messages once a batch is complete.
    pub fn push(&mut self, from: PeerId, envelope: &[u8]) -> Result<Vec<Message>, MessageError> {
        let mut r = Reader(envelope);
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(MessageError::Version(version));
        }
        let stream = u32::try_from(r.u32()?).unwrap_or(u32::MAX);
        let part = u32::try_from(r.u32()?).unwrap_or(u32::MAX);
        let parts = u32::try_from(r.u32()?).unwrap_or(u32::MAX);
        let data = r.0;
        if parts == 0 || part >= parts {
            return Err(MessageError::Invalid("part number out of range"));
        }
        if (parts as usize).saturating_mul(PART_BYTES) > MAX_BATCH_BYTES + PART_BYTES {
            return Err(MessageError::TooLarge(
                (parts as usize).saturating_mul(PART_BYTES),
            ));
        }
        if parts == 1 {
            return decode_batch(data);
        }
        let new_part = self
            .open
            .get(&from)
            .and_then(|s| s.get(&stream))
            .is_none_or(|p| !p.got.contains_key(&part));
        if new_part {
            if let Err(e) = self.make_room(from, stream, data.len()) {
                self.forget_stream(&from, stream);
                return Err(e);
            }
        }
        let streams = self.open.entry(from).or_default();
        let partial = streams.entry(stream).or_insert_with(|| Partial {
            parts,
            got: BTreeMap::new(),
            bytes: 0,
        });
        if partial.parts != parts {
            streams.remove(&stream);
            return Err(MessageError::Invalid(
                "parts of one stream disagree on their count",
            ));
        }
        if partial.got.insert(part, data.to_vec()).is_none() {
            partial.bytes += data.len();
        }
        if partial.bytes > MAX_BATCH_BYTES {
            streams.remove(&stream);
            return Err(MessageError::TooLarge(MAX_BATCH_BYTES + 1));
        }
        if partial.got.len() as u32 == partial.parts {
            let Some(done) = streams.remove(&stream) else {
                return Ok(Vec::new());
            };
            let data: Vec<u8> = done.got.into_values().flatten().collect();
            return decode_batch(&data);
        }
        while streams.len() > MAX_OPEN_STREAMS {
            // Stream numbers wrap rarely; dropping the lowest is dropping the oldest.
            let Some(oldest) = streams.keys().next().copied() else {
                break;
            };
            streams.remove(&oldest);
        }
        Ok(Vec::new())
    }

    /// Forgets a peer's unfinished streams (it left the room).
    pub fn forget(&mut self, peer: &PeerId) {
        self.open.remove(peer);
    }

    fn forget_stream(&mut self, peer: &PeerId, stream: u32) {
        if let Some(streams) = self.open.get_mut(peer) {
            streams.remove(&stream);
            if streams.is_empty() {
                self.open.remove(peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        let id = FileId([9; 16]);
        vec![
            Message::Handshake {
                protocol: PROTOCOL,
                member: "ana".into(),
                workspace: Some([8; 16]),
                digest: [1; 32],
                nonce: [2; CHALLENGE_LEN],
                echo: [3; CHALLENGE_LEN],
                proved: true,
            },
            Message::SyncRequest {
                full: true,
                entries: vec![(DocKey::Index, [2; 8]), (DocKey::File(id), [3; 8])],
            },
            Message::SyncResponse {
                doc: DocKey::File(id),
                sync: vec![4; 100],
            },
            Message::Change {
                id: 77,
                doc: DocKey::Index,
                deps: vec![ChangeHash([5; 32])],
                bytes: vec![6; 10],
            },
            Message::Heartbeat {
                digest: [7; 32],
                catching_up: true,
            },
            Message::Snapshot {
                doc: DocKey::Index,
                bytes: vec![1, 2, 3],
            },
            Message::Ack {
                id: 77,
                doc: DocKey::File(id),
            },
            Message::Rotation {
                record: vec![8; 40],
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_in_one_envelope() {
        let msgs = samples();
        let mut stream = 0;
        let envs = pack(&msgs, &mut stream);
        assert_eq!(envs.len(), 1);
        let mut r = Reassembler::default();
        assert_eq!(r.push(PeerId([1; 16]), &envs[0]), Ok(msgs));
    }

    #[test]
    fn a_large_message_is_split_and_joined_in_any_order() {
        let big = Message::SyncResponse {
            doc: DocKey::Index,
            sync: (0..3 * PART_BYTES).map(|i| i as u8).collect(),
        };
        let mut stream = 5;
        let mut envs = pack(std::slice::from_ref(&big), &mut stream);
        assert_eq!(envs.len(), 4);
        assert_eq!(stream, 6);
        assert!(envs.iter().all(|e| e.len() <= PART_BYTES + ENVELOPE_HEAD));
        envs.reverse();
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        for e in &envs {
            got.extend(r.push(PeerId([1; 16]), e).expect("valid part"));
        }
        assert_eq!(got, vec![big]);
    }

    /// Envelope `part` of `parts` of stream `stream`, carrying `len` bytes.
    fn part(stream: u32, part: u32, parts: u32, len: usize) -> Vec<u8> {
        let mut env = vec![ENVELOPE_VERSION];
        env.extend_from_slice(&stream.to_be_bytes());
        env.extend_from_slice(&part.to_be_bytes());
        env.extend_from_slice(&parts.to_be_bytes());
        env.extend(std::iter::repeat_n(0, len));
        env
    }

    #[test]
    fn reassembly_memory_is_bounded_per_sender_and_in_all() {
        let (per_peer, total) = (10_000, 25_000);
        let mut r = Reassembler::with_limits(per_peer, total);
        let ana = PeerId([1; 16]);
        // Ana opens streams of 4,000-byte parts: her oldest give way.
        for stream in 0..4 {
            assert_eq!(r.push(ana, &part(stream, 0, 3, 4_000)), Ok(Vec::new()));
            assert!(r.held_by(&ana) <= per_peer);
        }
        // One stream alone past her limit is refused, not kept.
        assert_eq!(r.push(ana, &part(9, 0, 3, 4_000)), Ok(Vec::new()));
        assert_eq!(r.push(ana, &part(9, 1, 3, 4_000)), Ok(Vec::new()));
        assert!(matches!(
            r.push(ana, &part(9, 2, 3, 4_000)),
            Err(MessageError::ReassemblyFull { .. })
        ));
        assert_eq!(r.held_by(&ana), 0);
        // Many senders: never more than the total, and the biggest holder
        // loses first.
        for p in 0..20u8 {
            let peer = PeerId([p + 10; 16]);
            let _ = r.push(peer, &part(0, 0, 3, 4_000));
            let _ = r.push(peer, &part(0, 1, 3, 4_000));
            assert!(r.held() <= total, "{} bytes held", r.held());
        }
        // A complete stream still comes through.
        let msgs = vec![Message::Heartbeat {
            digest: [3; 32],
            catching_up: false,
        }];
        let data = encode_batch(&msgs);
        let bob = PeerId([2; 16]);
        let mut first = part(5, 0, 2, 0);
        first.extend_from_slice(&data[..10]);
        let mut second = part(5, 1, 2, 0);
        second.extend_from_slice(&data[10..]);
        assert_eq!(r.push(bob, &first), Ok(Vec::new()));
        assert_eq!(r.push(bob, &second), Ok(msgs));
    }

    #[test]
    fn batches_of_too_many_messages_are_refused() {
        let ack = Message::Ack {
            id: 1,
            doc: DocKey::Index,
        };
        let ok = encode_batch(&vec![ack.clone(); MAX_BATCH_MESSAGES]);
        assert_eq!(decode_batch(&ok).map(|m| m.len()), Ok(MAX_BATCH_MESSAGES));
        let over = encode_batch(&vec![ack; MAX_BATCH_MESSAGES + 1]);
        assert_eq!(decode_batch(&over), Err(MessageError::TooManyMessages));
    }

    #[test]
    fn sync_requests_and_hash_lists_are_bounded() {
        let n = MAX_SYNC_REQUEST_DOCS + 1;
        let big = Message::SyncRequest {
            full: false,
            entries: vec![(DocKey::Index, [0; 8]); n],
        };
        let err = decode_batch(&encode_batch(&[big]));
        assert_eq!(err, Err(MessageError::TooManyDocs(n)));
        assert!(err.is_err_and(|e| e.is_limit()));
        let n = MAX_HASHES_PER_LIST as usize + 1;
        let change = Message::Change {
            id: 1,
            doc: DocKey::Index,
            deps: vec![ChangeHash([1; 32]); n],
            bytes: Vec::new(),
        };
        assert_eq!(
            decode_batch(&encode_batch(&[change])),
            Err(MessageError::TooManyHashes(n))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = Reassembler::default();
        let p = PeerId([1; 16]);
        assert!(r.push(p, &[]).is_err());
        assert_eq!(r.push(p, &[9, 0, 0, 0, 0]), Err(MessageError::Version(9)));
        let mut env = vec![ENVELOPE_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        env.extend_from_slice(&[CHANGE, 0, 0, 0, 3, 1, 2, 3]);
        assert!(matches!(
            r.push(p, &env),
            Err(MessageError::Truncated { .. })
        ));
        let mut env = vec![ENVELOPE_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        env.extend_from_slice(&[SYNC_REQUEST, 0, 0, 0, 5, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.push(p, &env),
            Err(MessageError::Truncated { .. })
        ));
        let env = [
            ENVELOPE_VERSION,
            0,
            0,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ];
        assert!(r.push(p, &env).is_err());
    }
}
