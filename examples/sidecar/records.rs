//! The fixed-size records the load client, the demo and the crash tests
//! append: 64 bytes, `rec TAG ID` padded with dots, ending in a newline, so
//! a file of them can be checked for torn, foreign or repeated records.

pub const RECORD: usize = 64;

pub fn record(tag: u32, id: u64) -> Vec<u8> {
    let mut r = format!("rec {tag:04} {id:010} ").into_bytes();
    r.resize(RECORD - 1, b'.');
    r.push(b'\n');
    r
}

/// Parses a file of records into `(tag, id)` in file order; `Err` names the
/// first malformed one.
pub fn parse(bytes: &[u8]) -> Result<Vec<(u32, u64)>, String> {
    if bytes.len() % RECORD != 0 {
        return Err(format!(
            "{} bytes is not a whole number of records",
            bytes.len()
        ));
    }
    bytes
        .chunks(RECORD)
        .enumerate()
        .map(|(i, c)| {
            let s = std::str::from_utf8(c).map_err(|_| format!("record {i} is not text"))?;
            let mut f = s.split(' ');
            let (Some("rec"), Some(tag), Some(id)) = (f.next(), f.next(), f.next()) else {
                return Err(format!("record {i} malformed: {s:?}"));
            };
            let tag = tag.parse().map_err(|_| format!("record {i}: bad tag"))?;
            let id = id.parse().map_err(|_| format!("record {i}: bad id"))?;
            if record(tag, id) != c {
                return Err(format!("record {i} torn: {s:?}"));
            }
            Ok((tag, id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_parse_back() {
        let mut f = super::record(3, 7);
        f.extend(super::record(12, 99));
        assert_eq!(super::parse(&f), Ok(vec![(3, 7), (12, 99)]));
        f[70] = b'x';
        assert!(super::parse(&f).is_err());
    }
}
