//! The checkpoint file: every (container, drain) cursor's acknowledged [`Position`].
//!
//! `<state_dir>/checkpoints.json` is `{"version":1,"cursors":[{"container":…,"drain":…,
//! "position":…}]}`. Invariants:
//! * it is replaced atomically: write `checkpoints.json.tmp`, fsync it, move the current file to
//!   `checkpoints.json.prev`, rename the temporary file into place, fsync the directory; so at any
//!   moment either the current or the previous good file is complete;
//! * a file that does not parse is set aside (`checkpoints.json.corrupt`), reported, and the
//!   `.prev` file is used instead: a few lines may be sent again, none is lost, and the collector
//!   never crash-loops on its own state.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::pipeline::Position;

/// The checkpoint format version this engine reads and writes.
pub const VERSION: u32 = 1;

/// A checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a checkpoint file failed.
    #[error("checkpoint {path}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a checkpoint this engine understands.
    #[error("checkpoint {path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The key of one cursor: container key and drain name.
pub type CursorKey = (String, String);

#[derive(Serialize, Deserialize)]
struct File1 {
    version: u32,
    /// Named `streams` in the file, which older releases read and write too.
    #[serde(rename = "streams")]
    cursors: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    container: String,
    drain: String,
    position: Position,
}

/// Where the checkpoint of one state directory lives.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// What [`Store::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The positions, by cursor.
    pub positions: BTreeMap<CursorKey, Position>,
    /// Files that were corrupt and set aside (each already moved out of the way).
    pub corrupt: Vec<Error>,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

impl Store {
    /// The store in `dir`, which is created if missing. The directory is made private (0700):
    /// besides the cursors it holds inflated copies of compressed logs, which are tenants' lines.
    pub fn open(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir, "create directory"))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir, "make private"))?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// The current checkpoint file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("checkpoints.json")
    }

    fn prev_path(&self) -> PathBuf {
        self.dir.join("checkpoints.json.prev")
    }

    /// Load the current checkpoint, falling back to the previous one when the current is missing
    /// or corrupt. No checkpoint at all is an empty one.
    pub fn load(&self) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        for path in [self.path(), self.prev_path()] {
            match read(&path) {
                Ok(Some(positions)) => {
                    loaded.positions = positions;
                    return Ok(loaded);
                }
                Ok(None) => {}
                Err(corrupt @ Error::Corrupt { .. }) => {
                    let aside = path.with_extension("json.corrupt");
                    let aside = if path == self.prev_path() {
                        path.with_extension("prev.corrupt")
                    } else {
                        aside
                    };
                    fs::rename(&path, &aside).map_err(io_err(&path, "set aside"))?;
                    loaded.corrupt.push(corrupt);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(loaded)
    }

    /// Replace the checkpoint atomically with `positions`.
    pub fn write(&self, positions: &BTreeMap<CursorKey, Position>) -> Result<()> {
        let file = File1 {
            version: VERSION,
            cursors: positions
                .iter()
                .map(|((container, drain), position)| Entry {
                    container: container.clone(),
                    drain: drain.clone(),
                    position: *position,
                })
                .collect(),
        };
        let text = serde_json::to_vec(&file).expect("invariant: positions always serialize");
        let tmp = self.dir.join("checkpoints.json.tmp");
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp, "create"))?
        };
        // A temporary file left by an older release may have wider permissions.
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io_err(&tmp, "make private"))?;
        }
        f.write_all(&text).map_err(io_err(&tmp, "write"))?;
        f.sync_all().map_err(io_err(&tmp, "fsync"))?;
        drop(f);
        let current = self.path();
        match fs::rename(&current, self.prev_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io {
                    path: current,
                    op: "keep as .prev",
                    source: e,
                });
            }
        }
        fs::rename(&tmp, &current).map_err(io_err(&current, "rename into place"))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir, "fsync directory"))
    }
}

/// `Ok(None)` when the file does not exist.
fn read(path: &Path) -> Result<Option<BTreeMap<CursorKey, Position>>> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io {
                path: path.to_owned(),
                op: "read",
                source: e,
            });
        }
    };
    let corrupt = |message: String| Error::Corrupt {
        path: path.to_owned(),
        message,
    };
    let file: File1 = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != VERSION {
        return Err(corrupt(format!("version {} is not {VERSION}", file.version)));
    }
    Ok(Some(
        file.cursors
            .into_iter()
            .map(|e| ((e.container, e.drain), e.position))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{FileId, FilePos};

    fn pos(offset: u64) -> Position {
        let file = FileId {
            dev: 1,
            ino: 2,
            head_hash: 3,
            head_len: 4,
        };
        Position {
            resume: FilePos { file, offset },
            acked_end: FilePos {
                file,
                offset: offset + 5,
            },
        }
    }

    #[test]
    fn the_state_directory_and_checkpoint_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let store = Store::open(&dir).unwrap();
        store
            .write(&BTreeMap::from([(("docker/a".into(), "d".into()), pos(7))]))
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&store.path()), 0o600);
    }

    /// The file keeps the format older releases read and write: a checkpoint written by one
    /// loads, and one written now names its cursors `streams`.
    #[test]
    fn the_file_format_is_the_one_older_releases_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let old = r#"{"version":1,"streams":[{"container":"docker/abc","drain":"d1","position":{"resume":{"file":{"dev":1,"ino":2,"head_hash":3,"head_len":4},"offset":10},"acked_end":{"file":{"dev":1,"ino":2,"head_hash":3,"head_len":4},"offset":15}}}]}"#;
        fs::write(store.path(), old).unwrap();
        let key = ("docker/abc".to_owned(), "d1".to_owned());
        let loaded = store.load().unwrap();
        assert_eq!(loaded.positions, BTreeMap::from([(key.clone(), pos(10))]));
        store.write(&loaded.positions).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(written, serde_json::from_str::<serde_json::Value>(old).unwrap());
    }

    #[test]
    fn round_trip_prev_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        assert!(store.load().unwrap().positions.is_empty(), "no checkpoint yet");
        let key = ("docker/abc".to_owned(), "d1".to_owned());
        store.write(&BTreeMap::from([(key.clone(), pos(10))])).unwrap();
        store.write(&BTreeMap::from([(key.clone(), pos(20))])).unwrap();
        assert_eq!(store.load().unwrap().positions[&key], pos(20));
        // A torn current file: the previous one is used and the torn one set aside.
        let text = fs::read(store.path()).unwrap();
        fs::write(store.path(), &text[..text.len() / 2]).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.positions[&key], pos(10));
        assert_eq!(loaded.corrupt.len(), 1);
        assert!(loaded.corrupt[0].to_string().contains("checkpoints.json"));
        assert!(dir.path().join("state/checkpoints.json.corrupt").exists());
        // Both gone bad: start empty, never fail.
        fs::write(store.prev_path(), b"{\"version\":7,\"streams\":[]}").unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.positions.is_empty());
        assert_eq!(loaded.corrupt.len(), 1);
    }
}
