//! The stored form of a Redis value: the payload, then a trailer.
//!
//! ```text
//! payload | deadline (8 bytes, big-endian i64 Unix ms; only if flagged) | tag (1 byte)
//! tag = kind << 1 | has_deadline        kind 0: string; 1..=127 reserved
//! ```
//!
//! The deadline is absolute, so a TTL survives a restart. The trailer sits
//! after the payload so that reading a value back is a truncate (no copy)
//! and APPEND extends in place. Kinds other than string are reserved for
//! later Redis types: string commands read them as WRONGTYPE, and key
//! commands (DEL, EXISTS, EXPIRE, TTL) work on them as on any key.

use thiserror::Error;

/// Bytes of the deadline field.
const DEADLINE: usize = 8;

/// The most bytes the trailer adds to a payload: a stored value may be
/// this much longer than the longest string (the engine's value bound
/// must allow for it).
pub const MAX_TRAILER: usize = DEADLINE + 1;

/// The tag's has-deadline bit.
const HAS_DEADLINE: u8 = 1;

/// The kind of a stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Redis string.
    String,
    /// A kind this layer does not know (a later Redis type).
    Other(u8),
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::String => 0,
            Kind::Other(k) => k & 0x7f,
        }
    }
}

/// A decoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub kind: Kind,
    /// When the key expires, in Unix milliseconds.
    pub deadline: Option<i64>,
    pub payload: Vec<u8>,
}

/// A stored value that cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValueError {
    /// No tag byte.
    #[error("stored value is empty")]
    Empty,
    /// The tag announces a deadline the value is too short to hold.
    #[error("stored value of {len} bytes is too short for its deadline")]
    Short { len: usize },
}

impl Value {
    /// A string value.
    pub fn string(payload: Vec<u8>, deadline: Option<i64>) -> Self {
        Value {
            kind: Kind::String,
            deadline,
            payload,
        }
    }

    /// Whether the key has expired at `now` (Redis: once `now` is past
    /// the deadline).
    pub fn expired(&self, now: i64) -> bool {
        self.deadline.is_some_and(|d| now > d)
    }

    /// The stored bytes (appends the trailer to the payload, no copy).
    pub fn encode(self) -> Vec<u8> {
        let mut out = self.payload;
        let mut tag = self.kind.code() << 1;
        if let Some(d) = self.deadline {
            out.extend_from_slice(&d.to_be_bytes());
            tag |= HAS_DEADLINE;
        }
        out.push(tag);
        out
    }

    /// Decodes stored bytes (truncates the trailer off, no copy).
    ///
    /// # Errors
    /// [`ValueError`] if the trailer is missing or cut short.
    pub fn decode(mut raw: Vec<u8>) -> Result<Self, ValueError> {
        let tag = raw.pop().ok_or(ValueError::Empty)?;
        let deadline = if tag & HAS_DEADLINE != 0 {
            let at = raw
                .len()
                .checked_sub(DEADLINE)
                .ok_or(ValueError::Short { len: raw.len() + 1 })?;
            let mut d = [0; DEADLINE];
            d.copy_from_slice(raw.get(at..).unwrap_or_default());
            raw.truncate(at);
            Some(i64::from_be_bytes(d))
        } else {
            None
        };
        let kind = match tag >> 1 {
            0 => Kind::String,
            k => Kind::Other(k),
        };
        Ok(Value {
            kind,
            deadline,
            payload: raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for deadline in [
            None,
            Some(0),
            Some(1_700_000_000_000),
            Some(i64::MAX),
            Some(-5),
        ] {
            for payload in [&b""[..], b"v", &[0xff; 300]] {
                for kind in [Kind::String, Kind::Other(3), Kind::Other(127)] {
                    let v = Value {
                        kind,
                        deadline,
                        payload: payload.to_vec(),
                    };
                    let raw = v.clone().encode();
                    assert!(raw.len() <= payload.len() + MAX_TRAILER);
                    assert_eq!(Value::decode(raw), Ok(v));
                }
            }
        }
    }

    #[test]
    fn layout_is_payload_deadline_tag() {
        assert_eq!(Value::string(b"ab".to_vec(), None).encode(), b"ab\0");
        assert_eq!(
            Value::string(b"ab".to_vec(), Some(0x0102)).encode(),
            b"ab\0\0\0\0\0\0\x01\x02\x01"
        );
        assert_eq!(
            Value {
                kind: Kind::Other(2),
                deadline: None,
                payload: vec![]
            }
            .encode(),
            [4]
        );
    }

    #[test]
    fn damaged_values_are_errors() {
        assert_eq!(Value::decode(vec![]), Err(ValueError::Empty));
        assert_eq!(
            Value::decode(vec![1, 2, 3, 1]),
            Err(ValueError::Short { len: 4 })
        );
    }

    #[test]
    fn expiry_is_past_the_deadline() {
        let v = Value::string(vec![], Some(100));
        assert!(!v.expired(99));
        assert!(!v.expired(100));
        assert!(v.expired(101));
        assert!(!Value::string(vec![], None).expired(i64::MAX));
    }
}
