//! A tmpfs of a given size mounted on a fresh directory, unmounted when dropped (failures
//! included), for tests of a full disk. Mounting needs root.
//!
//! Self-contained (std, libc and tempfile only): the collector's engine tests include this file
//! too (`#[path]`), so both kinds of test fill a disk the same way.

use std::{fs, io, path::Path, process::Command};

/// A mounted tmpfs; see the module docs.
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` bytes (mode 0700) on a fresh temporary directory.
    pub fn mount(size: u64) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sluice-tmpfs-").tempdir()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "mounting a tmpfs on {} failed ({}; it needs root): {}",
                dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Self { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill it up with file `filler` (written until the disk is full).
    pub fn fill(&self, filler: &str) -> io::Result<()> {
        use std::io::Write as _;
        let mut f = fs::File::create(self.dir.path().join(filler))?;
        let block = vec![0u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, so a process still holding a file there cannot keep the mount behind.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
