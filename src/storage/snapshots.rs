//! Snapshot files: the state machine at one log index, streamed to and from disk in bounded
//! memory, on the [`Fs`] seam.
//!
//! ## Format
//! `snapshots/<index, 20 digits>-<term, 20 digits>.snap`:
//! `"STKSNAP4"`, the metadata (`u32` length + bincode `SnapshotMeta`), then one record per
//! state-machine key (`[key length u32][value length u32][key][value]`), then a trailer: a key
//! length of `u32::MAX`, the record count (`u64`) and a crc32 of every byte before the crc. All
//! integers little-endian. A reader checks the crc when it reaches the trailer, so a torn or
//! corrupt file is never taken for a complete one.
//!
//! `"STKSNAP3"`, `"STKSNAP2"` and `"STKSNAP1"` files have the same frame and a format-4,
//! format-3 or format-2 state machine inside; they are still read (an install packs their
//! reservations, `raft::reservations`, and moves and packs their idempotency entries,
//! `raft::idempotency_log`). The magic changes with the state's layout so that a node of an
//! older stockraft refuses a newer snapshot instead of installing a state it would misread
//! (format 5 changed only the reservations' keys, but a format-4 node would read a format-5
//! state as one without reservations).
//!
//! ## Writing: temp file, fsync, rename, fsync the directory
//! A snapshot is written to `<name>.tmp`, fsynced, renamed to `<name>` and the directory
//! fsynced: after a crash a snapshot is either complete under its name or absent. Leftover
//! `.tmp` files (a crash mid-write, an interrupted transfer) are deleted when the directory is
//! opened. Only the newest [`SNAPSHOTS_KEPT`] complete snapshots are kept.
//!
//! ## Memory
//! Reads and writes go through a buffer of [`IO_BUFFER_BYTES`]; nothing here holds a whole
//! snapshot in memory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fs::{Fs, FsFile};

/// What this version writes (a format-5 state machine inside).
const MAGIC: &[u8; 8] = b"STKSNAP4";
/// The same frame around a format-4, format-3 or format-2 state machine (read, never written).
const MAGIC_FORMAT4: &[u8; 8] = b"STKSNAP3";
const MAGIC_FORMAT3: &[u8; 8] = b"STKSNAP2";
const MAGIC_FORMAT2: &[u8; 8] = b"STKSNAP1";
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";
/// A key length that marks the trailer.
const TRAILER_MARK: u32 = u32::MAX;
/// Bytes of buffered I/O per read or write call.
pub const IO_BUFFER_BYTES: usize = 1 << 20;
/// Complete snapshots kept on disk: the newest, and the one before it (which a follower may
/// still be receiving).
pub const SNAPSHOTS_KEPT: usize = 2;
/// Largest key or value accepted when reading a snapshot back: a corrupt length must not make a
/// reader allocate gigabytes. An item is a stored value, so the values' own limit.
const ITEM_BYTES_MAX: usize = super::DISK_DECODE_LIMIT_BYTES;

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot {}: {what}", path.display()),
    )
}

/// The snapshot directory of one node.
#[derive(Clone)]
pub struct SnapshotDir {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
}

/// The file name of the snapshot ending at `(index, term)`.
pub fn file_name(index: u64, term: u64) -> String {
    format!("{index:020}-{term:020}{SUFFIX}")
}

impl SnapshotDir {
    /// Opens (creating) `dir` and deletes leftover temporary files.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path) -> io::Result<Self> {
        fs.create_dir_all(dir)?;
        let leftovers: Vec<String> = fs
            .list(dir)?
            .into_iter()
            .filter(|name| name.ends_with(TEMP_SUFFIX))
            .collect();
        for name in &leftovers {
            fs.remove(&dir.join(name))?;
        }
        if !leftovers.is_empty() {
            fs.sync_dir(dir)?;
        }
        Ok(Self {
            fs,
            dir: dir.to_path_buf(),
        })
    }

    /// The newest complete snapshot, if any.
    pub fn latest(&self) -> io::Result<Option<SnapshotFile>> {
        let newest = self
            .fs
            .list(&self.dir)?
            .into_iter()
            .filter(|name| name.ends_with(SUFFIX))
            .max();
        newest
            .map(|name| SnapshotFile::open(self.fs.clone(), self.dir.join(name)))
            .transpose()
    }

    /// A writer of a new snapshot named `name` (see [`file_name`]), with `meta` as its
    /// metadata.
    pub fn writer(&self, name: &str, meta: &[u8]) -> io::Result<SnapshotWriter> {
        SnapshotWriter::create(self.clone(), name, meta)
    }

    /// Writes one chunk of the incoming transfer `transfer` at `offset` (0 starts the file
    /// over, and drops any other unfinished transfer); returns the file once `done`, complete
    /// and checked. [`SnapshotDir::adopt`] then gives it its name.
    pub fn receive(
        &self,
        transfer: &str,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> io::Result<Option<SnapshotFile>> {
        let name = format!("recv-{transfer}{TEMP_SUFFIX}");
        let path = self.dir.join(&name);
        if offset == 0 {
            for other in self.fs.list(&self.dir)? {
                if other.starts_with("recv-") && other != name {
                    self.fs.remove(&self.dir.join(other))?;
                }
            }
        }
        let file = self.fs.open(&path, offset == 0)?;
        if offset == 0 {
            file.set_len(0)?;
        }
        let size = file.size()?;
        if size != offset {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("snapshot chunk at {offset}, but {size} bytes were received: restart the transfer"),
            ));
        }
        file.write_all_at(offset, data)?;
        if !done {
            return Ok(None);
        }
        file.sync()?;
        let received = SnapshotFile::open(self.fs.clone(), path)?;
        received.verify()?;
        Ok(Some(received))
    }

    /// Makes a received (or freshly written) file at `from` the snapshot `name`: fsync,
    /// rename, fsync the directory, then drop older snapshots beyond [`SNAPSHOTS_KEPT`].
    pub fn adopt(&self, from: &Path, name: &str) -> io::Result<SnapshotFile> {
        let to = self.dir.join(name);
        if from != to {
            self.fs.open(from, false)?.sync()?;
            self.fs.rename(from, &to)?;
        }
        self.fs.sync_dir(&self.dir)?;
        self.prune()?;
        SnapshotFile::open(self.fs.clone(), to)
    }

    /// Deletes all but the newest [`SNAPSHOTS_KEPT`] complete snapshots.
    fn prune(&self) -> io::Result<()> {
        let mut complete: Vec<String> = self
            .fs
            .list(&self.dir)?
            .into_iter()
            .filter(|name| name.ends_with(SUFFIX))
            .collect();
        complete.sort();
        let doomed = complete.len().saturating_sub(SNAPSHOTS_KEPT);
        for name in &complete[..doomed] {
            self.fs.remove(&self.dir.join(name))?;
        }
        if doomed > 0 {
            self.fs.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// `file` as a file of this directory: itself if it is one, else a copy received chunk by
    /// chunk (a snapshot handed over from another store, as openraft's test suite does).
    pub fn local_copy(&self, file: &SnapshotFile) -> io::Result<SnapshotFile> {
        if Arc::ptr_eq(&file.fs, &self.fs) && file.path.parent() == Some(self.dir.as_path()) {
            return Ok(file.clone());
        }
        let mut offset = 0;
        loop {
            let data = file.read_chunk(offset, IO_BUFFER_BYTES)?;
            let done = offset + data.len() as u64 >= file.size;
            if let Some(copy) = self.receive("copy", offset, &data, done)? {
                return Ok(copy);
            }
            offset += data.len() as u64;
        }
    }

    /// Bytes used by the snapshot files.
    pub fn bytes_on_disk(&self) -> u64 {
        self.fs.used_bytes(&self.dir).unwrap_or(0)
    }
}

/// Writes one snapshot: records through a bounded buffer, then the trailer (see the module
/// docs).
pub struct SnapshotWriter {
    dir: SnapshotDir,
    name: String,
    temp: PathBuf,
    file: Arc<dyn FsFile>,
    offset: u64,
    buffer: Vec<u8>,
    hasher: crc32fast::Hasher,
    count: u64,
}

impl SnapshotWriter {
    fn create(dir: SnapshotDir, name: &str, meta: &[u8]) -> io::Result<Self> {
        let temp = dir.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let file = dir.fs.open(&temp, true)?;
        file.set_len(0)?;
        let mut writer = Self {
            dir,
            name: name.to_owned(),
            temp,
            file,
            offset: 0,
            buffer: Vec::with_capacity(IO_BUFFER_BYTES),
            hasher: crc32fast::Hasher::new(),
            count: 0,
        };
        writer.put(MAGIC)?;
        writer.put(&(meta.len() as u32).to_le_bytes())?;
        writer.put(meta)?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= IO_BUFFER_BYTES {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        self.file.write_all_at(self.offset, &self.buffer)?;
        self.offset += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Adds one key and its value.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(value)?;
        self.count += 1;
        Ok(())
    }

    /// Gives up on this file: its temporary file goes (a leftover one would go at the next
    /// open anyway).
    pub fn abandon(self) {
        let _ = self.dir.fs.remove(&self.temp);
    }

    /// Writes the trailer and makes the snapshot durable under its name.
    pub fn finish(mut self) -> io::Result<SnapshotFile> {
        self.put(&TRAILER_MARK.to_le_bytes())?;
        self.put(&self.count.to_le_bytes())?;
        let crc = self.hasher.clone().finalize();
        self.buffer.extend_from_slice(&crc.to_le_bytes());
        let adopted = self
            .drain()
            .and_then(|()| self.dir.adopt(&self.temp, &self.name));
        if adopted.is_err() {
            // Nothing half-written stays behind (a full disk would keep collecting them).
            let _ = self.dir.fs.remove(&self.temp);
        }
        adopted
    }
}

/// A complete snapshot file: what openraft passes around as the snapshot's data.
#[derive(Clone)]
pub struct SnapshotFile {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    file: Arc<dyn FsFile>,
    size: u64,
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SnapshotFile({}, {} bytes)",
            self.path.display(),
            self.size
        )
    }
}

impl SnapshotFile {
    pub fn open(fs: Arc<dyn Fs>, path: PathBuf) -> io::Result<Self> {
        let file = fs.open(&path, false)?;
        let size = file.size()?;
        Ok(Self {
            fs,
            path,
            file,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The metadata bytes at the head of the file.
    pub fn meta(&self) -> io::Result<Vec<u8>> {
        let mut head = [0u8; 12];
        if self.size < 12 {
            return Err(invalid(&self.path, "too short"));
        }
        self.file.read_exact_at(0, &mut head)?;
        if ![MAGIC, MAGIC_FORMAT4, MAGIC_FORMAT3, MAGIC_FORMAT2]
            .iter()
            .any(|magic| magic[..] == head[..8])
        {
            return Err(invalid(&self.path, "not a snapshot file"));
        }
        let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
        if len > ITEM_BYTES_MAX || 12 + len as u64 > self.size {
            return Err(invalid(&self.path, "impossible metadata length"));
        }
        let mut meta = vec![0u8; len];
        self.file.read_exact_at(12, &mut meta)?;
        Ok(meta)
    }

    /// Up to `len` bytes at `offset` (for sending in chunks).
    pub fn read_chunk(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let len = len.min(self.size.saturating_sub(offset) as usize);
        let mut chunk = vec![0u8; len];
        self.file.read_exact_at(offset, &mut chunk)?;
        Ok(chunk)
    }

    /// The records, in bounded memory; the last item is an error if the crc or the trailer
    /// does not check out.
    pub fn records(&self) -> io::Result<SnapshotRecords> {
        let meta = self.meta()?;
        let mut records = SnapshotRecords {
            file: self.file.clone(),
            path: self.path.clone(),
            size: self.size,
            offset: 0,
            buffer: Vec::new(),
            position: 0,
            hasher: crc32fast::Hasher::new(),
            count: 0,
            done: false,
        };
        // Skip (and hash) the head.
        records.take(12 + meta.len())?;
        Ok(records)
    }

    /// Reads the whole file once and checks its trailer.
    pub fn verify(&self) -> io::Result<u64> {
        let mut records = self.records()?;
        let mut count = 0;
        while records.next_record()?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    /// Deletes the file (an install that adopted a copy, or a superseded transfer).
    pub fn remove(&self) -> io::Result<()> {
        self.fs.remove(&self.path)
    }
}

/// An iterator over a snapshot's records that keeps at most [`IO_BUFFER_BYTES`] (plus one
/// record) in memory and checks the crc at the end.
pub struct SnapshotRecords {
    file: Arc<dyn FsFile>,
    path: PathBuf,
    size: u64,
    /// File offset of `buffer[0]`.
    offset: u64,
    buffer: Vec<u8>,
    /// Read position in `buffer`.
    position: usize,
    hasher: crc32fast::Hasher,
    count: u64,
    done: bool,
}

impl SnapshotRecords {
    /// Makes at least `len` unread bytes available in the buffer.
    fn fill(&mut self, len: usize) -> io::Result<()> {
        if self.buffer.len() - self.position >= len {
            return Ok(());
        }
        self.buffer.drain(..self.position);
        self.offset += self.position as u64;
        self.position = 0;
        let file_offset = self.offset + self.buffer.len() as u64;
        let available = self.size.saturating_sub(file_offset) as usize;
        let want = (len - self.buffer.len())
            .max(IO_BUFFER_BYTES)
            .min(available);
        if self.buffer.len() + want < len {
            return Err(invalid(&self.path, "cut short (no trailer)"));
        }
        let start = self.buffer.len();
        self.buffer.resize(start + want, 0);
        self.file
            .read_exact_at(file_offset, &mut self.buffer[start..])
    }

    /// The next `len` bytes, hashed.
    fn take(&mut self, len: usize) -> io::Result<&[u8]> {
        self.fill(len)?;
        let bytes = &self.buffer[self.position..self.position + len];
        self.hasher.update(bytes);
        self.position += len;
        Ok(bytes)
    }

    fn take_u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// The next key and value, `None` after a trailer that checks out.
    pub fn next_record(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        let key_len = self.take_u32()?;
        if key_len == TRAILER_MARK {
            let count = u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
            let computed = self.hasher.clone().finalize();
            self.fill(4)?;
            let stored = u32::from_le_bytes(
                self.buffer[self.position..self.position + 4]
                    .try_into()
                    .expect("4 bytes"),
            );
            if stored != computed || count != self.count {
                return Err(invalid(&self.path, "checksum or record count mismatch"));
            }
            self.done = true;
            return Ok(None);
        }
        let value_len = self.take_u32()? as usize;
        let key_len = key_len as usize;
        if key_len > ITEM_BYTES_MAX || value_len > ITEM_BYTES_MAX {
            return Err(invalid(&self.path, "impossible record length"));
        }
        let key = self.take(key_len)?.to_vec();
        let value = self.take(value_len)?.to_vec();
        self.count += 1;
        Ok(Some((key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::SimFs;

    fn dir(fs: &SimFs) -> SnapshotDir {
        SnapshotDir::open(Arc::new(fs.clone()), Path::new("/node/snapshots")).unwrap()
    }

    fn write(snapshots: &SnapshotDir, index: u64, records: u64) -> SnapshotFile {
        let mut writer = snapshots.writer(&file_name(index, 1), b"meta").unwrap();
        for i in 0..records {
            let value = vec![i as u8; (i % 3000) as usize];
            writer
                .push(format!("key-{i:08}").as_bytes(), &value)
                .unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn a_snapshot_round_trips_larger_than_the_io_buffer() {
        let fs = SimFs::new();
        let snapshots = dir(&fs);
        let file = write(&snapshots, 7, 3_000);
        assert!(
            file.size() > IO_BUFFER_BYTES as u64 * 2,
            "{} bytes",
            file.size()
        );
        assert_eq!(file.meta().unwrap(), b"meta");
        let mut records = file.records().unwrap();
        let mut i = 0u64;
        while let Some((key, value)) = records.next_record().unwrap() {
            assert_eq!(key, format!("key-{i:08}").into_bytes());
            assert_eq!(value.len() as u64, i % 3000);
            i += 1;
        }
        assert_eq!(i, 3_000);
        assert_eq!(snapshots.latest().unwrap().unwrap().path(), file.path());
    }

    #[test]
    fn a_crash_before_the_rename_leaves_no_snapshot_and_the_leftover_is_cleaned() {
        let fs = SimFs::new();
        let snapshots = dir(&fs);
        let mut writer = snapshots.writer(&file_name(3, 1), b"meta").unwrap();
        writer.push(b"k", b"v").unwrap();
        // Crash with the temp file written but never renamed (even its bytes synced).
        writer.drain().unwrap();
        writer.file.sync().unwrap();
        fs.sync_dir(Path::new("/node/snapshots")).unwrap();
        fs.crash(|_| 0);
        let snapshots = dir(&fs);
        assert!(snapshots.latest().unwrap().is_none());
        assert!(fs.list(Path::new("/node/snapshots")).unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_or_cut_snapshot_is_refused_when_read() {
        let fs = SimFs::new();
        let snapshots = dir(&fs);
        let file = write(&snapshots, 5, 100);
        let raw = fs.open(file.path(), false).unwrap();
        raw.write_all_at(40, b"?").unwrap();
        assert!(file.verify().is_err(), "a flipped byte must fail the crc");
        let file = write(&snapshots, 6, 100);
        let raw = fs.open(file.path(), false).unwrap();
        raw.set_len(file.size() - 3).unwrap();
        let cut = SnapshotFile::open(Arc::new(fs.clone()), file.path().to_path_buf()).unwrap();
        assert!(cut.verify().is_err(), "a cut trailer must be refused");
    }

    #[test]
    fn only_the_newest_two_snapshots_are_kept() {
        let fs = SimFs::new();
        let snapshots = dir(&fs);
        for index in 1..=4 {
            write(&snapshots, index, 3);
        }
        let names = fs.list(Path::new("/node/snapshots")).unwrap();
        assert_eq!(names, vec![file_name(3, 1), file_name(4, 1)]);
    }
}
