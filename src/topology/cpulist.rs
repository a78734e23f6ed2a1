//! Parsing and printing of the kernel's CPU list format (`"0-3,8,10-11"`).

use super::TopologyError;

/// Largest CPU number accepted in a list, so that a corrupt range such as
/// `0-18446744073709551615` is an error instead of a huge allocation.
pub const MAX_CPU_ID: usize = 1 << 20;

/// Parses a CPU list in the kernel's format, as found in `cpulist`,
/// `shared_cpu_list` or `cpuset.cpus` files.
///
/// Items are single numbers or inclusive ranges `a-b`, separated by commas;
/// whitespace around items and a trailing newline are ignored. An empty (or
/// all-whitespace) string is the empty list. The result is sorted and has no
/// duplicates.
///
/// # Errors
///
/// [`TopologyError::CpuList`] for an empty item (`"1,,2"`), a non-number, a
/// reversed range (`"3-1"`) or a CPU number above [`MAX_CPU_ID`].
///
/// # Examples
///
/// ```
/// # use shared_nothing::topology::parse_cpu_list;
/// assert_eq!(parse_cpu_list("0-3,8, 10-11\n").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
/// assert!(parse_cpu_list("").unwrap().is_empty());
/// assert!(parse_cpu_list("3-1").is_err());
/// ```
pub fn parse_cpu_list(input: &str) -> Result<Vec<usize>, TopologyError> {
    let err = |reason: String| TopologyError::CpuList {
        input: input.to_owned(),
        reason,
    };
    let trimmed = input.trim();
    let mut cpus = Vec::new();
    if trimmed.is_empty() {
        return Ok(cpus);
    }
    let number = |s: &str| -> Result<usize, TopologyError> {
        let s = s.trim();
        let n: usize = s
            .parse()
            .map_err(|_| err(format!("{s:?} is not a CPU number")))?;
        if n > MAX_CPU_ID {
            return Err(err(format!("CPU {n} is above the limit {MAX_CPU_ID}")));
        }
        Ok(n)
    };
    for item in trimmed.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(err("empty item".to_owned()));
        }
        match item.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    return Err(err(format!("range {lo}-{hi} is reversed")));
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(number(item)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Formats CPUs in the kernel's list format, merging runs into ranges.
///
/// The input need not be sorted; duplicates are dropped.
///
/// ```
/// # use shared_nothing::topology::format_cpu_list;
/// assert_eq!(format_cpu_list(&[8, 0, 1, 2, 3, 10, 11]), "0-3,8,10-11");
/// ```
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_singles_and_whitespace() {
        assert_eq!(parse_cpu_list("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_cpu_list("5").unwrap(), vec![5]);
        assert_eq!(
            parse_cpu_list("0-3,8,10-11").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(
            parse_cpu_list(" 0 - 1 , 4\n").unwrap(),
            vec![0, 1, 4],
            "whitespace around items and numbers is ignored"
        );
        assert_eq!(
            parse_cpu_list("3,1,2-3").unwrap(),
            vec![1, 2, 3],
            "sorted, deduplicated"
        );
        assert_eq!(parse_cpu_list("7-7").unwrap(), vec![7]);
    }

    #[test]
    fn empty_is_empty_list() {
        assert!(parse_cpu_list("").unwrap().is_empty());
        assert!(parse_cpu_list(" \n").unwrap().is_empty());
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in [
            "a",
            "1,,2",
            "1,",
            ",1",
            "3-1",
            "1-",
            "-1",
            "1-2-3",
            "0x3",
            "1.5",
            "-",
            "99999999999999999999",
            "0-18446744073709551615",
        ] {
            match parse_cpu_list(bad) {
                Err(TopologyError::CpuList { input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad:?} should be a CpuList error, got {other:?}"),
            }
        }
    }

    #[test]
    fn format_round_trips() {
        for s in ["0-3,8,10-11", "0", "1,3,5", "0-255", ""] {
            assert_eq!(format_cpu_list(&parse_cpu_list(s).unwrap()), s);
        }
        assert_eq!(format_cpu_list(&[2, 1, 1, 0]), "0-2");
    }
}
