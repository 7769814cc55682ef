//! openraft's own conformance suite for log and state-machine stores, run on both storages:
//! the WAL on real files with the state machine in sled under the write-behind layer (the
//! product), and the WAL on simulated files with the state machine on the simulated disk, under
//! a write-behind layer that checkpoints every other write (so the suite crosses checkpoints
//! constantly).
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
use stockraft::storage::{Disk, SimDisk, SledDisk, WriteBehind};

/// Small segments, so the suite's purges delete whole segment files.
const SEGMENT_BYTES: u64 = 4096;

fn log_store(fs: Arc<dyn Fs>, dir: &std::path::Path) -> LogStore {
    let options = WalOptions {
        segment_bytes_max: SEGMENT_BYTES,
        ..WalOptions::default()
    };
    LogStore::new(Wal::open(fs, &dir.join("wal"), options).expect("opening the WAL"))
}

struct SledStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledStores {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let sled: Arc<dyn Disk> = Arc::new(
            SledDisk::open(dir.path(), stockraft::storage::CACHE_BYTES_DEFAULT)
                .expect("opening sled"),
        );
        // The product's stack: the read cache and checkpoints on their own thread.
        let disk: Arc<dyn Disk> = Arc::new(
            WriteBehind::new(sled, stockraft::storage::READ_CACHE_BYTES_DEFAULT as usize)
                .expect("starting the checkpoint thread"),
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
        let disk: Arc<dyn Disk> = Arc::new(WriteBehind::with_checkpoint_writes(
            Arc::new(SimDisk::new()),
            2,
        ));
        let fs = Arc::new(SimFs::new());
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
fn sled_stores_pass_the_openraft_conformance_suite() {
    block_on(Suite::test_all(SledStores)).expect("suite failed on sled");
}

#[test]
fn simulated_disk_stores_pass_the_openraft_conformance_suite() {
    block_on(Suite::test_all(SimStores)).expect("suite failed on the simulated disk");
}
