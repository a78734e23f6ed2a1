//! cgroup CPU limits: the `cpu.max` quota (v2, or `cpu.cfs_quota_us` on v1)
//! and the effective cpuset of the process's cgroup.
//!
//! The process's cgroup comes from `/proc/self/cgroup`; where each hierarchy
//! is mounted comes from `/proc/self/mountinfo` (whose `root` field tells how
//! much of the cgroup path a container's mount hides). Without mountinfo the
//! usual `/sys/fs/cgroup` layouts are tried.

use std::path::{Path, PathBuf};

use super::TopologyError;
use super::sysfs::{parse_error, read_cpu_list, read_optional, under};

/// Limits found for the process's cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CgroupInfo {
    /// Smallest CPU quota (in CPUs) along the cgroup and its ancestors.
    pub cpu_quota: Option<f64>,
    /// Effective cpuset, if a cpuset controller is visible.
    pub cpuset: Option<Vec<usize>>,
}

/// One line of `/proc/self/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CgroupEntry {
    /// Controllers of a v1 hierarchy; empty for the v2 unified hierarchy.
    pub controllers: Vec<String>,
    /// Path of the process's cgroup within the hierarchy.
    pub path: String,
}

/// One cgroup mount from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// Path inside the hierarchy that is mounted (field 4).
    pub root: String,
    /// Where it is mounted (field 5).
    pub mount_point: String,
    /// True for `cgroup2`.
    pub v2: bool,
    /// Super options (v1 controllers such as `cpu`, `cpuset`).
    pub options: Vec<String>,
}

/// Parses `/proc/self/cgroup` (`hierarchy-id:controllers:path` per line).
pub(crate) fn parse_proc_cgroup(
    path: &Path,
    content: &str,
) -> Result<Vec<CgroupEntry>, TopologyError> {
    let mut out = Vec::new();
    for line in content.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(cg_path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(parse_error(path, line, "expected id:controllers:path"));
        };
        if !cg_path.starts_with('/') {
            return Err(parse_error(path, line, "cgroup path is not absolute"));
        }
        out.push(CgroupEntry {
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: cg_path.to_owned(),
        });
    }
    Ok(out)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Extracts cgroup mounts from `/proc/self/mountinfo`; other lines are
/// skipped. A cgroup line without the fields the kernel always writes is an
/// error.
pub(crate) fn parse_mountinfo(
    path: &Path,
    content: &str,
) -> Result<Vec<CgroupMount>, TopologyError> {
    let mut out = Vec::new();
    for line in content.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split_whitespace();
        let fstype = right.next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let _source = right.next();
        let options = right
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::to_owned)
            .collect();
        let fields: Vec<&str> = left.split_whitespace().collect();
        if fields.len() < 5 {
            return Err(parse_error(
                path,
                line,
                "cgroup mount line has fewer than 5 fields",
            ));
        }
        out.push(CgroupMount {
            root: unescape(fields[3]),
            mount_point: unescape(fields[4]),
            v2: fstype == "cgroup2",
            options,
        });
    }
    Ok(out)
}

/// Parses cgroup v2 `cpu.max` (`"max 100000"` or `"150000 100000"`) into a
/// quota in CPUs; `None` for no limit.
pub(crate) fn parse_cpu_max(path: &Path, content: &str) -> Result<Option<f64>, TopologyError> {
    let mut parts = content.split_whitespace();
    let quota = parts
        .next()
        .ok_or_else(|| parse_error(path, content, "empty cpu.max"))?;
    let period = match parts.next() {
        Some(p) => p
            .parse::<u64>()
            .map_err(|_| parse_error(path, content, "period is not a number"))?,
        None => 100_000,
    };
    if parts.next().is_some() {
        return Err(parse_error(path, content, "expected \"<quota> <period>\""));
    }
    if quota == "max" {
        return Ok(None);
    }
    let quota = quota
        .parse::<u64>()
        .map_err(|_| parse_error(path, content, "quota is neither \"max\" nor a number"))?;
    if period == 0 || quota == 0 {
        return Err(parse_error(
            path,
            content,
            "quota and period must be positive",
        ));
    }
    Ok(Some(quota as f64 / period as f64))
}

/// Parses cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; a negative
/// quota means no limit.
fn parse_cfs(
    quota_path: &Path,
    quota: &str,
    period_path: &Path,
    period: &str,
) -> Result<Option<f64>, TopologyError> {
    let q: i64 = quota
        .trim()
        .parse()
        .map_err(|_| parse_error(quota_path, quota, "expected a number"))?;
    if q < 0 {
        return Ok(None);
    }
    let p: u64 = period
        .trim()
        .parse()
        .map_err(|_| parse_error(period_path, period, "expected a number"))?;
    if q == 0 || p == 0 {
        return Err(parse_error(
            quota_path,
            quota,
            "quota and period must be positive",
        ));
    }
    Ok(Some(q as f64 / p as f64))
}

/// The directory of the process's cgroup under a mount, plus the mount point
/// (where walking up stops).
fn cgroup_dir(root: &Path, mount: &CgroupMount, cg_path: &str) -> (PathBuf, PathBuf) {
    let top = under(root, &mount.mount_point);
    let rel = if mount.root == "/" {
        Some(cg_path)
    } else {
        cg_path
            .strip_prefix(mount.root.as_str())
            .filter(|r| r.is_empty() || r.starts_with('/'))
    };
    // If the cgroup path is outside the mounted subtree (an unusual namespace
    // setup), the mount point itself is the best guess.
    let dir = match rel {
        Some(r) => top.join(r.trim_start_matches('/')),
        None => top.clone(),
    };
    (dir, top)
}

/// The directories from `dir` up to and including `top`.
fn ancestors(dir: &Path, top: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        out.push(d.to_owned());
        if d == top || !d.starts_with(top) {
            break;
        }
        cur = d.parent();
    }
    out
}

fn min_quota(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Reads the cgroup limits of the process, with `root` as filesystem root.
/// Missing files mean "no limit"; malformed ones are errors.
pub(crate) fn read(root: &Path) -> Result<CgroupInfo, TopologyError> {
    let cg_file = under(root, "/proc/self/cgroup");
    let Some(content) = read_optional(&cg_file)? else {
        return Ok(CgroupInfo::default());
    };
    let entries = parse_proc_cgroup(&cg_file, &content)?;
    let mi_file = under(root, "/proc/self/mountinfo");
    let mounts = match read_optional(&mi_file)? {
        Some(mi) => parse_mountinfo(&mi_file, &mi)?,
        None => guess_mounts(root),
    };

    let mut info = CgroupInfo::default();
    for entry in &entries {
        let v2 = entry.controllers.is_empty();
        let has = |c: &str| entry.controllers.iter().any(|x| x == c);
        for mount in &mounts {
            let matches = if v2 {
                mount.v2
            } else {
                !mount.v2
                    && entry
                        .controllers
                        .iter()
                        .all(|c| mount.options.iter().any(|o| o == c))
            };
            if !matches {
                continue;
            }
            let (dir, top) = cgroup_dir(root, mount, &entry.path);
            let chain = ancestors(&dir, &top);
            if v2 || has("cpu") {
                for d in &chain {
                    let q = if v2 {
                        let f = d.join("cpu.max");
                        match read_optional(&f)? {
                            Some(s) => parse_cpu_max(&f, &s)?,
                            None => None,
                        }
                    } else {
                        let (qf, pf) = (d.join("cpu.cfs_quota_us"), d.join("cpu.cfs_period_us"));
                        match (read_optional(&qf)?, read_optional(&pf)?) {
                            (Some(q), Some(p)) => parse_cfs(&qf, &q, &pf, &p)?,
                            _ => None,
                        }
                    };
                    info.cpu_quota = min_quota(info.cpu_quota, q);
                }
            }
            if info.cpuset.is_none() && (v2 || has("cpuset")) {
                let names: &[&str] = if v2 {
                    &["cpuset.cpus.effective"]
                } else {
                    &["cpuset.effective_cpus", "cpuset.cpus"]
                };
                'walk: for d in &chain {
                    for name in names {
                        if let Some(set) = read_cpu_list(&d.join(name))? {
                            if !set.is_empty() {
                                info.cpuset = Some(set);
                                break 'walk;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(info)
}

/// Mounts assumed when `/proc/self/mountinfo` is missing: the common layouts
/// of a unified (`/sys/fs/cgroup`), hybrid (`/sys/fs/cgroup/unified`) or v1
/// (`/sys/fs/cgroup/<controller>`) system.
fn guess_mounts(root: &Path) -> Vec<CgroupMount> {
    let mount = |mp: &str, v2: bool, opts: &[&str]| CgroupMount {
        root: "/".to_owned(),
        mount_point: mp.to_owned(),
        v2,
        options: opts.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut out = Vec::new();
    if under(root, "/sys/fs/cgroup/cgroup.controllers").exists() {
        out.push(mount("/sys/fs/cgroup", true, &[]));
    } else if under(root, "/sys/fs/cgroup/unified").is_dir() {
        out.push(mount("/sys/fs/cgroup/unified", true, &[]));
    }
    for (dir, opts) in [
        ("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"][..]),
        ("/sys/fs/cgroup/cpu", &["cpu"][..]),
        ("/sys/fs/cgroup/cpuset", &["cpuset"][..]),
    ] {
        if under(root, dir).is_dir() {
            out.push(mount(dir, false, opts));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testfs::FakeRoot;
    use super::*;

    #[test]
    fn cpu_max_values() {
        let p = Path::new("cpu.max");
        assert_eq!(parse_cpu_max(p, "max 100000\n").unwrap(), None);
        assert_eq!(parse_cpu_max(p, "max\n").unwrap(), None);
        assert_eq!(parse_cpu_max(p, "150000 100000\n").unwrap(), Some(1.5));
        assert_eq!(parse_cpu_max(p, "50000 100000").unwrap(), Some(0.5));
        assert_eq!(
            parse_cpu_max(p, "200000\n").unwrap(),
            Some(2.0),
            "period defaults to 100ms"
        );
        for bad in ["", "max x", "-1 100000", "0 100000", "1.5 100000", "1 2 3"] {
            assert!(
                matches!(parse_cpu_max(p, bad), Err(TopologyError::Parse { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn proc_cgroup_lines() {
        let p = Path::new("cgroup");
        let e = parse_proc_cgroup(p, "12:cpu,cpuacct:/a/b\n0::/c:d\n").unwrap();
        assert_eq!(e[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(e[0].path, "/a/b");
        assert!(e[1].controllers.is_empty());
        assert_eq!(e[1].path, "/c:d", "colons in the path are kept");
        assert!(parse_proc_cgroup(p, "0:cpu\n").is_err());
        assert!(parse_proc_cgroup(p, "0::relative\n").is_err());
    }

    #[test]
    fn mountinfo_lines() {
        let p = Path::new("mountinfo");
        let m = parse_mountinfo(
            p,
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
             40 30 0:35 /docker/x /sys/fs/cgroup/cpu\\040dir rw shared:9 - cgroup cgroup rw,cpu,cpuacct\n",
        )
        .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].root, "/docker/x");
        assert_eq!(m[0].mount_point, "/sys/fs/cgroup/cpu dir");
        assert!(!m[0].v2);
        assert!(m[0].options.iter().any(|o| o == "cpu"));
        assert!(parse_mountinfo(p, "1 2 - cgroup2 cgroup2 rw\n").is_err());
    }

    #[test]
    fn v1_quota_and_cpuset() {
        let r = FakeRoot::new("v1");
        r.write(
            "proc/self/cgroup",
            "4:cpuset:/job\n3:cpu,cpuacct:/job/task\n1:name=systemd:/x\n",
        )
        .write(
            "proc/self/mountinfo",
            "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             31 25 0:27 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n\
             32 25 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n",
        )
        .write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
        .write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
        .write("sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us", "300000\n")
        .write(
            "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us",
            "100000\n",
        )
        .write(
            "sys/fs/cgroup/cpu,cpuacct/job/task/cpu.cfs_quota_us",
            "75000\n",
        )
        .write(
            "sys/fs/cgroup/cpu,cpuacct/job/task/cpu.cfs_period_us",
            "50000\n",
        )
        .write("sys/fs/cgroup/cpuset/job/cpuset.cpus", "2-3\n")
        .write("sys/fs/cgroup/cpuset/job/cpuset.effective_cpus", "2\n");
        let info = read(r.path()).unwrap();
        assert_eq!(info.cpu_quota, Some(1.5), "smallest of 3.0 and 1.5");
        assert_eq!(info.cpuset, Some(vec![2]), "effective_cpus preferred");
    }

    #[test]
    fn container_mount_root_is_stripped() {
        // Without a cgroup namespace the container sees its full path in
        // /proc/self/cgroup but only its subtree is mounted.
        let r = FakeRoot::new("container");
        r.write("proc/self/cgroup", "0::/docker/abc\n")
            .write(
                "proc/self/mountinfo",
                "30 25 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n",
            )
            .write("sys/fs/cgroup/cpu.max", "200000 100000\n")
            .write("sys/fs/cgroup/cpuset.cpus.effective", "0-1\n");
        let info = read(r.path()).unwrap();
        assert_eq!(info.cpu_quota, Some(2.0));
        assert_eq!(info.cpuset, Some(vec![0, 1]));
    }

    #[test]
    fn guessed_mounts_without_mountinfo() {
        let r = FakeRoot::new("guess-v2");
        r.write("proc/self/cgroup", "0::/svc\n")
            .write("sys/fs/cgroup/cgroup.controllers", "cpu cpuset\n")
            .write("sys/fs/cgroup/svc/cpu.max", "150000 100000\n");
        assert_eq!(read(r.path()).unwrap().cpu_quota, Some(1.5));

        // Hybrid layout, like this machine: v2 under unified/, v1 cpu.
        let r = FakeRoot::new("guess-hybrid");
        r.write("proc/self/cgroup", "1:cpu:/\n0::/\n")
            .mkdir("sys/fs/cgroup/unified")
            .write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
            .write("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        assert_eq!(read(r.path()).unwrap(), CgroupInfo::default());
    }

    #[test]
    fn no_proc_cgroup_means_no_limits() {
        let r = FakeRoot::new("nocg");
        assert_eq!(read(r.path()).unwrap(), CgroupInfo::default());
    }

    #[test]
    fn malformed_v1_quota_is_an_error() {
        let r = FakeRoot::new("v1bad");
        r.write("proc/self/cgroup", "1:cpu:/\n")
            .mkdir("sys/fs/cgroup/cpu")
            .write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "lots\n")
            .write("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        assert!(matches!(read(r.path()), Err(TopologyError::Parse { .. })));
    }
}
