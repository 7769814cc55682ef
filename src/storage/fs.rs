//! The file seam: the few file operations the Raft log (`wal`) and the snapshot files need, with
//! durability made explicit.
//!
//! Why a seam: the simulation must crash the *real* log and snapshot code and keep only what was
//! synced, as [`SimDisk`](super::SimDisk) does for the state machine. So the WAL and the snapshot
//! store talk to an [`Fs`], and there are two:
//!
//! - [`StdFs`]: the product, on `std::fs`; `sync` is `fdatasync` (`File::sync_data`), `sync_dir`
//!   fsyncs the directory so that created, renamed and removed names survive a power cut.
//! - [`SimFs`]: in memory. A file's bytes survive a [`SimFs::crash`] only up to its last `sync`
//!   (plus, to model a torn write, a seeded-random prefix of what was written after it, from the
//!   first byte that changed: appends and overwrites of preallocated space alike); a
//!   name created, renamed or removed survives only once its directory was synced.
//!
//! The calls are blocking: callers on an async runtime run them on the blocking pool
//! (`tokio::task::spawn_blocking`, which madsim runs inline), never on a worker thread.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Runs a blocking file operation off the async workers: on tokio's blocking pool in the
/// product; inline under madsim, whose simulated files never block (and which forbids blocking
/// threads).
pub async fn blocking<T: Send + 'static>(
    operation: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    #[cfg(madsim)]
    {
        operation()
    }
    #[cfg(not(madsim))]
    {
        match tokio::task::spawn_blocking(operation).await {
            Ok(result) => result,
            Err(join) => Err(io::Error::other(join.to_string())),
        }
    }
}

/// A directory tree of files. Paths are absolute (the node's data directory joined with a name).
pub trait Fs: Send + Sync + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files directly in `dir` (not directories), sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for reading and writing, creating it (empty) if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FsFile>>;
    fn exists(&self, path: &Path) -> bool;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Replaces `to` with `from` (atomically, as `rename(2)`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes every name created, renamed or removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Bytes used by the files in `dir` and below (for the disk bound and the quota).
    fn used_bytes(&self, dir: &Path) -> io::Result<u64>;
}

/// One open file.
pub trait FsFile: Send + Sync {
    fn size(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset` (extending the file if needed).
    fn write_all_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every byte written so far durable (fsync).
    fn sync(&self) -> io::Result<()>;
}

/// The product's files.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

struct StdFile(std::fs::File);

impl FsFile for StdFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn write_all_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, data, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    /// `fdatasync`: the bytes and what reading them back needs (the file's length), without
    /// the timestamps `fsync` would also commit. Every write changes the modification time,
    /// so `fsync` would put each group commit through the file system's journal even when a
    /// preallocated WAL segment did not grow.
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FsFile>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn used_bytes(&self, dir: &Path) -> io::Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                total += self.used_bytes(&entry.path())?;
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
        Ok(total)
    }
}

/// One simulated file: what a reader sees, and what survives a crash.
#[derive(Default)]
struct SimFileData {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default)]
struct SimTree {
    /// File contents by identity; names point at identities.
    files: BTreeMap<u64, SimFileData>,
    /// The names a reader sees.
    names: BTreeMap<PathBuf, u64>,
    /// The names that survive a crash, per directory: a directory's entries become durable as a
    /// whole when it is synced.
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: std::collections::BTreeSet<PathBuf>,
    next_id: u64,
}

/// Files in memory with crash semantics, for the simulation and tests. Clones share the tree,
/// so the harness keeps one per node across its kill and restart.
#[derive(Clone, Default)]
pub struct SimFs {
    tree: Arc<Mutex<SimTree>>,
}

struct SimFile {
    tree: Arc<Mutex<SimTree>>,
    id: u64,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl SimFs {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimTree> {
        self.tree.lock().expect("sim fs lock poisoned")
    }

    /// A power cut. Every file keeps its synced bytes plus the first `torn(unsynced_len)`
    /// bytes written after its last sync, counted from the first byte that changed (0 for a clean cut; a simulation passes a seeded
    /// random draw to model a torn write). Names keep their state as of their directory's
    /// last sync.
    pub fn crash(&self, mut torn: impl FnMut(usize) -> usize) {
        let mut tree = self.lock();
        let tree = &mut *tree;
        for file in tree.files.values_mut() {
            let durable_len = file.durable.len();
            let mut kept = file.durable.clone();
            // Writes since the sync reach the medium in order: the bytes from the first one
            // that differs (an overwrite of preallocated space, or an append) up to a torn
            // point. A file cut shorter since its sync keeps its synced length.
            let first_change = file
                .current
                .iter()
                .zip(&file.durable)
                .position(|(now, synced)| now != synced)
                .unwrap_or(durable_len);
            // Past the last byte written since the sync, nothing is at stake.
            let last_change = if file.current.len() > durable_len {
                file.current.len()
            } else {
                file.current
                    .iter()
                    .zip(&file.durable)
                    .rposition(|(now, synced)| now != synced)
                    .map_or(0, |at| at + 1)
            };
            if last_change > first_change && file.current.len() >= durable_len {
                let unsynced = last_change - first_change;
                let end = first_change + torn(unsynced).min(unsynced);
                if end > kept.len() {
                    kept.resize(end, 0);
                }
                kept[first_change..end].copy_from_slice(&file.current[first_change..end]);
            }
            file.current = kept.clone();
            file.durable = kept;
        }
        tree.names = tree.durable_names.clone();
        let live: std::collections::BTreeSet<u64> = tree.names.values().copied().collect();
        tree.files.retain(|id, _| live.contains(id));
    }

    /// Erases everything (an operator wiping a data directory).
    pub fn wipe(&self) {
        *self.lock() = SimTree::default();
    }
}

impl FsFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        let tree = self.tree.lock().expect("sim fs lock poisoned");
        Ok(tree
            .files
            .get(&self.id)
            .map_or(0, |f| f.current.len() as u64))
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let tree = self.tree.lock().expect("sim fs lock poisoned");
        let data = &tree
            .files
            .get(&self.id)
            .ok_or_else(|| not_found(Path::new("?")))?
            .current;
        let start = offset as usize;
        let end = start
            .checked_add(buf.len())
            .filter(|end| *end <= data.len());
        match end {
            Some(end) => {
                buf.copy_from_slice(&data[start..end]);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            )),
        }
    }

    fn write_all_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut tree = self.tree.lock().expect("sim fs lock poisoned");
        let file = tree.files.entry(self.id).or_default();
        let start = offset as usize;
        if file.current.len() < start + data.len() {
            file.current.resize(start + data.len(), 0);
        }
        file.current[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut tree = self.tree.lock().expect("sim fs lock poisoned");
        let file = tree.files.entry(self.id).or_default();
        file.current.resize(len as usize, 0);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut tree = self.tree.lock().expect("sim fs lock poisoned");
        let file = tree.files.entry(self.id).or_default();
        file.durable = file.current.clone();
        Ok(())
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut tree = self.lock();
        for ancestor in dir.ancestors() {
            tree.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let tree = self.lock();
        if !tree.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(tree
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FsFile>> {
        let mut tree = self.lock();
        let id = match tree.names.get(path) {
            Some(id) => *id,
            None if create => {
                if !path.parent().is_some_and(|dir| tree.dirs.contains(dir)) {
                    return Err(not_found(path));
                }
                let id = tree.next_id;
                tree.next_id += 1;
                tree.files.insert(id, SimFileData::default());
                tree.names.insert(path.to_path_buf(), id);
                id
            }
            None => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile {
            tree: self.tree.clone(),
            id,
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        let tree = self.lock();
        tree.names.contains_key(path) || tree.dirs.contains(path)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut tree = self.lock();
        tree.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut tree = self.lock();
        let id = tree.names.remove(from).ok_or_else(|| not_found(from))?;
        tree.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut tree = self.lock();
        let tree = &mut *tree;
        tree.durable_names
            .retain(|path, _| path.parent() != Some(dir));
        for (path, id) in &tree.names {
            if path.parent() == Some(dir) {
                tree.durable_names.insert(path.clone(), *id);
            }
        }
        Ok(())
    }

    fn used_bytes(&self, dir: &Path) -> io::Result<u64> {
        let tree = self.lock();
        Ok(tree
            .names
            .iter()
            .filter(|(path, _)| path.starts_with(dir))
            .filter_map(|(_, id)| tree.files.get(id))
            .map(|file| file.current.len() as u64)
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &dyn Fs, path: &Path, data: &[u8]) -> Arc<dyn FsFile> {
        let file = fs.open(path, true).unwrap();
        let len = file.size().unwrap();
        file.write_all_at(len, data).unwrap();
        file
    }

    fn read_all(fs: &dyn Fs, path: &Path) -> Vec<u8> {
        let file = fs.open(path, false).unwrap();
        let mut buf = vec![0; file.size().unwrap() as usize];
        file.read_exact_at(0, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_sim_crash_keeps_synced_bytes_and_synced_names_only() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let synced = write(&fs, &dir.join("a"), b"hello");
        synced.sync().unwrap();
        fs.sync_dir(dir).unwrap();
        synced.write_all_at(5, b" world").unwrap();
        write(&fs, &dir.join("b"), b"never named durably")
            .sync()
            .unwrap();
        fs.crash(|_| 0);
        assert_eq!(read_all(&fs, &dir.join("a")), b"hello");
        assert!(!fs.exists(&dir.join("b")), "b's name was never synced");
    }

    #[test]
    fn a_torn_write_keeps_a_prefix_of_the_unsynced_bytes() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let file = write(&fs, &dir.join("a"), b"abc");
        file.sync().unwrap();
        fs.sync_dir(dir).unwrap();
        file.write_all_at(3, b"defgh").unwrap();
        fs.crash(|unsynced| {
            assert_eq!(unsynced, 5);
            2
        });
        assert_eq!(read_all(&fs, &dir.join("a")), b"abcde");
    }

    #[test]
    fn a_rename_is_durable_once_the_directory_is_synced() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        write(&fs, &dir.join("tmp"), b"x").sync().unwrap();
        fs.sync_dir(dir).unwrap();
        fs.rename(&dir.join("tmp"), &dir.join("final")).unwrap();
        fs.crash(|_| 0);
        assert!(fs.exists(&dir.join("tmp")) && !fs.exists(&dir.join("final")));
        fs.rename(&dir.join("tmp"), &dir.join("final")).unwrap();
        fs.sync_dir(dir).unwrap();
        fs.crash(|_| 0);
        assert_eq!(read_all(&fs, &dir.join("final")), b"x");
        assert_eq!(fs.list(dir).unwrap(), vec!["final".to_owned()]);
    }

    #[test]
    fn std_fs_reads_writes_renames_and_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = StdFs;
        let file = write(&fs, &tmp.path().join("a"), b"abc");
        file.write_all_at(3, b"def").unwrap();
        file.sync().unwrap();
        file.set_len(4).unwrap();
        fs.rename(&tmp.path().join("a"), &tmp.path().join("b"))
            .unwrap();
        fs.sync_dir(tmp.path()).unwrap();
        assert_eq!(read_all(&fs, &tmp.path().join("b")), b"abcd");
        assert_eq!(fs.list(tmp.path()).unwrap(), vec!["b".to_owned()]);
        assert_eq!(fs.used_bytes(tmp.path()).unwrap(), 4);
    }
}
