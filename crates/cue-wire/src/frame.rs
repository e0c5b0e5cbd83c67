//! Frame kinds, the fixed header, and whole frames (owned and borrowed).

use std::fmt;

use crate::{PeerId, RoomId, WireError, HEADER_LEN, PROTOCOL_VERSION};

const VERSION_AT: usize = 0;
const KIND_AT: usize = 1;
const ROOM: std::ops::Range<usize> = 2..34;
const SENDER: std::ops::Range<usize> = 34..50;
const RECIPIENT: std::ops::Range<usize> = 50..66;

/// What a frame is for, and so who may send it and what its header must hold.
///
/// Peer kinds (`1`, `2`) and Auth (`3`, only as a connection's first frame) are
/// the only ones a relay accepts from clients; relay kinds (`16` and up) are
/// how the relay tells peers about the room and challenges them, so that peers
/// never have to trust each other's claims about membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Peer to every other peer in the room; recipient all zero.
    Broadcast = 1,
    /// Peer to one recipient in the room; silently lost if it is not there.
    Direct = 2,
    /// Client to relay, the first frame of a connection: the answer to the
    /// relay's [`Challenge`](FrameKind::Challenge). Sender is the peer id the
    /// challenge assigned, recipient all zero, payload an
    /// [`AuthProof`](crate::admission::AuthProof) (96 bytes).
    Auth = 3,
    /// Relay to clients: the sender field names the peer that joined.
    PeerJoined = 16,
    /// Relay to clients: the sender field names the peer that left.
    PeerLeft = 17,
    /// Relay to a client that was just admitted; sender all zero, recipient
    /// the peer id the relay assigned to it (zero from relays that assign
    /// none, such as the simulator's), payload the concatenated 16-byte ids of
    /// the peers already in the room.
    Welcome = 18,
    /// Relay to a client that just connected, before anything else: sender
    /// all zero, recipient the peer id the relay assigns to this connection,
    /// payload a fresh random 32-byte nonce to sign.
    Challenge = 19,
}

impl FrameKind {
    /// The kind's byte on the wire.
    pub fn as_byte(self) -> u8 {
        self as u8
    }

    /// Parses a kind byte; `None` for a kind this build does not know.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => FrameKind::Broadcast,
            2 => FrameKind::Direct,
            3 => FrameKind::Auth,
            16 => FrameKind::PeerJoined,
            17 => FrameKind::PeerLeft,
            18 => FrameKind::Welcome,
            19 => FrameKind::Challenge,
            _ => return None,
        })
    }

    /// Whether only the relay may send this kind; the relay refuses such
    /// frames from clients, so a peer cannot fake room membership.
    pub fn is_from_relay(self) -> bool {
        matches!(
            self,
            FrameKind::PeerJoined | FrameKind::PeerLeft | FrameKind::Welcome | FrameKind::Challenge
        )
    }

    /// Whether the sender field must be all zero: the relay's own frames
    /// that are not about a peer.
    fn has_no_sender(self) -> bool {
        matches!(self, FrameKind::Welcome | FrameKind::Challenge)
    }

    /// The exact payload length this kind requires, if it has one.
    pub fn payload_len(self) -> Option<usize> {
        match self {
            FrameKind::Auth => Some(crate::admission::AUTH_PAYLOAD_LEN),
            FrameKind::Challenge => Some(crate::admission::NONCE_LEN),
            _ => None,
        }
    }
}

impl TryFrom<u8> for FrameKind {
    type Error = WireError;

    fn try_from(byte: u8) -> Result<Self, Self::Error> {
        FrameKind::from_byte(byte).ok_or(WireError::UnknownKind(byte))
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameKind::Broadcast => "broadcast",
            FrameKind::Direct => "direct",
            FrameKind::PeerJoined => "peer-joined",
            FrameKind::PeerLeft => "peer-left",
            FrameKind::Welcome => "welcome",
            FrameKind::Auth => "auth",
            FrameKind::Challenge => "challenge",
        })
    }
}

/// The routing part of a frame: everything the relay is allowed to see.
///
/// The version is not stored: only [`PROTOCOL_VERSION`] decodes, and encoding
/// always writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the frame is for.
    pub kind: FrameKind,
    /// Room the frame belongs to.
    pub room: RoomId,
    /// Peer that sent it, or that joined/left; zero for Welcome.
    pub sender: PeerId,
    /// Peer it is for; zero unless `kind` is Direct.
    pub recipient: PeerId,
}

impl Header {
    /// Parses and validates the header at the start of `bytes`, ignoring the
    /// payload; what the relay needs to route a frame without copying it.
    pub fn decode(bytes: &[u8]) -> Result<Header, WireError> {
        let Some(head) = bytes.get(..HEADER_LEN) else {
            return Err(WireError::TooShort { len: bytes.len() });
        };
        if head[VERSION_AT] != PROTOCOL_VERSION {
            return Err(WireError::UnknownVersion(head[VERSION_AT]));
        }
        let kind = FrameKind::try_from(head[KIND_AT])?;
        let header = Header {
            kind,
            room: RoomId(copy_array(&head[ROOM])),
            sender: PeerId(copy_array(&head[SENDER])),
            recipient: PeerId(copy_array(&head[RECIPIENT])),
        };
        header.validate()?;
        Ok(header)
    }

    /// Checks the per-kind rules on sender and recipient, so that each frame
    /// has exactly one meaning: Welcome and Challenge have no sender, every
    /// other kind has one; Direct and Challenge have a recipient, Welcome may
    /// (the peer id the relay assigned), the others have none.
    pub fn validate(&self) -> Result<(), WireError> {
        let kind = self.kind;
        match (kind.has_no_sender(), self.sender.is_zero()) {
            (true, false) => return Err(WireError::UnexpectedSender { kind }),
            (false, true) => return Err(WireError::MissingSender { kind }),
            _ => {}
        }
        match (kind, self.recipient.is_zero()) {
            (FrameKind::Direct | FrameKind::Challenge, true) => {
                Err(WireError::MissingRecipient { kind })
            }
            (FrameKind::Direct | FrameKind::Challenge | FrameKind::Welcome, _) | (_, true) => {
                Ok(())
            }
            (kind, false) => Err(WireError::UnexpectedRecipient { kind }),
        }
    }

    /// The 66 header bytes, ready to be followed by the payload.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[VERSION_AT] = PROTOCOL_VERSION;
        out[KIND_AT] = self.kind.as_byte();
        out[ROOM].copy_from_slice(&self.room.0);
        out[SENDER].copy_from_slice(&self.sender.0);
        out[RECIPIENT].copy_from_slice(&self.recipient.0);
        out
    }
}

/// Copies a slice whose length the caller has fixed by range into an array.
fn copy_array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    out
}

/// A decoded frame that borrows its payload from the input buffer.
///
/// The relay forwards the bytes it received, so it only needs the header and
/// should not copy payloads it cannot read anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The routing header.
    pub header: Header,
    /// The sealed payload (or the peer list of a Welcome).
    pub payload: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// Parses a whole frame without copying; see [`WireError`] for what is
    /// rejected.
    pub fn decode(bytes: &'a [u8]) -> Result<FrameRef<'a>, WireError> {
        let header = Header::decode(bytes)?;
        let payload = &bytes[HEADER_LEN..];
        if header.kind == FrameKind::Welcome && !payload.len().is_multiple_of(PeerId::LEN) {
            return Err(WireError::BadWelcomePayload { len: payload.len() });
        }
        if let Some(expected) = header.kind.payload_len() {
            if payload.len() != expected {
                return Err(WireError::BadPayloadLength {
                    kind: header.kind,
                    len: payload.len(),
                    expected,
                });
            }
        }
        Ok(FrameRef { header, payload })
    }

    /// The peers listed in a Welcome payload; empty for other kinds, whose
    /// payloads are not peer lists.
    pub fn welcome_peers(&self) -> impl Iterator<Item = PeerId> + 'a {
        let payload = if self.header.kind == FrameKind::Welcome {
            self.payload
        } else {
            &[]
        };
        payload
            .chunks_exact(PeerId::LEN)
            .map(|chunk| PeerId(copy_array(chunk)))
    }

    /// An owned copy, for callers that keep the frame past the input buffer.
    pub fn to_frame(&self) -> Frame {
        Frame {
            header: self.header,
            payload: self.payload.to_vec(),
        }
    }
}

/// A frame that owns its payload: what peers build and encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The routing header.
    pub header: Header,
    /// The sealed payload (or the peer list of a Welcome).
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame for every other peer in the room.
    pub fn broadcast(room: RoomId, sender: PeerId, payload: Vec<u8>) -> Frame {
        Frame::with(FrameKind::Broadcast, room, sender, PeerId::ZERO, payload)
    }

    /// A frame for one peer in the room.
    pub fn direct(room: RoomId, sender: PeerId, recipient: PeerId, payload: Vec<u8>) -> Frame {
        Frame::with(FrameKind::Direct, room, sender, recipient, payload)
    }

    /// The relay's notice that `peer` joined the room.
    pub fn peer_joined(room: RoomId, peer: PeerId) -> Frame {
        Frame::with(FrameKind::PeerJoined, room, peer, PeerId::ZERO, Vec::new())
    }

    /// The relay's notice that `peer` left the room.
    pub fn peer_left(room: RoomId, peer: PeerId) -> Frame {
        Frame::with(FrameKind::PeerLeft, room, peer, PeerId::ZERO, Vec::new())
    }

    /// A greeting listing the peers already in the room, that assigns no peer
    /// id (what a model relay without admission, such as the simulator's, sends).
    pub fn welcome(room: RoomId, peers: &[PeerId]) -> Frame {
        Frame::welcome_for(room, PeerId::ZERO, peers)
    }

    /// The relay's greeting to a connection it just admitted as `you`, listing
    /// the peers already there.
    pub fn welcome_for(room: RoomId, you: PeerId, peers: &[PeerId]) -> Frame {
        let payload = peers.iter().flat_map(|p| p.0).collect();
        Frame::with(FrameKind::Welcome, room, PeerId::ZERO, you, payload)
    }

    pub(crate) fn with(
        kind: FrameKind,
        room: RoomId,
        sender: PeerId,
        recipient: PeerId,
        payload: Vec<u8>,
    ) -> Frame {
        Frame {
            header: Header {
                kind,
                room,
                sender,
                recipient,
            },
            payload,
        }
    }

    /// Parses a whole frame into an owned copy; see [`FrameRef::decode`] to
    /// avoid the copy.
    pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
        FrameRef::decode(bytes).map(|frame| frame.to_frame())
    }

    /// Header followed by payload, the bytes that go in one WebSocket message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Size of [`Frame::encode`]'s output, to check limits before encoding.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// A borrowed view, to share code with decoded frames.
    pub fn as_frame_ref(&self) -> FrameRef<'_> {
        FrameRef {
            header: self.header,
            payload: &self.payload,
        }
    }

    /// The peers listed in a Welcome payload; empty for other kinds.
    pub fn welcome_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.as_frame_ref().welcome_peers()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{MAX_ENCODED_FRAME_BYTES, MAX_FRAME_BYTES};

    const ROOM_ID: RoomId = RoomId([7; 32]);
    const ALICE: PeerId = PeerId([1; 16]);
    const BOB: PeerId = PeerId([2; 16]);

    fn all_kinds() -> [FrameKind; 7] {
        [
            FrameKind::Broadcast,
            FrameKind::Direct,
            FrameKind::Auth,
            FrameKind::PeerJoined,
            FrameKind::PeerLeft,
            FrameKind::Welcome,
            FrameKind::Challenge,
        ]
    }

    /// A header of `kind` that satisfies the per-kind rules.
    fn valid_header(kind: FrameKind) -> Header {
        Header {
            kind,
            room: ROOM_ID,
            sender: if kind.has_no_sender() {
                PeerId::ZERO
            } else {
                ALICE
            },
            recipient: if matches!(kind, FrameKind::Direct | FrameKind::Challenge) {
                BOB
            } else {
                PeerId::ZERO
            },
        }
    }

    #[test]
    fn layout_matches_the_spec() {
        let frame = Frame::direct(ROOM_ID, ALICE, BOB, b"sealed".to_vec());
        let bytes = frame.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 6);
        assert_eq!(bytes[0], 2);
        assert_eq!(bytes[1], 2);
        assert_eq!(&bytes[2..34], &[7; 32]);
        assert_eq!(&bytes[34..50], &[1; 16]);
        assert_eq!(&bytes[50..66], &[2; 16]);
        assert_eq!(&bytes[66..], b"sealed");
    }

    #[test]
    fn round_trips_every_constructor() {
        let frames = [
            Frame::broadcast(ROOM_ID, ALICE, vec![1, 2, 3]),
            Frame::broadcast(ROOM_ID, ALICE, Vec::new()),
            Frame::direct(ROOM_ID, ALICE, BOB, vec![9; 1000]),
            Frame::peer_joined(ROOM_ID, BOB),
            Frame::peer_left(ROOM_ID, BOB),
            Frame::welcome(ROOM_ID, &[]),
            Frame::welcome(ROOM_ID, &[ALICE, BOB]),
            Frame::welcome_for(ROOM_ID, ALICE, &[BOB]),
            Frame::with(
                FrameKind::Challenge,
                ROOM_ID,
                PeerId::ZERO,
                BOB,
                vec![3; 32],
            ),
            Frame::with(FrameKind::Auth, ROOM_ID, BOB, PeerId::ZERO, vec![4; 96]),
            Frame::broadcast(ROOM_ID, ALICE, vec![0xff; MAX_FRAME_BYTES]),
        ];
        for frame in frames {
            let bytes = frame.encode();
            assert_eq!(bytes.len(), frame.encoded_len());
            assert_eq!(Frame::decode(&bytes).unwrap(), frame);
            let borrowed = FrameRef::decode(&bytes).unwrap();
            assert_eq!(borrowed, frame.as_frame_ref());
            assert_eq!(Header::decode(&bytes).unwrap(), frame.header);
        }
    }

    #[test]
    fn largest_frame_constant_is_header_plus_payload() {
        assert_eq!(MAX_ENCODED_FRAME_BYTES, 66 + 256 * 1024);
    }

    #[test]
    fn welcome_lists_peers_in_order() {
        let frame = Frame::welcome(ROOM_ID, &[BOB, ALICE]);
        let bytes = frame.encode();
        let decoded = FrameRef::decode(&bytes).unwrap();
        assert_eq!(
            decoded.welcome_peers().collect::<Vec<_>>(),
            vec![BOB, ALICE]
        );
        assert!(decoded.header.sender.is_zero());
        // Other kinds' payloads are not peer lists.
        let other = Frame::broadcast(ROOM_ID, ALICE, vec![3; 32]);
        assert_eq!(other.welcome_peers().count(), 0);
    }

    #[test]
    fn kind_bytes_round_trip() {
        for kind in all_kinds() {
            assert_eq!(FrameKind::from_byte(kind.as_byte()), Some(kind));
            assert_eq!(FrameKind::try_from(kind.as_byte()), Ok(kind));
        }
        assert_eq!(
            [1, 2, 3, 16, 17, 18, 19],
            all_kinds().map(FrameKind::as_byte),
            "wire values are part of the protocol"
        );
        assert!(!FrameKind::Broadcast.is_from_relay());
        assert!(!FrameKind::Direct.is_from_relay());
        assert!(FrameKind::Welcome.is_from_relay());
        assert!(FrameKind::Challenge.is_from_relay());
        assert!(!FrameKind::Auth.is_from_relay());
    }

    #[test]
    fn too_short_is_rejected_at_every_length() {
        let bytes = Frame::broadcast(ROOM_ID, ALICE, Vec::new()).encode();
        for len in 0..HEADER_LEN {
            assert_eq!(
                FrameRef::decode(&bytes[..len]),
                Err(WireError::TooShort { len })
            );
        }
        assert!(FrameRef::decode(&bytes[..HEADER_LEN]).is_ok());
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = Frame::broadcast(ROOM_ID, ALICE, vec![1]).encode();
        for version in [0u8, 1, 3, 255] {
            bytes[0] = version;
            assert_eq!(
                Frame::decode(&bytes),
                Err(WireError::UnknownVersion(version))
            );
        }
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let mut bytes = Frame::broadcast(ROOM_ID, ALICE, vec![1]).encode();
        for kind in (0u8..=255).filter(|b| FrameKind::from_byte(*b).is_none()) {
            bytes[1] = kind;
            assert_eq!(Frame::decode(&bytes), Err(WireError::UnknownKind(kind)));
        }
    }

    #[test]
    fn missing_sender_is_rejected_except_for_welcome_and_challenge() {
        for kind in all_kinds() {
            let header = Header {
                sender: PeerId::ZERO,
                ..valid_header(kind)
            };
            let result = Header::decode(&header.to_bytes());
            if matches!(kind, FrameKind::Welcome | FrameKind::Challenge) {
                assert!(result.is_ok());
            } else {
                assert_eq!(result, Err(WireError::MissingSender { kind }));
            }
        }
    }

    #[test]
    fn welcome_or_challenge_with_a_sender_is_rejected() {
        // Found by the wire_frame fuzz target (fuzz/README.md): a Welcome whose
        // sender had one non-zero byte decoded, and re-encoding it with
        // `Frame::welcome` (which writes the zero sender) gave other bytes.
        let mut bytes = Frame::welcome(ROOM_ID, &[ALICE, BOB]).encode();
        bytes[38] = 0x80;
        let kind = FrameKind::Welcome;
        assert_eq!(
            Frame::decode(&bytes),
            Err(WireError::UnexpectedSender { kind })
        );
        assert_eq!(
            Header::decode(&bytes),
            Err(WireError::UnexpectedSender { kind })
        );
        for kind in [FrameKind::Welcome, FrameKind::Challenge] {
            let header = Header {
                sender: ALICE,
                ..valid_header(kind)
            };
            assert_eq!(header.validate(), Err(WireError::UnexpectedSender { kind }));
        }
    }

    #[test]
    fn direct_or_challenge_without_recipient_is_rejected() {
        let frame = Frame::direct(ROOM_ID, ALICE, PeerId::ZERO, vec![1]);
        assert_eq!(
            Frame::decode(&frame.encode()),
            Err(WireError::MissingRecipient {
                kind: FrameKind::Direct
            })
        );
        let challenge = Header {
            recipient: PeerId::ZERO,
            ..valid_header(FrameKind::Challenge)
        };
        assert_eq!(
            challenge.validate(),
            Err(WireError::MissingRecipient {
                kind: FrameKind::Challenge
            })
        );
    }

    #[test]
    fn recipient_only_where_the_kind_has_one() {
        for kind in all_kinds() {
            let header = Header {
                recipient: BOB,
                ..valid_header(kind)
            };
            let result = Header::decode(&header.to_bytes());
            if matches!(
                kind,
                FrameKind::Direct | FrameKind::Challenge | FrameKind::Welcome
            ) {
                assert!(result.is_ok(), "{kind}");
            } else {
                assert_eq!(result, Err(WireError::UnexpectedRecipient { kind }));
            }
        }
    }

    #[test]
    fn welcome_may_name_the_assigned_peer() {
        let frame = Frame::welcome_for(ROOM_ID, BOB, &[ALICE]);
        let decoded = Frame::decode(&frame.encode()).unwrap();
        assert_eq!(decoded.header.recipient, BOB);
        assert_eq!(decoded.welcome_peers().collect::<Vec<_>>(), vec![ALICE]);
    }

    #[test]
    fn fixed_size_payloads_are_checked() {
        for (kind, good) in [(FrameKind::Challenge, 32), (FrameKind::Auth, 96)] {
            let header = valid_header(kind);
            for len in [0, good - 1, good + 1] {
                let frame = Frame {
                    header,
                    payload: vec![1; len],
                };
                assert_eq!(
                    Frame::decode(&frame.encode()),
                    Err(WireError::BadPayloadLength {
                        kind,
                        len,
                        expected: good
                    })
                );
                // Routing needs only the header.
                assert!(Header::decode(&frame.encode()).is_ok());
            }
            let frame = Frame {
                header,
                payload: vec![1; good],
            };
            assert!(Frame::decode(&frame.encode()).is_ok());
        }
    }

    #[test]
    fn ragged_welcome_payload_is_rejected() {
        let mut frame = Frame::welcome(ROOM_ID, &[ALICE]);
        frame.payload.push(0);
        assert_eq!(
            Frame::decode(&frame.encode()),
            Err(WireError::BadWelcomePayload { len: 17 })
        );
        // The header alone is fine: routing does not look at the payload.
        assert!(Header::decode(&frame.encode()).is_ok());
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            WireError::TooShort { len: 3 }.to_string(),
            "frame is 3 bytes, shorter than the 66-byte header"
        );
        assert_eq!(
            WireError::UnexpectedRecipient {
                kind: FrameKind::Broadcast
            }
            .to_string(),
            "broadcast frame carries a recipient; only direct, challenge and welcome frames may"
        );
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        // A cheap deterministic sweep standing in for a fuzz target: mutate
        // every header byte of a valid frame through a spread of values.
        let base = Frame::direct(ROOM_ID, ALICE, BOB, vec![5; 20]).encode();
        for at in 0..HEADER_LEN + 2 {
            for value in [0u8, 1, 2, 3, 16, 17, 18, 19, 0x7f, 0xff] {
                let mut bytes = base.clone();
                bytes[at] = value;
                let _ = FrameRef::decode(&bytes);
                let _ = FrameRef::decode(&bytes[..at]);
            }
        }
    }
}
