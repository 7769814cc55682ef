use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::storage::fs::SimFs;
use crate::storage::test_runtime;

const DIR: &str = "/node/state";

fn open(fs: &SimFs, policy: Policy) -> Resident {
    Resident::open(Arc::new(fs.clone()), Path::new(DIR), policy).unwrap()
}

/// Tiny records, files and images: every boundary is crossed within a few hundred batches.
fn tiny() -> Policy {
    Policy::inline(200, 2_000, 1_000)
}

/// Batch `i`: keys `a/<i>` and `z/<i>` (far apart in key order, so an image copies them at
/// different moments), `applied` = i, and the delete of batch `i - 3`'s `a` key.
fn batch(i: u64) -> WriteBatch {
    let mut batch = WriteBatch::default();
    batch.put(format!("a/{i:08}").into_bytes(), i.to_le_bytes().to_vec());
    batch.put(format!("z/{i:08}").into_bytes(), i.to_le_bytes().to_vec());
    batch.put(b"applied".to_vec(), i.to_le_bytes().to_vec());
    if i >= 3 {
        batch.delete(format!("a/{:08}", i - 3).into_bytes());
    }
    batch
}

/// The state after batches `1..=n`.
fn model(n: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut map = BTreeMap::new();
    for i in 1..=n {
        for write in batch(i).writes {
            match write {
                Write::Put(key, value) => map.insert(key, value),
                Write::Delete(key) => map.remove(&key),
            };
        }
    }
    map
}

fn contents(disk: &Resident) -> BTreeMap<Vec<u8>, Vec<u8>> {
    disk.scan(b"", &[0xFF], Order::Ascending, usize::MAX)
        .unwrap()
        .into_iter()
        .collect()
}

/// Asserts that `disk` holds exactly `want`, naming the first difference (not both maps).
fn assert_holds(disk: &Resident, want: &BTreeMap<Vec<u8>, Vec<u8>>, context: &str) {
    let got = contents(disk);
    let first_difference = got
        .iter()
        .zip(want.iter())
        .find(|(got, want)| got != want)
        .map(|(got, want)| {
            (
                got.0.escape_ascii().to_string(),
                want.0.escape_ascii().to_string(),
            )
        });
    assert!(
        got == *want,
        "{context}: {} keys held, {} expected; first difference (held, expected): {first_difference:?}",
        got.len(),
        want.len()
    );
}

fn applied(disk: &Resident) -> u64 {
    disk.get(b"applied")
        .unwrap()
        .map_or(0, |bytes| u64::from_le_bytes(bytes.try_into().unwrap()))
}

#[test]
fn reads_scans_and_deletes_see_every_write_at_once() {
    let fs = SimFs::new();
    let disk = open(&fs, tiny());
    for i in 1..=50 {
        disk.write(batch(i)).unwrap();
    }
    assert_holds(&disk, &model(50), "after a reopen");
    let down = disk.scan(b"z/", b"z0", Order::Descending, 2).unwrap();
    assert_eq!(down[0].0, b"z/00000050".to_vec());
    assert_eq!(down[1].0, b"z/00000049".to_vec());
    assert_eq!(disk.size().0, model(50).len());
}

#[test]
fn flushed_writes_survive_a_clean_power_cut_and_images_replace_the_journal() {
    let fs = SimFs::new();
    let disk = open(&fs, tiny());
    for i in 1..=400 {
        disk.write(batch(i)).unwrap();
    }
    test_runtime().block_on(disk.flush()).unwrap();
    // Writes after the flush may be lost, never half-kept.
    for i in 401..=410 {
        disk.write(batch(i)).unwrap();
    }
    fs.crash(|_| 0);
    disk.reload().unwrap();
    let kept = applied(&disk);
    assert!((400..=410).contains(&kept), "applied {kept}");
    assert_holds(&disk, &model(kept), "after a reopen");
    // Images were written, and the journal before the newest one is gone.
    let images = fs.list(Path::new("/node/state/images")).unwrap();
    assert!(!images.is_empty(), "no image was written");
    let journal_files = journal::list(&fs, Path::new(DIR)).unwrap();
    assert!(journal_files.len() < 10, "{journal_files:?}");
    // A second life goes on from there.
    for i in kept + 1..=kept + 100 {
        disk.write(batch(i)).unwrap();
    }
    test_runtime().block_on(disk.flush()).unwrap();
    drop(disk);
    let disk = open(&fs, tiny());
    assert_holds(&disk, &model(kept + 100), "after a reopen");
}

/// Torn writes anywhere after the last flush: the state is always the state after some whole
/// batch at or after the flush, whatever the cut.
#[test]
fn a_torn_power_cut_leaves_whole_batches_from_the_last_flush_on() {
    for seed in 0..200u64 {
        let fs = SimFs::new();
        let disk = open(&fs, tiny());
        let flushed = 50 + seed % 37;
        let written = flushed + 1 + seed % 23;
        for i in 1..=written {
            disk.write(batch(i)).unwrap();
            if i == flushed {
                test_runtime().block_on(disk.flush()).unwrap();
            }
        }
        let mut draws = seed;
        fs.crash(|unsynced| {
            draws = draws
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (draws >> 33) as usize % (unsynced + 1)
        });
        disk.reload().unwrap();
        let kept = applied(&disk);
        assert!(
            (flushed..=written).contains(&kept),
            "seed {seed}: applied {kept}, flushed {flushed}, written {written}"
        );
        assert_holds(&disk, &model(kept), &format!("seed {seed}"));
    }
}

/// An image is copied while writes go on (its own thread): after a power cut that keeps only
/// synced bytes, every batch is whole. Without the journal's sync between the copy and the
/// image becoming current, an image holding `z/<i>` (copied late) without `a/<i>` (copied
/// before batch i) would be recovered with nothing to replay batch i from.
#[test]
fn an_image_copied_during_writes_recovers_whole_batches() {
    let fs = SimFs::new();
    let policy = Policy {
        record_bytes: 4 << 10,
        file_bytes: 256 << 10,
        image_after_bytes: 64 << 10,
        background: true,
    };
    // Enough keys that an image is copied in several pages (`IMAGE_PAGE_KEYS`), with writes
    // between them.
    let disk = open(&fs, policy);
    for i in 1..=5 * IMAGE_PAGE_KEYS as u64 {
        disk.write(batch(i)).unwrap();
    }
    drop(disk);
    for round in 0..3 {
        let disk = Arc::new(open(&fs, policy));
        let start = applied(&disk);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let mut i = start;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    disk.write(batch(i)).unwrap();
                }
                i
            });
            // Several images are written meanwhile (each one's end wakes the waiter).
            let images_dir = Path::new("/node/state/images");
            let seen = Mutex::new(std::collections::BTreeSet::new());
            disk.shared
                .wait_until(std::time::Duration::from_secs(20), |_| {
                    let mut seen = lock(&seen);
                    seen.extend(fs.list(images_dir).unwrap());
                    seen.len() >= 4
                });
            let seen = seen.into_inner().unwrap();
            stop.store(true, Ordering::Relaxed);
            let last = writer.join().unwrap();
            assert!(
                seen.len() >= 4,
                "round {round}: images {seen:?} by batch {last}"
            );
        });
        // Wait for the image in flight, then cut the power: only synced bytes stay.
        assert!(
            disk.shared
                .wait_until(std::time::Duration::from_secs(20), |journal| !journal
                    .imaging),
            "round {round}: the image in flight never ended"
        );
        fs.crash(|_| 0);
        disk.reload().unwrap();
        let kept = applied(&disk);
        assert_holds(
            &disk,
            &model(kept),
            &format!("round {round}: applied {kept}"),
        );
    }
}

#[test]
fn a_failed_image_leaves_the_journal_whole() {
    /// Files on `SimFs` whose renames fail: an image never becomes current.
    struct NoRename(SimFs);
    impl Fs for NoRename {
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            self.0.create_dir_all(dir)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.0.list(dir)
        }
        fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FsFile>> {
            self.0.open(path, create)
        }
        fn exists(&self, path: &Path) -> bool {
            self.0.exists(path)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            self.0.remove(path)
        }
        fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
            Err(io::Error::other("no space left on device"))
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.0.sync_dir(dir)
        }
        fn used_bytes(&self, dir: &Path) -> io::Result<u64> {
            self.0.used_bytes(dir)
        }
    }
    let fs = SimFs::new();
    let disk = Resident::open(Arc::new(NoRename(fs.clone())), Path::new(DIR), tiny()).unwrap();
    for i in 1..=40 {
        // The inline image fails; the write it rode on is kept all the same.
        let _ = disk.write(batch(i));
    }
    test_runtime().block_on(disk.flush()).unwrap();
    assert!(fs.list(Path::new("/node/state/images")).unwrap().is_empty());
    drop(disk);
    fs.crash(|_| 0);
    let disk = open(&fs, tiny());
    assert_holds(&disk, &model(40), "after a reopen");
}

#[test]
fn a_corrupt_journal_file_before_the_newest_refuses_to_open() {
    let fs = SimFs::new();
    let disk = open(&fs, Policy::inline(200, 2_000, u64::MAX));
    for i in 1..=100 {
        disk.write(batch(i)).unwrap();
    }
    test_runtime().block_on(disk.flush()).unwrap();
    drop(disk);
    let files = journal::list(&fs, Path::new(DIR)).unwrap();
    assert!(files.len() > 2, "{files:?}");
    let (_, first) = &files[0];
    fs.open(first, false)
        .unwrap()
        .write_all_at(20, b"XX")
        .unwrap();
    let error = Resident::open(Arc::new(fs.clone()), Path::new(DIR), tiny())
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("is corrupt at offset"),
        "{error}"
    );
}

/// The image thread fsyncs the journal ahead of its roll ([`SYNC_AHEAD_BYTES`]): with no
/// flush, no roll and no image, a power cut still keeps what it synced.
#[test]
fn the_image_thread_syncs_the_journal_ahead_of_its_roll() {
    let fs = SimFs::new();
    let policy = Policy {
        record_bytes: 64 << 10,
        file_bytes: u64::MAX,
        image_after_bytes: u64::MAX,
        background: true,
    };
    let disk = open(&fs, policy);
    // Batches of ~1 KiB: well past SYNC_AHEAD_BYTES.
    let mut written = 0;
    while written < 2 * SYNC_AHEAD_BYTES {
        let i = written / 1024 + 1;
        let mut batch = batch(i);
        batch.put(format!("pad/{i:08}").into_bytes(), vec![7; 1000]);
        disk.write(batch).unwrap();
        written += 1024;
    }
    // The thread syncs outside any lock: wait until it has done one.
    disk.shared
        .wait_until(std::time::Duration::from_secs(10), |journal| {
            journal.synced_ahead > 0
        });
    fs.crash(|_| 0);
    disk.reload().unwrap();
    let kept = applied(&disk);
    assert!(kept > 0, "nothing was synced ahead of the roll");
}
