//! The disk-space alarm: a full disk is an alarm, not an outage.
//!
//! Why: Raft treats a log write that fails as fatal (a replica that cannot persist what it
//! acknowledges must stop, see `raft::log_store`). A disk that fills up therefore used to stop
//! every node sharing it for good, and nothing recovered once space was freed. etcd's answer is
//! a space quota and a `NOSPACE` alarm: refuse new writes *before* the disk is full, keep
//! serving reads, and let the operator free space. This module is that answer for one node.
//!
//! ## What is measured, and when
//! A [`SpaceSource`] reports a [`Usage`]: the bytes held by the node's data directory (a walk
//! summing file sizes, [`DataDirSource`]) and the free bytes of the filesystem holding it
//! (`statvfs`, the space an unprivileged user may still take). [`SpaceGuard::refresh`] measures;
//! the server runs it every [`MEASURE_INTERVAL`] ([`measure_periodically`]), and while the alarm is raised a
//! refused write re-measures on demand (at most every [`ON_DEMAND_MEASURE_INTERVAL_MIN`]), so
//! freed space is noticed by the next write rather than the next tick. A measurement is a
//! directory walk and one system call: cheap enough for both.
//!
//! ## When the alarm is raised and cleared
//! Raised ([`Alarm::NoSpace`]) when the data directory holds `storage.quota_bytes` or more, or
//! the filesystem has less than `storage.free_bytes_min` free. Cleared by itself, with no
//! restart and no operator command, once both are back with a margin of
//! [`CLEAR_MARGIN_PERCENT`]: the directory at most 90% of the quota and free space at least 110%
//! of the minimum. The margin (hysteresis) keeps a node hovering at a limit from flapping
//! between accepting and refusing writes on every measurement. Raising logs a `warn!` and
//! clearing an `info!`, both with the reason and the numbers.
//!
//! ## Who refuses what
//! While raised, the node refuses client writes (create, batch create, adjust, reserve) at once
//! with `507 INSUFFICIENT_STORAGE` before anything is proposed or forwarded, and
//! `App::propose` refuses too, so a leader with the alarm also refuses writes forwarded to it.
//! Reads, health and admin routes keep working (a snapshot and purge may free space). Readiness
//! answers `503 NO_SPACE`.
//!
//! Each node guards itself; nothing is replicated. Only the leader proposes, so the leader's
//! alarm is what stops the cluster from writing. Deliberately not done: a leader does not refuse
//! because a *follower* is short of space. A follower that fills up regardless fails its
//! append, its Raft stops on the storage error and the process exits (`server`) for a
//! supervisor to restart once space is back. Nodes sharing a filesystem see the same free space,
//! so there the leader's alarm rises with everyone's.
//!
//! A measurement that fails (the directory unreadable, `statvfs` refused) changes nothing: the
//! alarm keeps its state and the failure is logged once, when it starts.
//!
//! The simulation has no real disk: its nodes run without a source ([`SpaceGuard::unmeasured`])
//! and never raise the alarm.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::client::wire::StorageStatus;
use crate::config::StorageConfig;

/// How often the server's measurement task measures.
pub const MEASURE_INTERVAL: Duration = Duration::from_secs(1);
/// While the alarm is raised, a refused write measures again if the last measurement is older
/// than this: freed space is noticed quickly, and a stream of refused writes costs at most ten
/// measurements a second.
pub const ON_DEMAND_MEASURE_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Hysteresis: a raised alarm clears only once the directory is this many percent under the
/// quota and free space this many percent over the minimum.
pub const CLEAR_MARGIN_PERCENT: u64 = 10;
/// How deep the data directory walk descends. A store keeps a few levels at most (sled: `db`,
/// `conf`, `blobs/`); anything deeper is not ours and is not counted.
const WALK_DEPTH_MAX: usize = 8;

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in the node's data directory (sum of file sizes).
    pub data_dir_bytes: u64,
    /// Free bytes of the filesystem holding it, as available to an unprivileged user.
    pub free_bytes: u64,
}

/// Where measurements come from: the product walks the data directory ([`DataDirSource`]);
/// tests inject sizes.
pub trait SpaceSource: Send + Sync + 'static {
    fn measure(&self) -> io::Result<Usage>;
}

/// The limits of `[storage]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub quota_bytes: u64,
    pub free_bytes_min: u64,
}

impl Limits {
    pub fn from_config(storage: &StorageConfig) -> Self {
        Self {
            quota_bytes: storage.quota_bytes,
            free_bytes_min: storage.free_bytes_min,
        }
    }

    /// A raised alarm clears only at or below this directory size.
    pub fn quota_clear_bytes(&self) -> u64 {
        self.quota_bytes - percent_of(self.quota_bytes, CLEAR_MARGIN_PERCENT)
    }

    /// A raised alarm clears only at or above this much free space.
    pub fn free_clear_bytes(&self) -> u64 {
        self.free_bytes_min
            .saturating_add(percent_of(self.free_bytes_min, CLEAR_MARGIN_PERCENT))
    }
}

fn percent_of(bytes: u64, percent: u64) -> u64 {
    (u128::from(bytes) * u128::from(percent) / 100) as u64
}

/// Why the alarm is raised. Serialisable: it travels in a leader's answer to forwarded writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NoSpaceReason {
    /// The data directory reached its quota (or has not yet shrunk under the clear level).
    OverQuota {
        data_dir_bytes: u64,
        quota_bytes: u64,
    },
    /// The filesystem fell under the free-space minimum (or is not yet back over the clear
    /// level).
    LowFreeSpace {
        free_bytes: u64,
        free_bytes_min: u64,
    },
}

impl fmt::Display for NoSpaceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoSpaceReason::OverQuota {
                data_dir_bytes,
                quota_bytes,
            } => write!(
                f,
                "the data directory holds {data_dir_bytes} bytes, over its quota of {quota_bytes} \
                 bytes (storage.quota_bytes)"
            ),
            NoSpaceReason::LowFreeSpace {
                free_bytes,
                free_bytes_min,
            } => write!(
                f,
                "the filesystem has {free_bytes} bytes free, under the minimum of \
                 {free_bytes_min} bytes (storage.free_bytes_min)"
            ),
        }
    }
}

/// The alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alarm {
    #[default]
    Ok,
    NoSpace {
        reason: NoSpaceReason,
    },
}

impl Alarm {
    /// The alarm after measuring `usage`, given its state before. Pure: the hysteresis lives
    /// here. Over a limit raises (or keeps) it; a raised alarm stays up until both measures are
    /// past their clear levels.
    pub fn next(self, usage: Usage, limits: Limits) -> Alarm {
        let raised = matches!(self, Alarm::NoSpace { .. });
        let over_quota = if raised {
            usage.data_dir_bytes > limits.quota_clear_bytes()
        } else {
            usage.data_dir_bytes >= limits.quota_bytes
        };
        let short_of_free = if raised {
            usage.free_bytes < limits.free_clear_bytes()
        } else {
            usage.free_bytes < limits.free_bytes_min
        };
        if over_quota {
            return Alarm::NoSpace {
                reason: NoSpaceReason::OverQuota {
                    data_dir_bytes: usage.data_dir_bytes,
                    quota_bytes: limits.quota_bytes,
                },
            };
        }
        if short_of_free {
            return Alarm::NoSpace {
                reason: NoSpaceReason::LowFreeSpace {
                    free_bytes: usage.free_bytes,
                    free_bytes_min: limits.free_bytes_min,
                },
            };
        }
        Alarm::Ok
    }
}

/// The last measurement and the alarm it left.
#[derive(Debug, Default)]
struct Measured {
    alarm: Alarm,
    usage: Option<Usage>,
    at: Option<tokio::time::Instant>,
    /// The last measurement failed (logged once, when it started failing).
    failing: bool,
}

/// One node's disk-space alarm, shared by the request handlers and the measurement task.
pub struct SpaceGuard {
    source: Option<Arc<dyn SpaceSource>>,
    limits: Limits,
    /// Mirrors `measured.alarm` for the write path's check, which takes no lock while all is well.
    no_space: AtomicBool,
    measured: Mutex<Measured>,
}

impl SpaceGuard {
    /// A guard measuring through `source`. The alarm starts cleared until the first
    /// measurement: the server measures once before it serves.
    pub fn new(source: Arc<dyn SpaceSource>, limits: Limits) -> Self {
        Self {
            source: Some(source),
            ..Self::unmeasured(limits)
        }
    }

    /// A guard with nothing to measure (the simulation): the alarm never rises.
    pub fn unmeasured(limits: Limits) -> Self {
        Self {
            source: None,
            limits,
            no_space: AtomicBool::new(false),
            measured: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Measured> {
        self.measured
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Measures now and updates the alarm (logging when it rises or clears); returns it.
    /// Blocking I/O (a directory walk and `statvfs`): the measurement task runs it off the runtime's
    /// worker threads.
    pub fn refresh(&self) -> Alarm {
        let Some(source) = &self.source else {
            return Alarm::Ok;
        };
        // Measuring under the lock keeps measurements in order: a slow one never overwrites a
        // newer one.
        let mut measured = self.lock();
        match source.measure() {
            Ok(usage) => {
                if measured.failing {
                    tracing::info!("measuring disk space works again");
                    measured.failing = false;
                }
                let next = measured.alarm.next(usage, self.limits);
                log_transition(&measured.alarm, &next, usage, self.limits);
                measured.alarm = next;
                measured.usage = Some(usage);
                measured.at = Some(tokio::time::Instant::now());
                self.no_space
                    .store(matches!(next, Alarm::NoSpace { .. }), Ordering::Release);
            }
            Err(error) => {
                if !measured.failing {
                    tracing::warn!(%error, "cannot measure disk space; the alarm keeps its state");
                    measured.failing = true;
                }
            }
        }
        measured.alarm
    }

    /// Why client writes must be refused now, or None. Costs one atomic load while the alarm is
    /// down; while it is up, measures again first if the last measurement is older than
    /// [`ON_DEMAND_MEASURE_INTERVAL_MIN`], so a write arriving after space was freed succeeds.
    pub fn refusal(&self) -> Option<NoSpaceReason> {
        if !self.no_space.load(Ordering::Acquire) {
            return None;
        }
        let stale = self
            .lock()
            .at
            .is_none_or(|at| at.elapsed() >= ON_DEMAND_MEASURE_INTERVAL_MIN);
        let alarm = if stale {
            self.refresh()
        } else {
            self.lock().alarm
        };
        match alarm {
            Alarm::Ok => None,
            Alarm::NoSpace { reason } => Some(reason),
        }
    }

    /// The alarm as last measured (no measurement).
    pub fn alarm(&self) -> Alarm {
        self.lock().alarm
    }

    /// The alarm, the last measurement and the limits, as `/api/health` and `/api/metrics`
    /// report them.
    pub fn status(&self) -> StorageStatus {
        let measured = self.lock();
        let reason = match measured.alarm {
            Alarm::Ok => None,
            Alarm::NoSpace { reason } => Some(reason.to_string()),
        };
        StorageStatus {
            no_space: reason.is_some(),
            reason,
            data_dir_bytes: measured.usage.map(|usage| usage.data_dir_bytes),
            free_bytes: measured.usage.map(|usage| usage.free_bytes),
            quota_bytes: self.limits.quota_bytes,
            free_bytes_min: self.limits.free_bytes_min,
        }
    }
}

fn log_transition(before: &Alarm, after: &Alarm, usage: Usage, limits: Limits) {
    let Usage {
        data_dir_bytes,
        free_bytes,
    } = usage;
    match (before, after) {
        (Alarm::Ok, Alarm::NoSpace { reason }) => tracing::warn!(
            %reason,
            data_dir_bytes,
            free_bytes,
            quota_bytes = limits.quota_bytes,
            free_bytes_min = limits.free_bytes_min,
            "disk-space alarm raised: refusing client writes (507) until space is freed"
        ),
        (Alarm::NoSpace { reason }, Alarm::Ok) => tracing::info!(
            was = %reason,
            data_dir_bytes,
            free_bytes,
            quota_clear_bytes = limits.quota_clear_bytes(),
            free_clear_bytes = limits.free_clear_bytes(),
            "disk-space alarm cleared: accepting client writes again"
        ),
        _ => {}
    }
}

/// Measures `guard` every [`MEASURE_INTERVAL`], off the runtime's worker threads, until the
/// task is aborted. The server starts it; the simulation does not.
pub async fn measure_periodically(guard: Arc<SpaceGuard>) {
    loop {
        tokio::time::sleep(MEASURE_INTERVAL).await;
        guard.refresh_async().await;
    }
}

impl SpaceGuard {
    /// [`SpaceGuard::refresh`] on tokio's blocking pool, so that a slow disk does not hold a
    /// runtime worker. Under madsim (no blocking tasks, and no disk to measure) it runs inline.
    pub async fn refresh_async(self: &Arc<Self>) -> Alarm {
        #[cfg(not(madsim))]
        {
            let guard = self.clone();
            tokio::task::spawn_blocking(move || guard.refresh())
                .await
                .unwrap_or_else(|_| self.alarm())
        }
        #[cfg(madsim)]
        {
            self.refresh()
        }
    }
}

/// The product's [`SpaceSource`]: the node's data directory on the real filesystem.
#[derive(Debug, Clone)]
pub struct DataDirSource {
    dir: PathBuf,
}

impl DataDirSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl SpaceSource for DataDirSource {
    fn measure(&self) -> io::Result<Usage> {
        Ok(Usage {
            data_dir_bytes: directory_bytes(&self.dir, WALK_DEPTH_MAX)?,
            free_bytes: filesystem_free_bytes(&self.dir)?,
        })
    }
}

/// The sum of the sizes of the files under `dir`, down to `depth_left` levels of
/// subdirectories. Symbolic links are not followed; an entry that vanishes during the walk (a
/// store deleting a file) counts as nothing.
fn directory_bytes(dir: &Path, depth_left: usize) -> io::Result<u64> {
    let mut total: u64 = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        let bytes = if metadata.is_file() {
            metadata.len()
        } else if metadata.is_dir() && depth_left > 0 {
            match directory_bytes(&entry.path(), depth_left - 1) {
                Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
                other => other?,
            }
        } else {
            0
        };
        total = total.saturating_add(bytes);
    }
    Ok(total)
}

/// Free bytes of the filesystem holding `path`, as available to an unprivileged user
/// (`statvfs`: `f_bavail * f_frsize`). Root may dip into the blocks reserved beyond that, but a
/// reserve is not space to plan with.
fn filesystem_free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;

    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; `stats` is writable memory of the
    // type statvfs fills.
    let result = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stats` entirely.
    let stats = unsafe { stats.assume_init() };
    // The field types are 32 or 64 bits wide depending on the platform.
    #[allow(clippy::useless_conversion)]
    let (blocks, block_bytes) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Ok(blocks.saturating_mul(block_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    const LIMITS: Limits = Limits {
        quota_bytes: 100 * MIB,
        free_bytes_min: 10 * MIB,
    };

    /// A source reporting whatever the test last set.
    #[derive(Default)]
    struct Injected(Mutex<Option<io::Result<Usage>>>);

    impl Injected {
        fn set(&self, data_dir_bytes: u64, free_bytes: u64) {
            *self.0.lock().unwrap() = Some(Ok(Usage {
                data_dir_bytes,
                free_bytes,
            }));
        }

        fn fail(&self) {
            *self.0.lock().unwrap() = Some(Err(io::Error::other("unreadable")));
        }
    }

    impl SpaceSource for Injected {
        fn measure(&self) -> io::Result<Usage> {
            match &*self.0.lock().unwrap() {
                Some(Ok(usage)) => Ok(*usage),
                Some(Err(error)) => Err(io::Error::new(error.kind(), error.to_string())),
                None => Err(io::Error::other("nothing injected")),
            }
        }
    }

    fn guard() -> (Arc<Injected>, SpaceGuard) {
        let source = Arc::new(Injected::default());
        (source.clone(), SpaceGuard::new(source, LIMITS))
    }

    fn is_raised(alarm: Alarm) -> bool {
        matches!(alarm, Alarm::NoSpace { .. })
    }

    #[test]
    fn reaching_the_quota_raises_the_alarm_and_refuses_writes() {
        let (source, guard) = guard();
        source.set(100 * MIB - 1, 50 * MIB);
        assert_eq!(guard.refresh(), Alarm::Ok);
        assert_eq!(guard.refusal(), None);

        source.set(100 * MIB, 50 * MIB);
        let reason = NoSpaceReason::OverQuota {
            data_dir_bytes: 100 * MIB,
            quota_bytes: 100 * MIB,
        };
        assert_eq!(guard.refresh(), Alarm::NoSpace { reason });
        assert_eq!(guard.refusal(), Some(reason));
        let status = guard.status();
        assert!(status.no_space);
        assert_eq!(status.data_dir_bytes, Some(100 * MIB));
        assert!(status.reason.unwrap().contains("quota"));
    }

    #[test]
    fn falling_under_the_free_space_minimum_raises_the_alarm() {
        let (source, guard) = guard();
        source.set(MIB, 10 * MIB);
        assert_eq!(guard.refresh(), Alarm::Ok, "exactly the minimum is enough");
        source.set(MIB, 10 * MIB - 1);
        let reason = NoSpaceReason::LowFreeSpace {
            free_bytes: 10 * MIB - 1,
            free_bytes_min: 10 * MIB,
        };
        assert_eq!(guard.refresh(), Alarm::NoSpace { reason });
        assert!(guard.status().reason.unwrap().contains("free"));
    }

    #[test]
    fn the_alarm_clears_by_itself_only_past_the_margin() {
        let (source, guard) = guard();
        source.set(MIB, 5 * MIB);
        assert!(is_raised(guard.refresh()));
        // Back over the minimum, but inside the margin: still raised (no flapping).
        source.set(MIB, 10 * MIB + 1);
        assert!(is_raised(guard.refresh()));
        source.set(MIB, LIMITS.free_clear_bytes());
        assert_eq!(guard.refresh(), Alarm::Ok);

        source.set(100 * MIB, 50 * MIB);
        assert!(is_raised(guard.refresh()));
        source.set(LIMITS.quota_clear_bytes() + 1, 50 * MIB);
        assert!(
            is_raised(guard.refresh()),
            "under the quota, not yet 10% under"
        );
        source.set(LIMITS.quota_clear_bytes(), 50 * MIB);
        assert_eq!(guard.refresh(), Alarm::Ok);
        assert!(!guard.status().no_space);
    }

    #[test]
    fn clear_levels_are_ten_percent_past_the_limits() {
        assert_eq!(LIMITS.quota_clear_bytes(), 90 * MIB);
        assert_eq!(LIMITS.free_clear_bytes(), 11 * MIB);
        let huge = Limits {
            quota_bytes: u64::MAX,
            free_bytes_min: u64::MAX,
        };
        assert_eq!(huge.free_clear_bytes(), u64::MAX, "saturates");
        assert!(huge.quota_clear_bytes() < u64::MAX);
    }

    #[test]
    fn a_raised_alarm_keeps_the_reason_that_still_holds() {
        let raised = Alarm::Ok.next(
            Usage {
                data_dir_bytes: 100 * MIB,
                free_bytes: 5 * MIB,
            },
            LIMITS,
        );
        assert!(matches!(
            raised,
            Alarm::NoSpace {
                reason: NoSpaceReason::OverQuota { .. }
            }
        ));
        let still = raised.next(
            Usage {
                data_dir_bytes: MIB,
                free_bytes: 5 * MIB,
            },
            LIMITS,
        );
        assert!(matches!(
            still,
            Alarm::NoSpace {
                reason: NoSpaceReason::LowFreeSpace { .. }
            }
        ));
    }

    #[test]
    fn a_failed_measurement_keeps_the_alarm_as_it_was() {
        let (source, guard) = guard();
        source.set(100 * MIB, 50 * MIB);
        assert!(is_raised(guard.refresh()));
        source.fail();
        assert!(is_raised(guard.refresh()));
        assert!(guard.refusal().is_some());
        source.set(MIB, 50 * MIB);
        assert_eq!(guard.refresh(), Alarm::Ok);
    }

    #[test]
    fn a_refused_write_notices_freed_space_without_waiting_for_the_measurement_task() {
        let (source, guard) = guard();
        source.set(MIB, MIB);
        assert!(is_raised(guard.refresh()));
        source.set(MIB, 50 * MIB);
        std::thread::sleep(ON_DEMAND_MEASURE_INTERVAL_MIN);
        assert_eq!(guard.refusal(), None);
        assert_eq!(guard.alarm(), Alarm::Ok);
    }

    #[test]
    fn an_unmeasured_guard_never_raises() {
        let guard = SpaceGuard::unmeasured(LIMITS);
        assert_eq!(guard.refresh(), Alarm::Ok);
        assert_eq!(guard.refusal(), None);
        assert_eq!(guard.status().data_dir_bytes, None);
    }

    #[test]
    fn the_data_dir_source_sums_files_in_subdirectories_and_sees_free_space() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs").join("b"), vec![0u8; 234]).unwrap();
        let usage = DataDirSource::new(dir.path()).measure().unwrap();
        assert_eq!(usage.data_dir_bytes, 1234);
        assert!(usage.free_bytes > 0);
        let missing = DataDirSource::new(dir.path().join("missing")).measure();
        assert!(missing.is_err());
    }
}
