//! A small ext4 file system on a loop device for the disk-full tests
//! (the broker's and the store's): `mkfs.ext4` on an image file and
//! `mount -o loop`, which needs root and e2fsprogs; where either is
//! missing the test says why and skips. Included with `#[path]` by the
//! tests that use it (not in `common`, so the others carry no dead code).

use super::common::TempDir;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small ext4 file system on a loop device, unmounted on drop.
pub struct LoopFs {
    pub dir: TempDir,
    image: PathBuf,
}

impl LoopFs {
    /// `None` (and why) where this process may not mount.
    fn mount(tag: &str, mib: u64) -> Result<LoopFs, String> {
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(&dir.0).map_err(|e| e.to_string())?;
        let image = dir.0.with_extension("img");
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(mib << 20).map_err(|e| e.to_string())?;
        let fs = LoopFs { dir, image };
        // -m 0: no blocks reserved for root (tests may run as root).
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&fs.image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&fs.image)
            .arg(&fs.dir.0))?;
        Ok(fs)
    }
}

impl LoopFs {
    /// As [`mount`](Self::mount), or `None` after saying why the test is
    /// skipped.
    pub fn mount_or_skip(tag: &str, mib: u64) -> Option<LoopFs> {
        match LoopFs::mount(tag, mib) {
            Ok(fs) => Some(fs),
            Err(why) => {
                eprintln!("skipped: cannot mount a small file system here ({why})");
                None
            }
        }
    }

    /// Takes all the free space but `keep` bytes with one file; returns it
    /// (removing it frees the space).
    pub fn fill_leaving(&self, keep: u64) -> PathBuf {
        let filler = self.dir.0.join("filler");
        let fill = free_bytes(&self.dir.0).saturating_sub(keep);
        let status = Command::new("fallocate")
            .args(["-l", &fill.to_string()])
            .arg(&filler)
            .status()
            .expect("fallocate");
        assert!(status.success(), "fallocate the filler");
        filler
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir.0).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df avail")
}
