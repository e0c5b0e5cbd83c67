//! Room and peer identifiers: fixed-size byte strings, written as lowercase hex.

use std::fmt;
use std::str::FromStr;

use crate::ParseIdError;

/// Identifies a room on the relay.
///
/// Peers derive it from their workspace key, so the relay (which treats it as
/// opaque) cannot learn which workspace a room belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub [u8; 32]);

/// Identifies one peer (one device's replica) inside a room.
///
/// The all-zero id means "nobody": it marks frames from the relay itself and the
/// absent recipient of a broadcast, so no peer may use it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 16]);

impl PeerId {
    /// The reserved "nobody" id, see [`PeerId`].
    pub const ZERO: PeerId = PeerId([0; 16]);

    /// Whether this is the reserved "nobody" id, which no peer may claim.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

/// Shared hex Display/Debug/FromStr for the two id types, which differ only in size.
macro_rules! hex_id {
    ($ty:ident, $len:expr) => {
        impl $ty {
            /// Number of bytes in this id; twice as many hex digits.
            pub const LEN: usize = $len;

            /// The raw bytes, as they appear in the frame header.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl From<[u8; $len]> for $ty {
            fn from(bytes: [u8; $len]) -> Self {
                $ty(bytes)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for byte in self.0 {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($ty))
            }
        }

        impl FromStr for $ty {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut bytes = [0u8; $len];
                decode_hex(s, &mut bytes)?;
                Ok($ty(bytes))
            }
        }
    };
}

hex_id!(RoomId, 32);
hex_id!(PeerId, 16);

/// Fills `out` from exactly `2 * out.len()` hex digits (either case).
fn decode_hex(s: &str, out: &mut [u8]) -> Result<(), ParseIdError> {
    if let Some((index, ch)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(ParseIdError::InvalidChar { index, ch });
    }
    // Only ASCII remains, so the byte length is the digit count.
    let expected = out.len() * 2;
    if s.len() != expected {
        return Err(ParseIdError::WrongLength {
            expected,
            found: s.len(),
        });
    }
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Ok(())
}

/// Value of one ASCII hex digit; the caller has checked it is one.
fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_hex_round_trip() {
        let id = PeerId(*b"0123456789abcdef");
        let text = id.to_string();
        assert_eq!(text, "30313233343536373839616263646566");
        assert_eq!(text.parse::<PeerId>().unwrap(), id);
    }

    #[test]
    fn room_id_hex_round_trip_and_uppercase() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(200);
        }
        let id = RoomId(bytes);
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<RoomId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<RoomId>().unwrap(), id);
    }

    #[test]
    fn debug_shows_type_and_hex() {
        assert_eq!(
            format!("{:?}", PeerId([0xab; 16])),
            format!("PeerId({})", "ab".repeat(16))
        );
    }

    #[test]
    fn wrong_length_is_reported() {
        assert_eq!(
            "abcd".parse::<PeerId>(),
            Err(ParseIdError::WrongLength {
                expected: 32,
                found: 4
            })
        );
        assert_eq!(
            "00".repeat(16).parse::<RoomId>(),
            Err(ParseIdError::WrongLength {
                expected: 64,
                found: 32
            })
        );
        assert_eq!(
            "".parse::<PeerId>(),
            Err(ParseIdError::WrongLength {
                expected: 32,
                found: 0
            })
        );
    }

    #[test]
    fn invalid_char_is_reported_with_position() {
        let mut text = "0".repeat(32);
        text.replace_range(5..6, "g");
        assert_eq!(
            text.parse::<PeerId>(),
            Err(ParseIdError::InvalidChar { index: 5, ch: 'g' })
        );
        assert_eq!(
            "é".parse::<PeerId>(),
            Err(ParseIdError::InvalidChar { index: 0, ch: 'é' })
        );
    }

    #[test]
    fn zero_peer_is_nobody() {
        assert!(PeerId::ZERO.is_zero());
        assert!(!PeerId([1; 16]).is_zero());
    }
}
