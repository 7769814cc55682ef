//! The seed's request counters behind `GET /api/metrics`, which `POST /api/metrics/reset`
//! zeroes.
//!
//! Each fact is counted once. What only `/api/metrics` reports (requests, errors, conflicts,
//! and the requests of each operation) is counted here. What Prometheus also reports (writes
//! forwarded to the leader, keyed writes answered by a replay) is counted in [`Telemetry`],
//! whose totals never go back to zero (Prometheus counters must not); this module keeps their
//! values at the last reset and reports the difference. Relaxed atomics: they are statistics,
//! not state.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::wire::{
    BackupStatus, LogStatus, Metrics, RaftStatus, ReservationCounts, StorageStatus,
};
use crate::telemetry::Telemetry;

/// What a handler counts in [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// An `/api` request (every one, answered however).
    Request,
    /// An `/api` request answered with a 4xx or 5xx status.
    Error,
    /// A write refused for a version mismatch or an existing record.
    Conflict,
    AdjustStock,
    ReserveStock,
    /// A create, single or batch.
    CreateRecord,
    GetInventory,
}

/// The counters of one node.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    conflicts: AtomicU64,
    adjust_stock: AtomicU64,
    reserve_stock: AtomicU64,
    create_record: AtomicU64,
    get_inventory: AtomicU64,
    /// `Telemetry`'s forwarded total at the last reset.
    forwarded_at_reset: AtomicU64,
    /// `Telemetry`'s idempotent replay total at the last reset.
    idempotent_hits_at_reset: AtomicU64,
}

impl Counters {
    pub fn bump(&self, counted: Counted) {
        self.counter(counted).fetch_add(1, Ordering::Relaxed);
    }

    fn counter(&self, counted: Counted) -> &AtomicU64 {
        match counted {
            Counted::Request => &self.requests,
            Counted::Error => &self.errors,
            Counted::Conflict => &self.conflicts,
            Counted::AdjustStock => &self.adjust_stock,
            Counted::ReserveStock => &self.reserve_stock,
            Counted::CreateRecord => &self.create_record,
            Counted::GetInventory => &self.get_inventory,
        }
    }

    /// The counters since the last reset (those `telemetry` counts included), with the node's
    /// Raft position, disk-space alarm and log footprint: the answer of `GET /api/metrics`.
    pub fn read(
        &self,
        telemetry: &Telemetry,
        raft: RaftStatus,
        storage: StorageStatus,
        log: LogStatus,
        reservations: Option<ReservationCounts>,
        backups: BackupStatus,
    ) -> Metrics {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let since_reset = |total: u64, at_reset: &AtomicU64| total.saturating_sub(load(at_reset));
        let writes = &telemetry.writes;
        Metrics {
            requests: load(&self.requests),
            errors: load(&self.errors),
            conflicts: load(&self.conflicts),
            idempotent_hits: since_reset(
                writes.idempotent_replays.get(),
                &self.idempotent_hits_at_reset,
            ),
            adjust_stock: load(&self.adjust_stock),
            reserve_stock: load(&self.reserve_stock),
            create_record: load(&self.create_record),
            get_inventory: load(&self.get_inventory),
            forwarded: since_reset(writes.forwarded.get(), &self.forwarded_at_reset),
            raft,
            storage,
            log,
            reservations,
            backups,
        }
    }

    /// Zeroes every counter: those counted here, and (by remembering their totals now) those
    /// `telemetry` counts.
    pub fn reset(&self, telemetry: &Telemetry) {
        for counter in [
            &self.requests,
            &self.errors,
            &self.conflicts,
            &self.adjust_stock,
            &self.reserve_stock,
            &self.create_record,
            &self.get_inventory,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        let writes = &telemetry.writes;
        self.forwarded_at_reset
            .store(writes.forwarded.get(), Ordering::Relaxed);
        self.idempotent_hits_at_reset
            .store(writes.idempotent_replays.get(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(counters: &Counters, telemetry: &Telemetry) -> Metrics {
        let raft = RaftStatus {
            node_id: 1,
            role: crate::client::wire::RaftRole::Follower,
            leader_id: None,
            term: 0,
            last_log_index: None,
            committed_index: None,
            applied_index: None,
            snapshot_index: None,
            purged_index: None,
        };
        let storage = StorageStatus {
            no_space: false,
            reason: None,
            data_dir_bytes: None,
            free_bytes: None,
            quota_bytes: 1,
            free_bytes_min: 1,
        };
        let log = LogStatus {
            wal_bytes: 0,
            wal_segments: 0,
            snapshot_bytes: 0,
            snapshot_chunk_bytes_peak: 0,
        };
        counters.read(telemetry, raft, storage, log, None, BackupStatus::default())
    }

    #[test]
    fn a_reset_zeroes_the_readout_but_not_the_prometheus_totals() {
        let (counters, telemetry) = (Counters::default(), Telemetry::new());
        counters.bump(Counted::Request);
        counters.bump(Counted::ReserveStock);
        telemetry.writes.forwarded.inc();
        telemetry.writes.idempotent_replays.inc();
        let before = read(&counters, &telemetry);
        assert_eq!(
            (before.requests, before.reserve_stock, before.forwarded),
            (1, 1, 1)
        );
        assert_eq!(before.idempotent_hits, 1);

        counters.reset(&telemetry);
        telemetry.writes.forwarded.inc();
        let after = read(&counters, &telemetry);
        assert_eq!((after.requests, after.reserve_stock), (0, 0));
        assert_eq!((after.forwarded, after.idempotent_hits), (1, 0));
        assert_eq!(
            telemetry.writes.forwarded.get(),
            2,
            "Prometheus keeps its total"
        );
    }
}
