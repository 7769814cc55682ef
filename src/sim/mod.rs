//! The deterministic simulation harness (built only with `RUSTFLAGS="--cfg madsim"`).
//!
//! Every node runs the real node code ([`crate::node::start`]): openraft, the real log and
//! state-machine stores over a [`SimDisk`](crate::storage::SimDisk) that keeps only flushed
//! writes across a kill, the real HTTP handlers and forwarding. Only two things are swapped:
//! the wire ([`transport::SimTransport`] carries a `WireRequest` over madsim's network and hands
//! it to the target node's axum `Router` in-process) and the disk. Time, scheduling, the network
//! and randomness all come from madsim, so a run is a pure function of its seed.

pub mod batch_route;
pub mod batches;
pub mod bugs;
pub mod checks;
pub mod cluster;
pub mod consumer;
pub mod faults;
pub mod history;
pub mod holds;
pub mod play;
pub mod report;
pub mod run;
pub mod transport;
pub mod workload;

pub use cluster::{SimCluster, SimOptions};
pub use report::RunReport;
pub use run::{run_seed, RunOptions};
