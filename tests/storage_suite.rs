//! openraft's own conformance suite for log and state-machine stores, run on both storages:
//! the WAL and the resident state on real files (the product), and both on simulated files,
//! the resident state writing a journal record per write and an image every few (so the suite
//! crosses those boundaries constantly).
#![cfg(not(madsim))]

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use stockraft::raft::log_store::LogStore;
use stockraft::raft::state_machine::StateMachineStore;
use stockraft::raft::TypeConfig;
use stockraft::storage::fs::{Fs, SimFs, StdFs};
use stockraft::storage::snapshots::SnapshotDir;
use stockraft::storage::wal::{Wal, WalOptions};
use stockraft::storage::{Disk, Resident, ResidentPolicy};

/// Small segments, so the suite's purges delete whole segment files.
const SEGMENT_BYTES: u64 = 4096;

fn log_store(fs: Arc<dyn Fs>, dir: &std::path::Path) -> LogStore {
    let options = WalOptions {
        segment_bytes_max: SEGMENT_BYTES,
        ..WalOptions::default()
    };
    LogStore::new(Wal::open(fs, &dir.join("wal"), options).expect("opening the WAL"))
}

struct FileStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for FileStores {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        // The product's: images on a thread of their own.
        let disk: Arc<dyn Disk> = Arc::new(
            Resident::open(
                Arc::new(StdFs),
                &dir.path().join("state"),
                ResidentPolicy::product(),
            )
            .expect("opening the resident state"),
        );
        let log = log_store(Arc::new(StdFs), dir.path());
        let snapshots = SnapshotDir::open(Arc::new(StdFs), &dir.path().join("snapshots"))
            .expect("opening the snapshot directory");
        Ok((dir, log, StateMachineStore::new(disk, snapshots)))
    }
}

struct SimStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore> for SimStores {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let fs = Arc::new(SimFs::new());
        let disk: Arc<dyn Disk> = Arc::new(
            Resident::open(
                fs.clone(),
                std::path::Path::new("/node/state"),
                ResidentPolicy::inline(1, 2 << 10, 1 << 10),
            )
            .expect("opening the resident state"),
        );
        let log = log_store(fs.clone(), std::path::Path::new("/node"));
        let snapshots = SnapshotDir::open(fs, std::path::Path::new("/node/snapshots"))
            .expect("opening the snapshot directory");
        Ok(((), log, StateMachineStore::new(disk, snapshots)))
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime")
        .block_on(future)
}

#[test]
fn file_stores_pass_the_openraft_conformance_suite() {
    block_on(Suite::test_all(FileStores)).expect("suite failed on real files");
}

#[test]
fn simulated_disk_stores_pass_the_openraft_conformance_suite() {
    block_on(Suite::test_all(SimStores)).expect("suite failed on the simulated disk");
}
