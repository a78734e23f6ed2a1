//! Replies and their RESP2 encoding, plus the error replies Redis words
//! the same way for every command.

use std::io::Write;

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text`: a status such as `OK` or `PONG` (no CR or LF inside).
    Simple(&'static str),
    /// `-text`: an error, its code first (`ERR ...`, `WRONGTYPE ...`).
    /// CR and LF inside are written as spaces, as Redis does.
    Error(Vec<u8>),
    /// `:n`.
    Integer(i64),
    /// `$len` and the bytes.
    Bulk(Vec<u8>),
    /// `$-1`: the null bulk string (a missing key).
    Null,
    /// `*n` and the elements.
    Array(Vec<Reply>),
    /// `*-1`: the null array. No command served here replies with it
    /// (Redis's blocking pops and EXEC do); kept so the encoder covers
    /// RESP2's replies, and tested.
    #[allow(dead_code)]
    NullArray,
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Simple("OK");

    /// An error reply from its text (code first, no leading `-`).
    pub fn error(text: impl Into<Vec<u8>>) -> Reply {
        Reply::Error(text.into())
    }

    /// `-ERR wrong number of arguments for 'NAME' command`.
    pub fn wrong_args(name: &str) -> Reply {
        Reply::error(format!(
            "ERR wrong number of arguments for '{name}' command"
        ))
    }

    /// `-ERR syntax error`.
    pub fn syntax() -> Reply {
        Reply::error("ERR syntax error")
    }

    /// `-ERR value is not an integer or out of range`.
    pub fn not_integer() -> Reply {
        Reply::error("ERR value is not an integer or out of range")
    }

    /// `-WRONGTYPE Operation against a key holding the wrong kind of value`.
    pub fn wrong_type() -> Reply {
        Reply::error("WRONGTYPE Operation against a key holding the wrong kind of value")
    }

    /// `-ERR invalid expire time in 'NAME' command`.
    pub fn invalid_expire(name: &str) -> Reply {
        Reply::error(format!("ERR invalid expire time in '{name}' command"))
    }

    /// A bulk string of the decimal form of `n` (SCAN's cursor).
    pub fn bulk_decimal(n: u64) -> Reply {
        Reply::Bulk(n.to_string().into_bytes())
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the RESP2 encoding of this reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s.as_bytes());
            }
            Reply::Error(text) => {
                out.push(b'-');
                out.extend(text.iter().map(|&b| match b {
                    b'\r' | b'\n' => b' ',
                    b => b,
                }));
            }
            Reply::Integer(n) => header(out, b':', *n),
            Reply::Bulk(bytes) => {
                header(out, b'$', len_i64(bytes.len()));
                out.extend_from_slice(bytes);
            }
            Reply::Null => out.extend_from_slice(b"$-1"),
            Reply::Array(items) => {
                header(out, b'*', len_i64(items.len()));
                for item in items {
                    item.encode(out);
                }
                return;
            }
            Reply::NullArray => out.extend_from_slice(b"*-1"),
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The RESP2 encoding of this reply (the tests compare bytes).
    #[cfg(test)]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A length as RESP writes it (lengths never reach `i64::MAX`).
fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes `tag`, `n` and CR LF.
fn header(out: &mut Vec<u8>, tag: u8, n: i64) {
    out.push(tag);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
    if tag != b':' {
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_kind() {
        let r = Reply::Array(vec![
            Reply::OK,
            Reply::error("ERR a\r\nb"),
            Reply::Integer(-42),
            Reply::Bulk(b"hi\r\n".to_vec()),
            Reply::Bulk(Vec::new()),
            Reply::Null,
            Reply::Array(Vec::new()),
            Reply::NullArray,
        ]);
        assert_eq!(
            r.to_bytes(),
            b"*8\r\n+OK\r\n-ERR a  b\r\n:-42\r\n$4\r\nhi\r\n\r\n$0\r\n\r\n$-1\r\n*0\r\n*-1\r\n"
        );
    }

    #[test]
    fn error_replies_are_worded_as_redis_does() {
        assert_eq!(
            Reply::wrong_args("get").to_bytes(),
            b"-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(Reply::syntax().to_bytes(), b"-ERR syntax error\r\n");
        assert_eq!(
            Reply::wrong_type().to_bytes(),
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        );
    }
}
