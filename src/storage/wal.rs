//! The Raft log as a write-ahead log: append-only segment files of checksummed records, on the
//! [`Fs`] seam.
//!
//! ## Format
//! A segment is `wal/<sequence, 20 digits>.wal`, a run of records:
//! `[payload length: u32 LE][crc32 of the payload: u32 LE][payload]`, where the payload is one
//! byte of kind and its body:
//!
//! | kind | body | meaning |
//! |---|---|---|
//! | 1 entry | index (u64 LE), entry bytes | the log entry at `index` (replaces a truncated one) |
//! | 2 vote | vote bytes | the latest vote |
//! | 3 committed | log id bytes | the latest committed log id (a hint, see `log_store`) |
//! | 4 truncate | 0, or 1 and an index (u64 LE) | drop every entry after the index (all if 0) |
//! | 5 purge | index (u64 LE), log id bytes | entries up to the index are covered by a snapshot |
//!
//! The WAL knows indexes but not terms: entries, votes and log ids are opaque bytes encoded by
//! the log store above it.
//!
//! ## Durability: group commit
//! Writes go to the active segment at once (so appended entries are readable when `append`
//! returns, as openraft requires); durability is a separate step. [`Wal::flush`] queues a
//! callback; one background task fsyncs the active segment once for every callback queued up to
//! that point and then fires them. Concurrent appends and a vote thus share one fsync, and
//! nothing is acknowledged before the fsync that covers it. A vote waits for its sync
//! ([`Wal::sync`]); a committed index or a truncation rides on the next sync. A purge syncs its
//! record before deleting segments, so a crash cannot leave a hole behind a lost purge record.
//!
//! ## Preallocation
//! A segment is extended with zeros ahead of its records, a step at a time
//! ([`preallocation_step`]: 1 MiB for the default 16 MiB segment), and records then overwrite
//! the zeros. Why: an fsync of a file that grew must also commit the file's new size and
//! blocks through the file system's journal, which the three nodes of a cluster on one disk
//! queue for together; `perf` and the WAL's sync histogram put a group commit at 200-400 µs on
//! this machine, against ~150 µs for an fsync that only writes data. The first sync after a
//! step pays the growth once per step. A segment's zero tail is trimmed when it closes.
//!
//! ## Segments and purge
//! The active segment rolls when it passes `segment_bytes_max`: the old one is fsynced, the new
//! one starts with the current vote, committed id and purge point, so that any older segment
//! can be deleted without losing them. A purge deletes every closed segment whose entries are
//! all at or below the purge point: disk holds the retained log plus one partial segment.
//!
//! ## Recovery
//! Segments are replayed in order. In the last segment, zeros to the end of the file are its
//! preallocated space: the log ends there. A record cut short by a crash (a torn write: length
//! beyond the end, or a checksum that fails with nothing valid after it) also marks the end of
//! the log: the file is cut there, since nothing after the last fsync was acknowledged, and
//! no stale bytes may stay behind the records written next. A bad record anywhere else (an
//! older segment, trimmed when it closed, or the last one with valid records after it) is
//! corruption, and the node refuses to start, naming the file and offset.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::fs::{Fs, FsFile};
use crate::telemetry::Telemetry;

/// Largest record accepted when reading back: a corrupt length must not make recovery allocate
/// gigabytes. Entries are small (a batch create of 500 records is under 100 KiB; the largest,
/// a batch of 10,000 lines with the longest ids, ~1.1 MiB).
pub const RECORD_BYTES_MAX: usize = 16 << 20;
/// Default size at which the active segment rolls over.
pub const SEGMENT_BYTES_DEFAULT: u64 = 16 << 20;
/// Most bytes a segment is extended by at a time (see "Preallocation").
const PREALLOCATION_BYTES_MAX: u64 = 1 << 20;
/// Bytes of a record header: payload length and checksum.
const HEADER_BYTES: usize = 8;
const SEGMENT_SUFFIX: &str = ".wal";

const KIND_ENTRY: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_COMMITTED: u8 = 3;
const KIND_TRUNCATE: u8 = 4;
const KIND_PURGE: u8 = 5;

/// How to open a WAL.
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub segment_bytes_max: u64,
    /// Where each group-commit sync is reported (duration, waiters), if anywhere.
    pub telemetry: Option<Arc<Telemetry>>,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            telemetry: None,
        }
    }
}

/// Where an entry lives.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    /// Offset of the entry bytes (after the record header, kind and index).
    offset: u64,
    len: u32,
}

struct Segment {
    file: Arc<dyn FsFile>,
    /// Bytes of records: where the next one goes.
    len: u64,
    /// The file's length: `len` and the zeros preallocated after it.
    allocated: u64,
    /// Highest entry index ever written into this segment (it may contain truncated ones).
    max_index: Option<u64>,
}

/// What replaying the records says.
#[derive(Default)]
struct State {
    index: BTreeMap<u64, Location>,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    active: u64,
    state: State,
}

/// A callback waiting for the fsync that covers it.
type Waiter = Box<dyn FnOnce(io::Result<()>) + Send>;

/// The write-ahead log of one node. Cheap to share (`Arc`); writes are serialized inside.
pub struct Wal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: WalOptions,
    inner: Mutex<Inner>,
    syncer: mpsc::UnboundedSender<Waiter>,
}

fn corrupt(path: &Path, offset: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "corrupt Raft log {} at offset {offset}: {what}; the node cannot trust its log \
             (restore the data directory, or wipe it and re-add the node)",
            path.display()
        ),
    )
}

/// How far ahead of its records a segment of at most `segment_bytes_max` is extended with zeros:
/// a sixteenth of it, between 4 KiB and [`PREALLOCATION_BYTES_MAX`].
pub fn preallocation_step(segment_bytes_max: u64) -> u64 {
    (segment_bytes_max / 16).clamp(4096, PREALLOCATION_BYTES_MAX)
}

/// Zeros written at a time when extending a segment.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

impl Segment {
    /// Extends the file with zeros so that it holds at least `end` bytes plus a step.
    fn make_room(&mut self, end: u64, step: u64) -> io::Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        let target = end + step;
        let mut at = self.allocated;
        while at < target {
            let chunk = (target - at).min(ZEROS.len() as u64);
            self.file.write_all_at(at, &ZEROS[..chunk as usize])?;
            at += chunk;
        }
        self.allocated = target;
        Ok(())
    }
}

fn segment_name(sequence: u64) -> String {
    format!("{sequence:020}{SEGMENT_SUFFIX}")
}

fn encode_record(kind: u8, body: &[&[u8]], out: &mut Vec<u8>) {
    let payload_len = 1 + body.iter().map(|part| part.len()).sum::<usize>();
    let start = out.len();
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    for part in body {
        out.extend_from_slice(part);
    }
    let crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// One record read back: its payload, or why it could not be read.
enum Read {
    Record(Vec<u8>),
    /// Nothing more: the end of the file.
    End,
    /// A record that does not check out: `reason`.
    Bad(&'static str),
}

fn read_record(file: &dyn FsFile, offset: u64, file_len: u64) -> io::Result<Read> {
    if offset == file_len {
        return Ok(Read::End);
    }
    if offset + HEADER_BYTES as u64 > file_len {
        return Ok(Read::Bad("a record header cut short"));
    }
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(offset, &mut header)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 || len > RECORD_BYTES_MAX {
        return Ok(Read::Bad("an impossible record length"));
    }
    if offset + (HEADER_BYTES + len) as u64 > file_len {
        return Ok(Read::Bad("a record cut short"));
    }
    let mut payload = vec![0u8; len];
    file.read_exact_at(offset + HEADER_BYTES as u64, &mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(Read::Bad("a checksum mismatch"));
    }
    Ok(Read::Record(payload))
}

/// Drops the entries after `after`. Indexes come from disk, so even `u64::MAX` is no panic.
fn drop_after(index: &mut BTreeMap<u64, Location>, after: u64) {
    if let Some(first_dropped) = after.checked_add(1) {
        index.split_off(&first_dropped);
    }
}

/// Drops the entries up to and including `upto`.
fn drop_upto(index: &mut BTreeMap<u64, Location>, upto: u64) {
    *index = match upto.checked_add(1) {
        Some(first_kept) => index.split_off(&first_kept),
        None => BTreeMap::new(),
    };
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

impl State {
    /// Applies one record's payload, found at `offset` of `segment`.
    fn replay(
        &mut self,
        segment: u64,
        offset: u64,
        payload: &[u8],
    ) -> Result<Option<u64>, &'static str> {
        let body = &payload[1..];
        match payload[0] {
            KIND_ENTRY => {
                let index = u64_at(body, 0).ok_or("an entry record without an index")?;
                let location = Location {
                    segment,
                    offset: offset + (HEADER_BYTES + 1 + 8) as u64,
                    len: (body.len() - 8) as u32,
                };
                self.index.insert(index, location);
                return Ok(Some(index));
            }
            KIND_VOTE => self.vote = Some(body.to_vec()),
            KIND_COMMITTED => self.committed = Some(body.to_vec()),
            KIND_TRUNCATE => match body.first() {
                Some(0) => self.index.clear(),
                Some(1) => {
                    let after = u64_at(body, 1).ok_or("a truncate record without an index")?;
                    drop_after(&mut self.index, after);
                }
                _ => return Err("a malformed truncate record"),
            },
            KIND_PURGE => {
                let upto = u64_at(body, 0).ok_or("a purge record without an index")?;
                drop_upto(&mut self.index, upto);
                self.purged = Some((upto, body[8..].to_vec()));
            }
            _ => return Err("an unknown record kind"),
        }
        Ok(None)
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, replaying and repairing it (see the module docs).
    /// Blocking; call it from a blocking context or at start-up. Spawns the sync task on the
    /// current runtime.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, options: WalOptions) -> io::Result<Arc<Self>> {
        fs.create_dir_all(dir)?;
        let mut sequences: Vec<u64> = fs
            .list(dir)?
            .iter()
            .filter_map(|name| name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok())
            .collect();
        sequences.sort_unstable();
        let mut state = State::default();
        let mut segments = BTreeMap::new();
        for (position, &sequence) in sequences.iter().enumerate() {
            let path = dir.join(segment_name(sequence));
            let file = fs.open(&path, false)?;
            let is_last = position + 1 == sequences.len();
            let replayed = replay_segment(&*file, &path, sequence, is_last, &mut state)?;
            segments.insert(
                sequence,
                Segment {
                    file,
                    len: replayed.len,
                    allocated: replayed.allocated,
                    max_index: replayed.max_index,
                },
            );
        }
        let (syncer, waiters) = mpsc::unbounded_channel();
        let wal = Arc::new(Self {
            fs,
            dir: dir.to_path_buf(),
            options,
            inner: Mutex::new(Inner {
                segments,
                active: 0,
                state,
            }),
            syncer,
        });
        {
            let mut inner = wal.lock();
            match inner.segments.keys().next_back().copied() {
                Some(last) => inner.active = last,
                None => wal.start_segment(&mut inner, 1)?,
            }
        }
        tokio::spawn(sync_loop(Arc::downgrade(&wal), waiters));
        Ok(wal)
    }

    fn preallocation_step(&self) -> u64 {
        preallocation_step(self.options.segment_bytes_max)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates segment `sequence` as the active one, starting with the current vote, committed
    /// id and purge point, and makes its name durable.
    fn start_segment(&self, inner: &mut Inner, sequence: u64) -> io::Result<()> {
        let file = self.fs.open(&self.dir.join(segment_name(sequence)), true)?;
        file.set_len(0)?;
        let mut bytes = Vec::new();
        if let Some(vote) = &inner.state.vote {
            encode_record(KIND_VOTE, &[vote], &mut bytes);
        }
        if let Some(committed) = &inner.state.committed {
            encode_record(KIND_COMMITTED, &[committed], &mut bytes);
        }
        if let Some((upto, log_id)) = &inner.state.purged {
            encode_record(KIND_PURGE, &[&upto.to_le_bytes(), log_id], &mut bytes);
        }
        file.write_all_at(0, &bytes)?;
        let mut segment = Segment {
            file,
            len: bytes.len() as u64,
            allocated: bytes.len() as u64,
            max_index: None,
        };
        segment.make_room(segment.len, self.preallocation_step())?;
        segment.file.sync()?;
        self.fs.sync_dir(&self.dir)?;
        inner.segments.insert(sequence, segment);
        inner.active = sequence;
        Ok(())
    }

    /// Writes `bytes` (whole records) to the active segment, rolling first if it is full.
    fn write(&self, inner: &mut Inner, bytes: &[u8]) -> io::Result<u64> {
        let full = inner.segments[&inner.active].len >= self.options.segment_bytes_max;
        if full {
            // The old segment loses its zero tail (only the last segment may end in zeros),
            // and its last bytes must be durable before any waiter is told so: the sync task
            // only syncs the active segment. Both before the next segment exists.
            let closing = &inner.segments[&inner.active];
            closing.file.set_len(closing.len)?;
            closing.file.sync()?;
            let next = inner.active + 1;
            self.start_segment(inner, next)?;
        }
        let step = self.preallocation_step();
        let segment = inner
            .segments
            .get_mut(&inner.active)
            .expect("the active segment");
        let offset = segment.len;
        segment.make_room(offset + bytes.len() as u64, step)?;
        segment.file.write_all_at(offset, bytes)?;
        segment.len += bytes.len() as u64;
        Ok(offset)
    }

    /// Appends entries (`(index, bytes)`, consecutive). Readable at once; durable after the
    /// next [`Wal::flush`] or [`Wal::sync`].
    pub fn append(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let mut bytes = Vec::new();
        let mut starts = Vec::with_capacity(entries.len());
        for (index, entry) in entries {
            starts.push(bytes.len() as u64);
            encode_record(KIND_ENTRY, &[&index.to_le_bytes(), entry], &mut bytes);
        }
        let mut inner = self.lock();
        let base = self.write(&mut inner, &bytes)?;
        let active = inner.active;
        for ((index, entry), start) in entries.iter().zip(starts) {
            let location = Location {
                segment: active,
                offset: base + start + (HEADER_BYTES + 1 + 8) as u64,
                len: entry.len() as u32,
            };
            inner.state.index.insert(*index, location);
        }
        if let Some((last, _)) = entries.last() {
            let segment = inner.segments.get_mut(&active).expect("the active segment");
            segment.max_index = Some(segment.max_index.map_or(*last, |m| m.max(*last)));
        }
        Ok(())
    }

    /// Calls `done` once everything written before this call is durable (one fsync shared with
    /// every other waiter queued meanwhile).
    pub fn flush(&self, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        if let Err(mpsc::error::SendError(waiter)) = self.syncer.send(Box::new(done)) {
            waiter(Err(io::Error::other("the WAL sync task has stopped")));
        }
    }

    /// Waits until everything written before this call is durable.
    pub async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flush(move |result| {
            let _ = tx.send(result);
        });
        rx.await
            .map_err(|_| io::Error::other("the WAL sync task has stopped"))?
    }

    /// Saves the vote and waits until it is durable.
    pub async fn save_vote(&self, vote: &[u8]) -> io::Result<()> {
        {
            let mut inner = self.lock();
            let mut bytes = Vec::new();
            encode_record(KIND_VOTE, &[vote], &mut bytes);
            self.write(&mut inner, &bytes)?;
            inner.state.vote = Some(vote.to_vec());
        }
        self.sync().await
    }

    /// Records the committed log id; durable with the next sync.
    pub fn save_committed(&self, committed: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        let mut bytes = Vec::new();
        encode_record(KIND_COMMITTED, &[committed], &mut bytes);
        self.write(&mut inner, &bytes)?;
        inner.state.committed = Some(committed.to_vec());
        Ok(())
    }

    /// Drops every entry after `after` (all of them if `None`); durable with the next sync.
    pub fn truncate_after(&self, after: Option<u64>) -> io::Result<()> {
        let mut inner = self.lock();
        let mut bytes = Vec::new();
        match after {
            Some(index) => encode_record(KIND_TRUNCATE, &[&[1], &index.to_le_bytes()], &mut bytes),
            None => encode_record(KIND_TRUNCATE, &[&[0]], &mut bytes),
        }
        self.write(&mut inner, &bytes)?;
        match after {
            Some(index) => drop_after(&mut inner.state.index, index),
            None => inner.state.index.clear(),
        }
        Ok(())
    }

    /// Marks entries up to `upto` (whose log id is `log_id`) as covered by a snapshot, makes
    /// that durable, then deletes the segments that hold nothing newer.
    pub async fn purge(&self, upto: u64, log_id: &[u8]) -> io::Result<()> {
        {
            let mut inner = self.lock();
            let mut bytes = Vec::new();
            encode_record(KIND_PURGE, &[&upto.to_le_bytes(), log_id], &mut bytes);
            self.write(&mut inner, &bytes)?;
            drop_upto(&mut inner.state.index, upto);
            inner.state.purged = Some((upto, log_id.to_vec()));
        }
        self.sync().await?;
        let doomed: Vec<u64> = {
            let inner = self.lock();
            inner
                .segments
                .iter()
                .filter(|(sequence, segment)| {
                    **sequence != inner.active && segment.max_index.is_none_or(|max| max <= upto)
                })
                .map(|(sequence, _)| *sequence)
                .collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        for sequence in &doomed {
            self.fs.remove(&self.dir.join(segment_name(*sequence)))?;
        }
        self.fs.sync_dir(&self.dir)?;
        let mut inner = self.lock();
        for sequence in doomed {
            inner.segments.remove(&sequence);
        }
        Ok(())
    }

    /// The entry at `index`, if the log holds it.
    pub fn entry(&self, index: u64) -> io::Result<Option<Vec<u8>>> {
        let (file, location) = {
            let inner = self.lock();
            let Some(location) = inner.state.index.get(&index).copied() else {
                return Ok(None);
            };
            (inner.segments[&location.segment].file.clone(), location)
        };
        let mut bytes = vec![0u8; location.len as usize];
        file.read_exact_at(location.offset, &mut bytes)?;
        Ok(Some(bytes))
    }

    /// Entries with `start <= index < end`, in order (stops at the first missing index).
    pub fn entries(&self, start: u64, end: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let indexes: Vec<u64> = {
            let inner = self.lock();
            inner
                .state
                .index
                .range(start..end)
                .map(|(i, _)| *i)
                .collect()
        };
        let mut out = Vec::with_capacity(indexes.len());
        for index in indexes {
            match self.entry(index)? {
                Some(bytes) => out.push((index, bytes)),
                None => break,
            }
        }
        Ok(out)
    }

    /// The last entry's index and bytes.
    /// The index of the last entry, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.lock().state.index.keys().next_back().copied()
    }

    pub fn last_entry(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        let last = self.lock().state.index.keys().next_back().copied();
        match last {
            Some(index) => Ok(self.entry(index)?.map(|bytes| (index, bytes))),
            None => Ok(None),
        }
    }

    /// The directory of the segment files (for error messages).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn vote(&self) -> Option<Vec<u8>> {
        self.lock().state.vote.clone()
    }

    pub fn committed(&self) -> Option<Vec<u8>> {
        self.lock().state.committed.clone()
    }

    /// The purge point: its index and log id bytes.
    pub fn purged(&self) -> Option<(u64, Vec<u8>)> {
        self.lock().state.purged.clone()
    }

    /// Bytes in the segment files (for the disk bound and the snapshot trigger).
    pub fn bytes_on_disk(&self) -> u64 {
        self.lock().segments.values().map(|s| s.len).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    fn active_file(&self) -> Arc<dyn FsFile> {
        let inner = self.lock();
        inner.segments[&inner.active].file.clone()
    }
}

/// What replaying a segment found.
struct Replayed {
    /// Bytes of valid records.
    len: u64,
    /// The file's length after recovery (zeros after `len` are preallocated space).
    allocated: u64,
    max_index: Option<u64>,
}

/// Replays one segment into `state`. Cuts a torn tail of the last segment (see the module docs).
fn replay_segment(
    file: &dyn FsFile,
    path: &Path,
    sequence: u64,
    is_last: bool,
    state: &mut State,
) -> io::Result<Replayed> {
    let file_len = file.size()?;
    let mut offset = 0u64;
    let mut max_index: Option<u64> = None;
    loop {
        let ended = |len| Replayed {
            len,
            allocated: file_len,
            max_index,
        };
        let reason = match read_record(file, offset, file_len)? {
            Read::End => return Ok(ended(offset)),
            Read::Record(payload) => match state.replay(sequence, offset, &payload) {
                Ok(index) => {
                    if let Some(index) = index {
                        max_index = Some(max_index.map_or(index, |m| m.max(index)));
                    }
                    offset += (HEADER_BYTES + payload.len()) as u64;
                    continue;
                }
                Err(reason) => reason,
            },
            Read::Bad(reason) => reason,
        };
        if is_last && only_zeros_from(file, offset, file_len)? {
            // The preallocated space after the last record.
            return Ok(ended(offset));
        }
        if !is_last || valid_record_follows(file, offset, file_len)? {
            return Err(corrupt(path, offset, reason));
        }
        tracing::warn!(
            file = %path.display(),
            offset,
            dropped_bytes = file_len - offset,
            "cutting a torn tail off the Raft log (bytes written after the last fsync)"
        );
        file.set_len(offset)?;
        file.sync()?;
        return Ok(Replayed {
            len: offset,
            allocated: offset,
            max_index,
        });
    }
}

/// Whether every byte of the file from `offset` on is zero.
fn only_zeros_from(file: &dyn FsFile, mut offset: u64, file_len: u64) -> io::Result<bool> {
    let mut buffer = vec![0u8; ZEROS.len()];
    while offset < file_len {
        let chunk = &mut buffer[..(file_len - offset).min(ZEROS.len() as u64) as usize];
        file.read_exact_at(offset, chunk)?;
        if chunk.iter().any(|&byte| byte != 0) {
            return Ok(false);
        }
        offset += chunk.len() as u64;
    }
    Ok(true)
}

/// Whether a valid record starts right after the (plausibly framed) bad record at `offset`: then
/// the bad one is not a torn tail but corruption in the middle of the log.
fn valid_record_follows(file: &dyn FsFile, offset: u64, file_len: u64) -> io::Result<bool> {
    let mut header = [0u8; HEADER_BYTES];
    if offset + HEADER_BYTES as u64 > file_len {
        return Ok(false);
    }
    file.read_exact_at(offset, &mut header)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
    let next = offset + HEADER_BYTES as u64 + len;
    if len == 0 || len > RECORD_BYTES_MAX as u64 || next >= file_len {
        return Ok(false);
    }
    Ok(matches!(
        read_record(file, next, file_len)?,
        Read::Record(_)
    ))
}

/// The group-commit task: waits for a first waiter, takes every other one queued meanwhile,
/// fsyncs the active segment once, and answers them all. Ends when the WAL is dropped.
async fn sync_loop(wal: std::sync::Weak<Wal>, mut waiters: mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = waiters.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = waiters.try_recv() {
            batch.push(more);
        }
        let Some((file, telemetry)) = wal
            .upgrade()
            .map(|wal| (wal.active_file(), wal.options.telemetry.clone()))
        else {
            for waiter in batch {
                waiter(Err(io::Error::other("the WAL was closed")));
            }
            return;
        };
        let started = tokio::time::Instant::now();
        let result = super::fs::blocking(move || file.sync()).await;
        if let Some(telemetry) = telemetry {
            telemetry.wal_synced(started.elapsed(), batch.len());
        }
        for waiter in batch {
            waiter(match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::SimFs;
    use crate::storage::test_runtime;

    const DIR: &str = "/node/wal";

    fn open(fs: &SimFs, segment_bytes_max: u64) -> io::Result<Arc<Wal>> {
        Wal::open(
            Arc::new(fs.clone()),
            Path::new(DIR),
            WalOptions {
                segment_bytes_max,
                telemetry: None,
            },
        )
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| (i, format!("entry-{i}").into_bytes()))
            .collect()
    }

    fn indexes(wal: &Wal) -> Vec<u64> {
        wal.entries(0, u64::MAX)
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }

    fn segment_path(fs: &SimFs, position: usize) -> PathBuf {
        let names = fs.list(Path::new(DIR)).unwrap();
        Path::new(DIR).join(&names[position])
    }

    #[test]
    fn appended_entries_survive_a_crash_only_once_synced() {
        test_runtime().block_on(async {
            let fs = SimFs::new();
            let wal = open(&fs, 1 << 20).unwrap();
            wal.append(&entries(1..=3)).unwrap();
            wal.sync().await.unwrap();
            wal.append(&entries(4..=5)).unwrap();
            assert_eq!(
                indexes(&wal),
                vec![1, 2, 3, 4, 5],
                "readable before the sync"
            );
            drop(wal);
            fs.crash(|_| 0);
            let wal = open(&fs, 1 << 20).unwrap();
            assert_eq!(indexes(&wal), vec![1, 2, 3]);
            assert_eq!(wal.entry(2).unwrap(), Some(b"entry-2".to_vec()));
        });
    }

    fn file_size(fs: &SimFs, position: usize) -> u64 {
        fs.open(&segment_path(fs, position), false)
            .unwrap()
            .size()
            .unwrap()
    }

    #[test]
    fn a_segment_is_preallocated_and_a_clean_reopen_ends_at_its_last_record() {
        test_runtime().block_on(async {
            let fs = SimFs::new();
            let step = preallocation_step(1 << 20);
            let wal = open(&fs, 1 << 20).unwrap();
            wal.append(&entries(1..=3)).unwrap();
            wal.sync().await.unwrap();
            let logical = wal.bytes_on_disk();
            assert!(
                file_size(&fs, 0) >= logical + step,
                "zeros ahead of the records"
            );
            // Records past the first step extend the file again.
            let big = vec![7u8; step as usize];
            wal.append(&[(4, big.clone())]).unwrap();
            wal.sync().await.unwrap();
            assert!(file_size(&fs, 0) >= wal.bytes_on_disk() + step);
            let allocated = file_size(&fs, 0);
            drop(wal);
            let wal = open(&fs, 1 << 20).unwrap();
            assert_eq!(indexes(&wal), vec![1, 2, 3, 4]);
            assert_eq!(wal.entry(4).unwrap(), Some(big));
            assert_eq!(file_size(&fs, 0), allocated, "a clean end is not cut");
            wal.append(&entries(5..=5)).unwrap();
            wal.sync().await.unwrap();
            drop(wal);
            fs.crash(|_| 0);
            let wal = open(&fs, 1 << 20).unwrap();
            assert_eq!(indexes(&wal), vec![1, 2, 3, 4, 5]);
        });
    }

    #[test]
    fn a_closed_segment_is_trimmed_to_its_records_so_zeros_in_it_are_corruption() {
        test_runtime().block_on(async {
            let fs = SimFs::new();
            let wal = open(&fs, 4096).unwrap();
            for index in 1..=200 {
                wal.append(&[(index, vec![1u8; 100])]).unwrap();
            }
            wal.sync().await.unwrap();
            drop(wal);
            let segments = fs.list(Path::new(DIR)).unwrap().len();
            assert!(segments >= 3, "{segments} segments");
            for position in 0..segments - 1 {
                let path = segment_path(&fs, position);
                let file = fs.open(&path, false).unwrap();
                let mut state = State::default();
                let replayed = replay_segment(&*file, &path, 0, false, &mut state).unwrap();
                assert_eq!(replayed.len, file.size().unwrap(), "{}", path.display());
            }
            assert!(file_size(&fs, segments - 1) > 0);
            let wal = open(&fs, 4096).unwrap();
            assert_eq!(indexes(&wal), (1..=200).collect::<Vec<_>>());
            drop(wal);
            // A closed segment ending in zeros was damaged, not preallocated.
            let closed = fs.open(&segment_path(&fs, 0), false).unwrap();
            let size = closed.size().unwrap();
            closed.set_len(size + 64).unwrap();
            closed.sync().unwrap();
            let error = open(&fs, 4096).err().expect("zeros in a closed segment");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        });
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_log_continues_after_it() {
        test_runtime().block_on(async {
            let fs = SimFs::new();
            let wal = open(&fs, 1 << 20).unwrap();
            wal.append(&entries(1..=3)).unwrap();
            wal.sync().await.unwrap();
            wal.append(&entries(4..=6)).unwrap();
            drop(wal);
            // Keep part of the unsynced records: a write torn mid-record.
            fs.crash(|unsynced| unsynced / 2);
            let wal = open(&fs, 1 << 20).unwrap();
            let kept = indexes(&wal);
            assert!(kept.starts_with(&[1, 2, 3]) && kept.len() < 6, "{kept:?}");
            // The tear was in preallocated space; no byte of it stays behind the new records.
            assert_eq!(file_size(&fs, 0), wal.bytes_on_disk());
            let next = *kept.last().unwrap() + 1;
            wal.append(&[(next, b"after the tear".to_vec())]).unwrap();
            wal.sync().await.unwrap();
            drop(wal);
            let wal = open(&fs, 1 << 20).unwrap();
            assert_eq!(wal.entry(next).unwrap(), Some(b"after the tear".to_vec()));
        });
    }

    #[test]
    fn a_bad_checksum_in_the_middle_of_a_segment_refuses_to_open() {
        test_runtime().block_on(async {
            let fs = SimFs::new();
            let wal = open(&fs, 1 << 20).unwrap();
            wal.append(&entries(1..=5)).unwrap();
            wal.sync().await.unwrap();
            drop(wal);
            let path = segment_path(&fs, 0);
            let file = fs.open(&path, false).unwrap();
            // Flip a byte inside the second record's payload.
            let mut header = [0u8; HEADER_BYTES];
            file.read_exact_at(0, &mut header).unwrap();
            let first_len = u32::from_le_bytes(header[..4].try_into().unwrap()) as u64;
            let second = HEADER_BYTES as u64 + first_len;
            file.write_all_at(second + HEADER_BYTES as u64 + 3, b"X")
                .unwrap();
            file.sync().unwrap();
            let error = open(&fs, 1 << 20).err().expect("corruption is refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(&format!("offset {second}")), "{message}");
        });
    }

    #[test]
    fn truncate_then_append_replaces_the_suffix_also_after_reopen() {
        test_runtime().block_on(async {
            let fs = SimFs::new();
            let wal = open(&fs, 1 << 20).unwrap();
            wal.append(&entries(1..=5)).unwrap();
            wal.truncate_after(Some(3)).unwrap();
            assert_eq!(indexes(&wal), vec![1, 2, 3]);
            wal.append(&[(4, b"new-4".to_vec())]).unwrap();
            wal.sync().await.unwrap();
            drop(wal);
            let wal = open(&fs, 1 << 20).unwrap();
            assert_eq!(indexes(&wal), vec![1, 2, 3, 4]);
            assert_eq!(wal.entry(4).unwrap(), Some(b"new-4".to_vec()));
            wal.truncate_after(None).unwrap();
            wal.sync().await.unwrap();
            drop(wal);
            assert!(indexes(&open(&fs, 1 << 20).unwrap()).is_empty());
        });
    }

    #[test]
    fn purge_deletes_whole_segments_and_keeps_vote_committed_and_purge_point() {
        test_runtime().block_on(async {
            let fs = SimFs::new();
            // Tiny segments: a few entries each.
            let wal = open(&fs, 64).unwrap();
            wal.save_vote(b"vote-1").await.unwrap();
            wal.save_committed(b"committed-9").unwrap();
            for i in 1..=30 {
                wal.append(&entries(i..=i)).unwrap();
            }
            wal.sync().await.unwrap();
            let before = wal.segment_count();
            assert!(before > 5, "{before} segments");
            wal.purge(20, b"log-id-20").await.unwrap();
            let after = wal.segment_count();
            assert!(after < before / 2, "{before} -> {after} segments");
            assert_eq!(indexes(&wal), (21..=30).collect::<Vec<_>>());
            drop(wal);
            fs.crash(|_| 0);
            let wal = open(&fs, 64).unwrap();
            assert_eq!(indexes(&wal), (21..=30).collect::<Vec<_>>());
            assert_eq!(wal.vote(), Some(b"vote-1".to_vec()));
            assert_eq!(wal.committed(), Some(b"committed-9".to_vec()));
            assert_eq!(wal.purged(), Some((20, b"log-id-20".to_vec())));
        });
    }

    #[test]
    fn truncate_and_purge_at_the_largest_index_replay_without_overflow() {
        test_runtime().block_on(async {
            let fs = SimFs::new();
            let wal = open(&fs, 1 << 20).unwrap();
            wal.append(&entries(1..=3)).unwrap();
            wal.truncate_after(Some(u64::MAX)).unwrap();
            assert_eq!(indexes(&wal), vec![1, 2, 3], "nothing lies after u64::MAX");
            wal.purge(u64::MAX, b"log-id-max").await.unwrap();
            assert!(indexes(&wal).is_empty(), "everything lies up to u64::MAX");
            drop(wal);
            let wal = open(&fs, 1 << 20).unwrap();
            assert!(indexes(&wal).is_empty());
            assert_eq!(wal.purged(), Some((u64::MAX, b"log-id-max".to_vec())));
        });
    }

    #[test]
    fn concurrent_flushes_share_one_sync_and_all_see_it() {
        test_runtime().block_on(async {
            let fs = SimFs::new();
            let wal = open(&fs, 1 << 20).unwrap();
            let (tx, mut rx) = mpsc::unbounded_channel();
            for i in 1..=10 {
                wal.append(&entries(i..=i)).unwrap();
                let tx = tx.clone();
                wal.flush(move |result| tx.send(result.is_ok()).unwrap());
            }
            drop(tx);
            let mut acknowledged = 0;
            while let Some(ok) = rx.recv().await {
                assert!(ok);
                acknowledged += 1;
            }
            assert_eq!(acknowledged, 10);
            drop(wal);
            fs.crash(|_| 0);
            assert_eq!(indexes(&open(&fs, 1 << 20).unwrap()).len(), 10);
        });
    }
}
