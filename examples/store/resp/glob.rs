//! Redis's glob (`stringmatchlen`, case-sensitive), for SCAN's MATCH and
//! CONFIG GET: `*` any run, `?` any byte, `[abc]`, `[^abc]`, `[a-z]`
//! (bounds either way round), `\x` a literal `x`. An unclosed `[` takes
//! the rest of the pattern as its set, as in Redis. Like Redis 7, a match
//! gives up (no match) past 1000 nested stars, and a failed star stops
//! the outer stars from retrying longer matches, so a match is
//! O(pattern x string).

/// Nesting bound for `*` (Redis's protection against abusive patterns).
const MAX_NESTING: usize = 1000;

/// Whether `string` matches `pattern`.
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, string, &mut skip_longer, 0)
}

/// Whether `string` matches `pattern`; `nocase` folds ASCII case.
pub fn matches_nocase(pattern: &[u8], string: &[u8]) -> bool {
    matches(&pattern.to_ascii_lowercase(), &string.to_ascii_lowercase())
}

/// A byte as C's signed `char` compares it in a range.
fn signed(b: u8) -> i8 {
    i8::from_ne_bytes([b])
}

fn match_from(mut p: &[u8], mut s: &[u8], skip_longer: &mut bool, nesting: usize) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    while let (Some(&pc), Some(&sc)) = (p.first(), s.first()) {
        match pc {
            b'*' => {
                while p.get(1) == Some(&b'*') {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_from(&p[1..], s, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                let (matched, rest) = class(&p[1..], sc);
                if !matched {
                    return false;
                }
                p = rest;
                s = &s[1..];
            }
            _ => {
                let lit = if pc == b'\\' && p.len() >= 2 {
                    p = &p[1..];
                    p[0]
                } else {
                    pc
                };
                if lit != sc {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = p.get(1..).unwrap_or_default();
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

/// Matches `c` against the set after a `[`; returns whether it matched
/// and the pattern from the set's last byte (its `]`, or the pattern's
/// last byte if unclosed), which the caller steps over.
fn class(mut p: &[u8], c: u8) -> (bool, &[u8]) {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut matched = false;
    let full = p;
    loop {
        match p {
            [b'\\', lit, ..] => {
                p = &p[1..];
                matched |= *lit == c;
            }
            [b']', ..] => break,
            [] => {
                // Unclosed: step back onto the last byte, as Redis does.
                let back = full.len().min(1);
                return (
                    matched != negate,
                    full.get(full.len() - back..).unwrap_or_default(),
                );
            }
            [lo, b'-', hi, ..] => {
                let (mut lo, mut hi) = (signed(*lo), signed(*hi));
                if lo > hi {
                    std::mem::swap(&mut lo, &mut hi);
                }
                matched |= (lo..=hi).contains(&signed(c));
                p = &p[2..];
            }
            [lit, ..] => matched |= *lit == c,
        }
        p = &p[1..];
    }
    (matched != negate, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_redis_does() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"*", b"", false), // as in Redis; SCAN and KEYS special-case `*`
            (b"*", b"anything", true),
            (b"h?llo", b"hello", true),
            (b"h?llo", b"hllo", false),
            (b"h*llo", b"heeeello", true),
            (b"h[ae]llo", b"hallo", true),
            (b"h[ae]llo", b"hillo", false),
            (b"h[^e]llo", b"hallo", true),
            (b"h[^e]llo", b"hello", false),
            (b"h[a-b]llo", b"hbllo", true),
            (b"h[b-a]llo", b"hallo", true),
            (b"h[a-b]llo", b"hcllo", false),
            (b"h\\*llo", b"h*llo", true),
            (b"h\\*llo", b"hello", false),
            (b"[\\]]", b"]", true),
            (b"key:*:x", b"key:12:x", true),
            (b"key:*:x", b"key:12:y", false),
            (b"a*b*c", b"aXbYc", true),
            (b"a*", b"", false),
            (b"", b"", true),
            (b"", b"a", false),
            (b"abc", b"ab", false),
            (b"ab*", b"ab", true),
            (b"[abc", b"b", true),
            (b"[abc", b"c", true),
            (b"\\", b"\\", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(
                matches(p, s),
                *want,
                "{:?} ~ {:?}",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(s)
            );
        }
        assert!(matches_nocase(b"APPEND*", b"appendonly"));
    }

    #[test]
    fn abusive_patterns_end_quickly() {
        let pattern = b"a*".repeat(5000);
        let string = vec![b'a'; 5000];
        assert!(!matches(&[&pattern[..], b"b"].concat(), &string));
    }
}
