//! Inline commands (a line of words, as typed into telnet or sent by
//! `redis-cli` in some modes), split as Redis's `sdssplitargs` does:
//! blanks separate words, `"..."` takes `\n \r \t \b \a \\ \" \xHH`
//! escapes, `'...'` takes `\'`, and a closing quote must be followed by a
//! blank or the end of the line. Like the C original, the line ends at a
//! NUL byte.

/// The line has an unterminated quote, or a closing quote is followed by
/// something other than a blank.
#[derive(Debug, PartialEq, Eq)]
pub struct UnbalancedQuotes;

/// Whether `b` is a blank as C's `isspace` sees it.
fn blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// The value of a hex digit.
fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Splits `line` into words, appending each word's bytes to `out` and its
/// range in `out` to `args`.
///
/// # Errors
/// [`UnbalancedQuotes`] as described in the module docs.
pub fn split(
    line: &[u8],
    out: &mut Vec<u8>,
    args: &mut Vec<std::ops::Range<usize>>,
) -> Result<(), UnbalancedQuotes> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let at = |i: usize| line.get(i).copied();
    let mut i = 0;
    loop {
        while at(i).is_some_and(blank) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(());
        }
        let start = out.len();
        i = word(line, i, out)?;
        args.push(start..out.len());
    }
}

/// Reads one word of `line` from `i` into `out`; returns where it ended.
fn word(line: &[u8], mut i: usize, out: &mut Vec<u8>) -> Result<usize, UnbalancedQuotes> {
    let at = |i: usize| line.get(i).copied();
    let ends_word = |i: usize| at(i).is_none_or(blank);
    let mut quote: Option<u8> = None;
    loop {
        let Some(c) = at(i) else {
            return if quote.is_some() {
                Err(UnbalancedQuotes)
            } else {
                Ok(i)
            };
        };
        match quote {
            Some(b'"') => {
                if c == b'\\' && at(i + 1) == Some(b'x') {
                    if let (Some(h), Some(l)) = (at(i + 2).and_then(hex), at(i + 3).and_then(hex)) {
                        out.push(h * 16 + l);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && at(i + 1).is_some() {
                    out.push(match at(i + 1) {
                        Some(b'n') => b'\n',
                        Some(b'r') => b'\r',
                        Some(b't') => b'\t',
                        Some(b'b') => 8,
                        Some(b'a') => 7,
                        Some(other) => other,
                        None => c,
                    });
                    i += 2;
                } else if c == b'"' {
                    return if ends_word(i + 1) {
                        Ok(i + 1)
                    } else {
                        Err(UnbalancedQuotes)
                    };
                } else {
                    out.push(c);
                    i += 1;
                }
            }
            Some(_) => {
                if c == b'\\' && at(i + 1) == Some(b'\'') {
                    out.push(b'\'');
                    i += 2;
                } else if c == b'\'' {
                    return if ends_word(i + 1) {
                        Ok(i + 1)
                    } else {
                        Err(UnbalancedQuotes)
                    };
                } else {
                    out.push(c);
                    i += 1;
                }
            }
            None => match c {
                b' ' | b'\n' | b'\r' | b'\t' => return Ok(i),
                b'"' | b'\'' => {
                    quote = Some(c);
                    i += 1;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &[u8]) -> Result<Vec<Vec<u8>>, UnbalancedQuotes> {
        let (mut out, mut args) = (Vec::new(), Vec::new());
        split(line, &mut out, &mut args)?;
        Ok(args.into_iter().map(|r| out[r].to_vec()).collect())
    }

    #[test]
    fn splits_like_sdssplitargs() {
        assert_eq!(words(b"  set  k v ").unwrap(), [&b"set"[..], b"k", b"v"]);
        assert_eq!(words(b"").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(
            words(br#"set "a b\n\x41\"" 'it\'s' x"y z""#).unwrap(),
            [&b"set"[..], b"a b\nA\"", b"it's", b"xy z"]
        );
        assert_eq!(words(b"get k\0ignored").unwrap(), [&b"get"[..], b"k"]);
        assert_eq!(words(br#"a "unterminated"#), Err(UnbalancedQuotes));
        assert_eq!(words(br#"a "closed"x"#), Err(UnbalancedQuotes));
        assert_eq!(words(b"a 'x"), Err(UnbalancedQuotes));
        assert_eq!(words(br#""""#).unwrap(), [&b""[..]]);
    }
}
