//! Backup files on the [`Fs`] seam: written under a temporary name, synced, then renamed (a
//! crash leaves the old set of backups or the new one, never a torn file under a backup's
//! name), read front to back, and pruned to the newest few.
//!
//! Names: `backup-<log index, 20 digits>.srb`, so that name order is log order; a temporary
//! file is the name plus `.tmp` and is deleted by the next prune.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::fs::{Fs, FsFile};

/// The suffix of a backup file's name.
pub const SUFFIX: &str = ".srb";
const PREFIX: &str = "backup-";
const TEMP_SUFFIX: &str = ".tmp";

/// The name of the scheduled backup at `log_index`.
pub fn file_name(log_index: u64) -> String {
    format!("{PREFIX}{log_index:020}{SUFFIX}")
}

/// The log index a scheduled backup's name says, if it is one.
pub fn index_of(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// A file on the [`Fs`] seam read front to back.
pub struct FsReader {
    file: Arc<dyn FsFile>,
    offset: u64,
    size: u64,
}

impl FsReader {
    pub fn open(fs: &dyn Fs, path: &Path) -> io::Result<Self> {
        let file = fs.open(path, false)?;
        let size = file.size()?;
        Ok(Self {
            file,
            offset: 0,
            size,
        })
    }
}

impl Read for FsReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let left = self.size.saturating_sub(self.offset);
        let length = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        self.file
            .read_exact_at(self.offset, &mut buffer[..length])?;
        self.offset += length as u64;
        Ok(length)
    }
}

/// A file on the [`Fs`] seam written front to back (callers buffer: each call is one write).
pub struct FsWriter {
    file: Arc<dyn FsFile>,
    offset: u64,
}

impl Write for FsWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(self.offset, bytes)?;
        self.offset += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `path` through `write` under a temporary name, syncs it, renames it to `path` and
/// syncs the directory. On an error the temporary file is removed and `path` is untouched.
pub fn write_atomically<T>(
    fs: &dyn Fs,
    path: &Path,
    write: impl FnOnce(FsWriter) -> io::Result<T>,
) -> io::Result<T> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.create_dir_all(dir)?;
    let temp = temp_path(path);
    let file = fs.open(&temp, true)?;
    file.set_len(0)?;
    let written = write(FsWriter {
        file: file.clone(),
        offset: 0,
    })
    .and_then(|value| {
        file.sync()?;
        fs.rename(&temp, path)?;
        fs.sync_dir(dir)?;
        Ok(value)
    });
    if written.is_err() && fs.exists(&temp) {
        // The error that matters is the write's; a temp file left over goes at the next prune.
        let _ = fs.remove(&temp);
    }
    written
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// Deletes all but the newest `keep` scheduled backups in `dir`, and leftover temporary files.
/// Returns the names deleted.
pub fn prune(fs: &dyn Fs, dir: &Path, keep: usize) -> io::Result<Vec<String>> {
    assert!(keep >= 1, "pruning keeps at least one backup");
    let names = fs.list(dir)?;
    let mut backups: Vec<&String> = names.iter().filter(|n| index_of(n).is_some()).collect();
    backups.sort();
    let doomed_count = backups.len().saturating_sub(keep);
    let mut doomed: Vec<String> = backups[..doomed_count]
        .iter()
        .map(|n| (*n).clone())
        .collect();
    doomed.extend(
        names
            .iter()
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(TEMP_SUFFIX))
            .cloned(),
    );
    for name in &doomed {
        fs.remove(&dir.join(name))?;
    }
    if !doomed.is_empty() {
        fs.sync_dir(dir)?;
    }
    Ok(doomed)
}

/// The log index of the newest scheduled backup in `dir` (None: none, or no such directory).
pub fn newest_index(fs: &dyn Fs, dir: &Path) -> Option<u64> {
    let names = fs.list(dir).ok()?;
    names.iter().filter_map(|name| index_of(name)).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::SimFs;

    #[test]
    fn a_failed_write_leaves_no_file_and_a_good_one_is_renamed() {
        let fs = SimFs::new();
        let path = Path::new("/backups").join(file_name(7));
        let failed = write_atomically(&fs, &path, |_| -> io::Result<()> {
            Err(io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert!(fs.list(Path::new("/backups")).unwrap().is_empty());
        write_atomically(&fs, &path, |mut sink| sink.write_all(b"backup")).unwrap();
        let mut read = Vec::new();
        FsReader::open(&fs, &path)
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, b"backup");
    }

    #[test]
    fn pruning_keeps_the_newest_and_drops_leftovers() {
        let fs = SimFs::new();
        let dir = Path::new("/backups");
        for index in [5, 40, 300, 2_000] {
            write_atomically(&fs, &dir.join(file_name(index)), |_| Ok(())).unwrap();
        }
        fs.open(&dir.join("backup-x.srb.tmp"), true).unwrap();
        fs.open(&dir.join("notes.txt"), true).unwrap();
        prune(&fs, dir, 2).unwrap();
        let mut left = fs.list(dir).unwrap();
        left.sort();
        assert_eq!(
            left,
            vec![file_name(300), file_name(2_000), "notes.txt".to_owned()]
        );
        assert_eq!(newest_index(&fs, dir), Some(2_000));
    }
}
