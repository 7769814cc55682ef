//! The result of one simulation run: what [`super::run`] fills in while it drives the cluster
//! and what [`super::checks`] add once it has converged. Its own file, below both, so that the
//! run calls the checks and the checks write the report without importing each other.

use std::collections::BTreeMap;

/// The result of one run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub seed: u64,
    pub ops_checked: usize,
    pub unknown_ops: usize,
    /// SKUs whose linearizability search gave up (neither proven nor refuted).
    pub unchecked_skus: usize,
    pub faults: BTreeMap<&'static str, usize>,
    /// The reservations of the run by final status (`held`, `committed`, ...), as the first
    /// replica has them: how much of the hold traffic the checks of holds had to look at.
    pub reservations: BTreeMap<&'static str, usize>,
    /// The feed's last seq at the end of the run (events written).
    pub feed_events: u64,
    /// The oldest seq the nodes keep at the end (1 unless retention forgot some).
    pub feed_oldest_seq: u64,
    /// Events the consumer lost to retention (410s, the small-retention variant only).
    pub feed_events_lost: u64,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub trace_hash: u64,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}
