//! The storage seam: one small, synchronous key-value interface ([`Disk`]) under the
//! state-machine store, and the files ([`fs`]) under the Raft log ([`wal`]), the snapshots
//! ([`snapshots`]) and the state's own journal and images.
//!
//! Why a seam: the simulation must crash the real storage code and keep only what was made
//! durable, without OS threads (which a madsim run forbids). The [`Disk`]s:
//!
//! - [`Resident`]: the product's and the simulation's. The whole state in memory, made durable
//!   as a journal of batches and images of the state, on the [`fs::Fs`] seam (real files, or
//!   simulated ones that keep only what was synced, plus a torn tail).
//! - [`SimDisk`]: an in-memory disk that survives a simulated kill but keeps **only what was
//!   flushed**; for unit tests of the stores above.
//! - [`SledDisk`]: where earlier versions kept the state; read once to move an older data
//!   directory's state into the resident one.
//!
//! All give the same guarantees the stores rely on:
//! 1. a batch is all-or-nothing, also across a crash;
//! 2. after `flush` returns, everything written before it survives a crash;
//! 3. reads see every write already made, flushed or not.
//!
//! Keys are bytes laid out by [`keys`]; values are bincode. Errors are [`StorageError`]; the
//! stores turn them into `io::Error` for openraft, which stops the node: a replica that cannot
//! trust its disk must not keep answering.

pub mod fs;
pub mod keys;
pub mod resident;
mod sim_disk;
pub mod snapshots;
pub mod wal;
// sled spawns OS threads, which a madsim run forbids: the simulation uses SimDisk only.
#[cfg(not(madsim))]
mod sled_disk;

use std::future::Future;
use std::pin::Pin;

pub use resident::{Policy as ResidentPolicy, Resident};
pub use sim_disk::SimDisk;
#[cfg(not(madsim))]
pub use sled_disk::{open_node_state, upgrade_into as upgrade_sled_into, SledDisk};

/// sled's page cache unless configured (`storage.cache_bytes`): 32 MiB, used only to move an
/// older data directory's state out of sled.
pub const CACHE_BYTES_DEFAULT: u64 = 32 * 1024 * 1024;

/// `storage.read_cache_bytes` unless configured (the setting no longer has an effect).
pub const READ_CACHE_BYTES_DEFAULT: u64 = 48 * 1024 * 1024;

/// Failures of the storage layer. None of them is an answer to a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("disk error: {0}")]
    Disk(String),
    /// A value that does not decode: `place` names the file or database it was read from,
    /// `key` what it was stored under.
    #[error("corrupt value in {place} under key \"{key}\": {message}")]
    Decode {
        place: String,
        key: String,
        message: String,
    },
    #[error("storage invariant broken: {0}")]
    Invariant(String),
}

impl From<StorageError> for std::io::Error {
    fn from(error: StorageError) -> Self {
        std::io::Error::other(error)
    }
}

/// One write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// An ordered list of writes applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub writes: Vec<Write>,
}

impl WriteBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push(Write::Put(key, value));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.push(Write::Delete(key));
    }
}

/// One key and its value, as scans return them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Direction of a range scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// A future returned by [`Disk::flush`].
pub type FlushFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + 'a>>;

/// A node's disk. See the module docs for the guarantees.
pub trait Disk: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Up to `limit` pairs with `start <= key < end`, in `order`.
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError>;
    /// Applies `batch` atomically. Durable only after a later [`Disk::flush`].
    fn write(&self, batch: WriteBatch) -> Result<(), StorageError>;
    /// Makes every earlier write durable (fsync).
    fn flush(&self) -> FlushFuture<'_>;
}

/// Encodes a value for the disk. bincode 2 with the standard config: compact and deterministic.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("encoding into memory cannot fail")
}

/// Most bytes one stored value may make the decoder claim: a corrupt length on disk is then a
/// clear error naming the key, never an allocation that aborts the process. Values are small
/// (a record, an idempotency entry, the membership), except a chunk of the idempotency log
/// holding answers of keyed batches: up to 32 of ~720 KB at most (`inventory::batch`), which
/// this limit holds (asserted where the chunk size is set, `raft::idempotency_log`).
pub const DISK_DECODE_LIMIT_BYTES: usize = 32 << 20;

/// Where the values [`decode`] reads live: the resident state (`state/` in the data directory).
pub const DATABASE: &str = "the node's state (state/ in the data directory)";

/// Decodes a value read from under `key` in the node's database ([`DATABASE`]).
pub fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StorageError> {
    decode_in(DATABASE, key, bytes)
}

/// The value stored under `key` on `disk`, decoded; `None` when the key is absent.
pub fn read<T: serde::de::DeserializeOwned>(
    disk: &dyn Disk,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    disk.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
}

/// Empties the range `start <= key < end` a page at a time: reads its first `page_keys` keys
/// and writes the batch `rewrite` makes of them, until the range is empty. Each batch must
/// delete every key of its page (it may write others elsewhere): a key left in the range would
/// be read again forever. Memory stays bounded however large the range, and each batch is
/// atomic, so a crash leaves whole pages done (callers redo the rest). Returns how many keys
/// were read.
pub fn drain_range(
    disk: &dyn Disk,
    start: &[u8],
    end: &[u8],
    page_keys: usize,
    mut rewrite: impl FnMut(Vec<KeyValue>) -> Result<WriteBatch, StorageError>,
) -> Result<usize, StorageError> {
    let mut drained = 0;
    loop {
        let page = disk.scan(start, end, Order::Ascending, page_keys)?;
        if page.is_empty() {
            return Ok(drained);
        }
        drained += page.len();
        disk.write(rewrite(page)?)?;
    }
}

/// Deletes every key with `start <= key < end`, `page_keys` keys per batch (see
/// [`drain_range`]).
pub fn delete_range(
    disk: &dyn Disk,
    start: &[u8],
    end: &[u8],
    page_keys: usize,
) -> Result<(), StorageError> {
    drain_range(disk, start, end, page_keys, |page| {
        let mut batch = WriteBatch::default();
        for (key, _) in page {
            batch.delete(key);
        }
        Ok(batch)
    })?;
    Ok(())
}

/// A single-threaded tokio runtime with its timers and IO, for unit tests that drive the
/// storage's async parts (flushes, WAL writes) to completion.
#[cfg(test)]
pub(crate) fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Decodes a value read from under `key` in `place` (a file, or the database), refusing any
/// length that claims more than [`DISK_DECODE_LIMIT_BYTES`]. A failure names both, with the key
/// escaped (keys hold binary parts such as big-endian indexes).
pub fn decode_in<T: serde::de::DeserializeOwned>(
    place: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StorageError> {
    let config = bincode::config::standard().with_limit::<DISK_DECODE_LIMIT_BYTES>();
    bincode::serde::decode_from_slice(bytes, config)
        .map(|(value, _)| value)
        .map_err(|error| StorageError::Decode {
            place: place.to_owned(),
            key: key.escape_ascii().to_string(),
            message: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn exercise(disk: &dyn Disk) {
        let mut batch = WriteBatch::default();
        for i in 0u8..10 {
            batch.put(vec![b'a', i], vec![i]);
        }
        batch.put(b"b".to_vec(), b"x".to_vec());
        disk.write(batch).unwrap();
        assert_eq!(disk.get(&[b'a', 3]).unwrap(), Some(vec![3]));
        let up = disk
            .scan(&[b'a', 2], &[b'a', 5], Order::Ascending, 10)
            .unwrap();
        assert_eq!(
            up.iter().map(|(k, _)| k[1]).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        let down = disk.scan(b"a", b"b", Order::Descending, 2).unwrap();
        assert_eq!(
            down.iter().map(|(k, _)| k[1]).collect::<Vec<_>>(),
            vec![9, 8]
        );
        let mut batch = WriteBatch::default();
        batch.delete(vec![b'a', 3]);
        disk.write(batch).unwrap();
        assert_eq!(disk.get(&[b'a', 3]).unwrap(), None);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_database_and_its_key() {
        let disk = SimDisk::new();
        let key = crate::inventory::RecordKey::new("s1", "SKU-1").unwrap();
        // Where the record's store id begins, a length claiming 2^44 bytes.
        let mut bomb = vec![0xFD];
        bomb.extend_from_slice(&(1u64 << 44).to_le_bytes());
        let mut batch = WriteBatch::default();
        batch.put(keys::record(&key), bomb);
        disk.write(batch).unwrap();
        let error = read::<crate::inventory::Record>(&disk, &keys::record(&key)).unwrap_err();
        assert!(matches!(error, StorageError::Decode { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(DATABASE), "{message}");
        assert!(message.contains(r#"key "Srs1\x00SKU-1""#), "{message}");
    }

    #[test]
    fn a_stored_length_just_over_the_limit_is_refused() {
        let mut claim = vec![0xFC];
        claim.extend_from_slice(&(DISK_DECODE_LIMIT_BYTES as u32 + 1).to_le_bytes());
        let error = decode_in::<String>("the test", b"k", &claim).unwrap_err();
        assert!(error.to_string().contains("LimitExceeded"), "{error}");
        // Within the limit, the same claim is only a value cut short.
        let mut claim = vec![0xFC];
        claim.extend_from_slice(&(DISK_DECODE_LIMIT_BYTES as u32 / 2).to_le_bytes());
        let error = decode_in::<String>("the test", b"k", &claim).unwrap_err();
        assert!(!error.to_string().contains("LimitExceeded"), "{error}");
    }

    #[test]
    fn sim_disk_reads_scans_and_deletes() {
        exercise(&SimDisk::new());
    }

    #[test]
    fn resident_state_reads_scans_and_deletes() {
        let fs = Arc::new(fs::SimFs::new());
        let policy = ResidentPolicy::inline(64, 1024, 512);
        exercise(&Resident::open(fs, std::path::Path::new("/state"), policy).unwrap());
    }

    /// An older data directory's state moves out of sled whole, and sled's files go.
    #[cfg(not(madsim))]
    #[test]
    fn an_older_data_directory_moves_out_of_sled() {
        let dir = tempfile::tempdir().unwrap();
        let mut batch = WriteBatch::default();
        for i in 0..10_000u32 {
            batch.put(format!("Sr{i:06}").into_bytes(), i.to_le_bytes().to_vec());
        }
        write_flushed_into_sled(dir.path(), batch);
        let state = dir.path().join("state");
        let open = || {
            Resident::open(
                Arc::new(fs::StdFs),
                &state,
                ResidentPolicy::inline(4096, 1 << 20, u64::MAX),
            )
            .unwrap()
        };
        let resident = open();
        let moved = upgrade_sled_into(dir.path(), CACHE_BYTES_DEFAULT, &resident).unwrap();
        assert_eq!(moved, Some(10_000));
        assert!(!dir.path().join("db").exists());
        assert_eq!(
            upgrade_sled_into(dir.path(), CACHE_BYTES_DEFAULT, &resident).unwrap(),
            None
        );
        drop(resident);
        // From its image alone (the journal after it is empty).
        let resident = open();
        assert_eq!(resident.size().0, 10_000);
        assert_eq!(
            resident.get(b"Sr004321").unwrap(),
            Some(4321u32.to_le_bytes().to_vec())
        );
    }

    /// An upgrade cut short (a partial `state/` beside sled's `db`) starts over from sled: the
    /// partial state's keys are not kept.
    #[cfg(not(madsim))]
    #[test]
    fn an_upgrade_cut_short_starts_over_from_sled() {
        let dir = tempfile::tempdir().unwrap();
        let mut batch = WriteBatch::default();
        batch.put(b"Sr-from-sled".to_vec(), b"1".to_vec());
        write_flushed_into_sled(dir.path(), batch);
        {
            // What a crash midway left: a state directory holding a key sled never had.
            let policy = ResidentPolicy::inline(1, 1 << 20, u64::MAX);
            let partial =
                Resident::open(Arc::new(fs::StdFs), &dir.path().join("state"), policy).unwrap();
            let mut batch = WriteBatch::default();
            batch.put(b"Sr-partial".to_vec(), b"2".to_vec());
            partial.write(batch).unwrap();
            partial.sync().unwrap();
        }
        let policy = ResidentPolicy::inline(4096, 1 << 20, u64::MAX);
        let (state, moved) = open_node_state(dir.path(), CACHE_BYTES_DEFAULT, policy).unwrap();
        assert_eq!(moved, Some(1));
        assert_eq!(state.get(b"Sr-from-sled").unwrap(), Some(b"1".to_vec()));
        assert_eq!(state.get(b"Sr-partial").unwrap(), None);
        drop(state);
        // Done: the next open moves nothing and keeps the state.
        let (state, moved) = open_node_state(dir.path(), CACHE_BYTES_DEFAULT, policy).unwrap();
        assert_eq!(moved, None);
        assert_eq!(state.size().0, 1);
    }

    #[cfg(not(madsim))]
    #[test]
    fn sled_disk_reads_scans_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&SledDisk::open(dir.path(), CACHE_BYTES_DEFAULT).unwrap());
    }

    /// Writes `batch` into a sled data directory at `dir`, flushes it and closes sled, then
    /// waits until sled's own threads let go of its file lock (a moment after the last handle
    /// drops; on a loaded machine, not at once), so that the directory can be opened again.
    #[cfg(not(madsim))]
    fn write_flushed_into_sled(dir: &std::path::Path, batch: WriteBatch) {
        {
            let sled = SledDisk::open(dir, CACHE_BYTES_DEFAULT).unwrap();
            sled.write(batch).unwrap();
            // sled's flush ends in a blocking fsync on tokio's blocking pool.
            test_runtime().block_on(sled.flush()).unwrap();
        }
        wait_until_unlocked(&dir.join("db"), std::time::Duration::from_secs(10));
    }

    /// Blocks until nobody holds the `flock` sled takes on `file` (the kernel wakes the
    /// waiter when it is released), for at most `limit`; then lets go of it again.
    #[cfg(not(madsim))]
    fn wait_until_unlocked(file: &std::path::Path, limit: std::time::Duration) {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(file).unwrap();
        let (locked, lock) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: flock on a descriptor this thread owns for the whole call.
            let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            let _ = locked.send((result, file));
        });
        let (result, file) = lock
            .recv_timeout(limit)
            .expect("sled let go of its lock in time");
        assert_eq!(result, 0, "flock: {}", std::io::Error::last_os_error());
        // SAFETY: as above; unlocking a lock this descriptor holds.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) }, 0);
    }

    #[cfg(not(madsim))]
    #[test]
    fn sled_disk_keeps_flushed_writes_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut batch = WriteBatch::default();
        batch.put(b"k".to_vec(), b"v".to_vec());
        write_flushed_into_sled(dir.path(), batch);
        let disk = SledDisk::open(dir.path(), CACHE_BYTES_DEFAULT).unwrap();
        assert_eq!(disk.get(b"k").unwrap(), Some(b"v".to_vec()));
    }
}
