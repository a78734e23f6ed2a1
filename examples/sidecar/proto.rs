//! Requests and completions as slot words, and the daemon's decoder, which
//! turns eight words the client wrote (copied out of shared memory first:
//! R2) into a checked request or the status that refuses it. It never
//! panics and never trusts a length or offset it has not bounded against
//! the client's data area.
//!
//! Request slot: `[seq, opcode | flags << 16, user, handle, offset,
//! data_off, len, 0]`. Completion slot: `[seq, user, kind | status << 32,
//! value]`.

use crate::layout::{Layout, op, status};

/// Longest path accepted (bytes).
pub const MAX_PATH: u64 = 4096;

/// A request the daemon may run: every buffer is an offset into the
/// region, already checked to lie inside the data area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Open {
        at: usize,
        len: usize,
        create: bool,
    },
    Write {
        handle: u64,
        offset: u64,
        at: usize,
        len: usize,
        volatile: bool,
    },
    Append {
        handle: u64,
        at: usize,
        len: usize,
        volatile: bool,
    },
    Read {
        handle: u64,
        offset: u64,
        at: usize,
        len: usize,
    },
    Sync {
        handle: u64,
        data_only: bool,
    },
    Close {
        handle: u64,
    },
    /// A destination's name to look up.
    Dest {
        at: usize,
        len: usize,
    },
    Send {
        dest: u64,
        at: usize,
        len: usize,
        /// Not journaled (`op::VOLATILE`).
        volatile: bool,
    },
}

/// A request slot's words (the sequence word left 0 for the ring).
pub fn encode(
    opcode: u16,
    flags: u16,
    user: u64,
    handle: u64,
    offset: u64,
    data: u64,
    len: u64,
) -> [u64; 8] {
    [
        0,
        u64::from(opcode) | u64::from(flags) << 16,
        user,
        handle,
        offset,
        data,
        len,
        0,
    ]
}

/// Decodes a request slot. `Err` carries the client's `user` word and
/// the refusal's status.
pub fn decode(w: &[u64; 8], layout: &Layout) -> Result<(u64, Request), (u64, i32)> {
    let user = w[2];
    let refuse = |s| Err((user, s));
    let opcode = (w[1] & 0xffff) as u16;
    let flags = ((w[1] >> 16) & 0xffff) as u16;
    if w[1] >> 32 != 0 || w[7] != 0 {
        return refuse(status::BAD_FLAGS);
    }
    let (handle, offset, data, len) = (w[3], w[4], w[5], w[6]);
    // A file offset plus a length must stay within off_t.
    let file_range_ok = offset
        .checked_add(len)
        .is_some_and(|e| e <= i64::MAX as u64);
    let buffer = || {
        layout
            .data_range(data, len)
            .ok_or((user, status::BAD_RANGE))
    };
    let no_flags = |r: Request| {
        if flags != 0 {
            Err((user, status::BAD_FLAGS))
        } else {
            Ok((user, r))
        }
    };
    match opcode {
        op::OPEN => {
            if flags & !op::CREATE != 0 {
                return refuse(status::BAD_FLAGS);
            }
            if len == 0 || len > MAX_PATH {
                return refuse(status::BAD_PATH);
            }
            let at = buffer()?;
            Ok((
                user,
                Request::Open {
                    at,
                    len: len as usize,
                    create: flags & op::CREATE != 0,
                },
            ))
        }
        op::WRITE | op::READ if !file_range_ok => refuse(status::BAD_RANGE),
        op::WRITE | op::APPEND if flags & !op::VOLATILE != 0 => refuse(status::BAD_FLAGS),
        op::WRITE => {
            let at = buffer()?;
            Ok((
                user,
                Request::Write {
                    handle,
                    offset,
                    at,
                    len: len as usize,
                    volatile: flags & op::VOLATILE != 0,
                },
            ))
        }
        op::APPEND => {
            let at = buffer()?;
            Ok((
                user,
                Request::Append {
                    handle,
                    at,
                    len: len as usize,
                    volatile: flags & op::VOLATILE != 0,
                },
            ))
        }
        op::READ => {
            let at = buffer()?;
            no_flags(Request::Read {
                handle,
                offset,
                at,
                len: len as usize,
            })
        }
        op::FSYNC | op::FDATASYNC => no_flags(Request::Sync {
            handle,
            data_only: opcode == op::FDATASYNC,
        }),
        op::CLOSE => no_flags(Request::Close { handle }),
        op::DEST | op::SEND if offset != 0 || (opcode == op::DEST && handle != 0) => {
            refuse(status::BAD_FLAGS)
        }
        op::SEND if flags & !op::VOLATILE != 0 => refuse(status::BAD_FLAGS),
        op::DEST => {
            if len == 0 || len > 64 {
                return refuse(status::NO_DEST);
            }
            let at = buffer()?;
            no_flags(Request::Dest {
                at,
                len: len as usize,
            })
        }
        op::SEND => {
            let at = buffer()?;
            Ok((
                user,
                Request::Send {
                    dest: handle,
                    at,
                    len: len as usize,
                    volatile: flags & op::VOLATILE != 0,
                },
            ))
        }
        _ => refuse(status::BAD_OPCODE),
    }
}

/// A completion's words (sequence word left 0).
pub fn completion(user: u64, kind: u32, status: i32, value: u64) -> [u64; 4] {
    [
        0,
        user,
        u64::from(kind) | u64::from(status as u32) << 32,
        value,
    ]
}

/// A completion slot read back: `(user, kind, status, value)`.
pub fn parse_completion(w: &[u64; 4]) -> (u64, u32, i32, u64) {
    (w[1], w[2] as u32, (w[2] >> 32) as u32 as i32, w[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_refusal_names_its_cause() {
        let l = Layout::standard();
        let d = |w| decode(&w, &l);
        assert_eq!(
            d(encode(99, 0, 5, 0, 0, 0, 0)),
            Err((5, status::BAD_OPCODE))
        );
        assert_eq!(
            d(encode(op::WRITE, 0, 6, 1, 0, 3, 1)),
            Err((6, status::BAD_RANGE))
        );
        assert_eq!(
            d(encode(op::WRITE, 0, 6, 1, 0, 0, 1 << 40)),
            Err((6, status::BAD_RANGE))
        );
        assert_eq!(
            d(encode(op::READ, 0, 6, 1, u64::MAX, 0, 8)),
            Err((6, status::BAD_RANGE))
        );
        assert_eq!(
            d(encode(op::OPEN, 0x80, 7, 0, 0, 0, 4)),
            Err((7, status::BAD_FLAGS))
        );
        assert_eq!(
            d(encode(op::OPEN, 0, 7, 0, 0, 0, 0)),
            Err((7, status::BAD_PATH))
        );
        assert_eq!(
            d(encode(op::CLOSE, 1, 8, 0, 0, 0, 0)),
            Err((8, status::BAD_FLAGS))
        );
        assert_eq!(
            d(encode(op::DEST, 0, 10, 0, 0, 0, 65)),
            Err((10, status::NO_DEST))
        );
        assert_eq!(
            d(encode(op::SEND, 0, 11, 1, 0, 16, u64::MAX)),
            Err((11, status::BAD_RANGE))
        );
        assert_eq!(
            d(encode(op::SEND, 0, 12, 2, 0, 8, 3)),
            Ok((
                12,
                Request::Send {
                    dest: 2,
                    at: l.data_off + 8,
                    len: 3,
                    volatile: false
                }
            ))
        );
        assert_eq!(
            d(encode(op::SEND, op::VOLATILE, 13, 2, 0, 8, 3)),
            Ok((
                13,
                Request::Send {
                    dest: 2,
                    at: l.data_off + 8,
                    len: 3,
                    volatile: true
                }
            ))
        );
        assert_eq!(
            d(encode(op::SEND, op::CREATE, 14, 2, 0, 8, 3)),
            Err((14, status::BAD_FLAGS))
        );
        let mut w = encode(op::CLOSE, 0, 9, 0, 0, 0, 0);
        w[7] = 1;
        assert_eq!(d(w), Err((9, status::BAD_FLAGS)));
        assert_eq!(
            d(encode(op::WRITE, 0, 1, 2, 3, 8, 16)),
            Ok((
                1,
                Request::Write {
                    handle: 2,
                    offset: 3,
                    at: l.data_off + 8,
                    len: 16,
                    volatile: false
                }
            ))
        );
    }

    #[test]
    fn completions_round_trip() {
        let w = completion(42, crate::layout::kind::COMPLETED, -5, 7);
        assert_eq!(
            parse_completion(&w),
            (42, crate::layout::kind::COMPLETED, -5, 7)
        );
    }

    proptest! {
        /// The decoder is total over garbage, and every buffer it accepts
        /// lies inside the data area with its padding.
        #[test]
        fn garbage_never_escapes_the_data_area(w in proptest::array::uniform8(any::<u64>())) {
            let l = Layout::standard();
            if let Ok((_, r)) = decode(&w, &l) {
                let (at, len) = match r {
                    Request::Open { at, len, .. } | Request::Write { at, len, .. }
                    | Request::Append { at, len, .. } | Request::Read { at, len, .. }
                    | Request::Dest { at, len } | Request::Send { at, len, .. } => (at, len),
                    _ => (l.data_off, 0),
                };
                prop_assert!(at >= l.data_off && at % 8 == 0);
                prop_assert!(at + len.next_multiple_of(8) <= l.data_off + l.data_len);
            }
        }
    }
}
