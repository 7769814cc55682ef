//! The stall detector: a plain thread that notices when the node's runtime stops turning.
//!
//! ## Why
//! The Raft watchdog (`raft_failure` in the parent module) is a task, so it needs the runtime to
//! run. A node runs its tasks on one thread by default (`config::RuntimeConfig`): a synchronous
//! call on that thread that never returns (sled blocking inside a write on a failed disk, say)
//! stops every task at once, the Raft watchdog with them, and the process would stay up,
//! answering nothing, where a supervisor needs it to exit. So a task bumps a counter every
//! `beat`, and a thread outside the runtime checks it as often; if it stands still through
//! `after` worth of checks, the thread calls `on_stall` (the product logs the cause and exits
//! with `RaftStopped::EXIT_CODE`, like the Raft watchdog).
//!
//! `after` must be far longer than anything the runtime thread legitimately does without
//! yielding: the longest seen was a write-behind checkpoint into sled, ~120 ms at a million
//! keys (before the state became resident: `storage::resident`); file work (syncs, snapshots, the key index build) runs on the blocking pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// Watches the runtime while it lives; dropping it stops both the task and the thread (the
/// thread wakes at once: it waits for its stop signal between checks).
pub struct StallDetector {
    /// Dropped with the detector: the thread's wait ends `Disconnected`.
    _stop: mpsc::Sender<()>,
    beater: tokio::task::JoinHandle<()>,
}

/// Starts watching the current runtime: `on_stall` is called, once, with about how long the
/// runtime has not turned, when that reaches `after`. Call inside the runtime.
pub fn start(
    beat: Duration,
    after: Duration,
    on_stall: impl FnOnce(Duration) + Send + 'static,
) -> std::io::Result<StallDetector> {
    let beats = Arc::new(AtomicU64::new(0));
    let beater = tokio::spawn({
        let beats = beats.clone();
        async move {
            loop {
                tokio::time::sleep(beat).await;
                beats.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let (stop, stopped) = mpsc::channel::<()>();
    // A stall is counted in checks that found no new beat, not in wall time: a process frozen
    // whole (SIGSTOP, a paused VM) wakes with its clock far ahead and its runtime about to
    // beat, which is no stall of the runtime.
    let checks_max = after.as_nanos().div_ceil(beat.as_nanos().max(1)).max(1);
    let spawned = std::thread::Builder::new()
        .name("stall-detector".into())
        .spawn(move || {
            let mut seen = beats.load(Ordering::Relaxed);
            let mut still = 0u128;
            // Each check waits one beat for the stop signal; only the beat's timeout checks.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(beat) {
                let now = beats.load(Ordering::Relaxed);
                if now != seen {
                    (seen, still) = (now, 0);
                    continue;
                }
                still += 1;
                if still >= checks_max {
                    on_stall(beat * u32::try_from(still).unwrap_or(u32::MAX));
                    return;
                }
            }
        });
    if let Err(error) = spawned {
        beater.abort();
        return Err(error);
    }
    Ok(StallDetector {
        _stop: stop,
        beater,
    })
}

impl Drop for StallDetector {
    fn drop(&mut self) {
        self.beater.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_millis(20);
    const AFTER: Duration = Duration::from_millis(200);
    /// Far longer than any wait below should take: a deadline, not a pace.
    const DEADLINE: Duration = Duration::from_secs(10);

    fn one_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_runtime_thread_held_by_a_synchronous_call_is_reported() {
        let (tell, told) = mpsc::channel();
        let stalled = one_thread().block_on(async {
            let _detector = start(BEAT, AFTER, move |stalled| tell.send(stalled).unwrap()).unwrap();
            tokio::time::sleep(BEAT * 3).await;
            // A synchronous wait on the only runtime thread: no task runs meanwhile, the beat
            // included, until the detector reports (or the deadline passes).
            told.recv_timeout(DEADLINE)
        });
        let stalled = stalled.expect("the stall was not reported");
        assert!(stalled >= AFTER, "reported after {stalled:?}");
    }

    #[test]
    fn a_runtime_that_waits_without_blocking_is_not_reported_nor_is_one_dropped() {
        let (tell, told) = mpsc::channel();
        one_thread().block_on(async {
            let detector = start(BEAT, AFTER, move |stalled| tell.send(stalled).unwrap()).unwrap();
            // Idle but turning for several stall periods: timers and the beat run.
            tokio::time::sleep(AFTER * 4).await;
            assert_eq!(told.try_recv(), Err(mpsc::TryRecvError::Empty));
            drop(detector);
        });
        // Stopped: the thread ends at once, without a report (its sender goes with it).
        assert_eq!(
            told.recv_timeout(DEADLINE),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
