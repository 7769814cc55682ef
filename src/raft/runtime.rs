//! The [`AsyncRuntime`] openraft runs on: [`StockraftRuntime`].
//!
//! # Why this module exists
//!
//! openraft's own runtime (`openraft-rt-tokio`) is hard-wired to the real
//! `tokio` crate. Under `--cfg madsim` that is exactly what we must avoid:
//! real tokio timers read the wall clock, real tokio tasks run on OS threads
//! that the simulator cannot schedule, and `rand::rng()` pulls entropy from
//! the OS. Any one of those makes a simulation run impossible to replay from
//! its seed.
//!
//! This runtime goes through `tokio` as our crate sees it, which is the
//! `madsim-tokio` package:
//!
//! * normal builds: `tokio::*` *is* real tokio, so we behave like
//!   `openraft-rt-tokio`;
//! * `--cfg madsim` builds: `tokio::spawn`, `tokio::time::*` and
//!   `tokio::task::*` are madsim's simulated versions, so the simulator owns
//!   time (virtual clock) and task scheduling, and [`RtRng`] draws every
//!   random number from madsim's seeded global RNG.
//!
//! Channels and the mutex come from `tokio::sync`, which is plain tokio in
//! both configurations: those primitives are runtime-agnostic (no timers, no
//! threads, no randomness), so they are deterministic under madsim as long as
//! the tasks using them are scheduled deterministically.
//!
//! The same source compiles in both configurations; the few places that differ
//! are marked with `cfg(madsim)`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Add;
use std::ops::AddAssign;
use std::ops::Sub;
use std::ops::SubAssign;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use openraft_rt::AsyncRuntime;
use openraft_rt::Mpsc;
use openraft_rt::MpscReceiver;
use openraft_rt::MpscSender;
use openraft_rt::MpscWeakSender;
use openraft_rt::Oneshot;
use openraft_rt::OneshotSender;
use openraft_rt::OptionalSend;
use openraft_rt::OptionalSync;
use openraft_rt::SendError;
use openraft_rt::TryRecvError;
use openraft_rt::Watch;
use openraft_rt::WatchReceiver;
use openraft_rt::WatchSender;
use tokio::sync::mpsc as tokio_mpsc;
use tokio::sync::oneshot as tokio_oneshot;

/// openraft [`AsyncRuntime`] backed by `madsim-tokio`.
///
/// Use it as `AsyncRuntime = StockraftRuntime` in `declare_raft_types!`; it
/// must be spelled out, because with openraft's default features off the
/// macro's default (`openraft::impls::TokioRuntime`) does not exist.
///
/// The value itself carries no state: openraft only uses the associated
/// functions. [`AsyncRuntime::new`]/[`AsyncRuntime::block_on`] (test helpers,
/// not used by openraft itself) build a fresh executor per `block_on` call.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct StockraftRuntime;

impl AsyncRuntime for StockraftRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = RtInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = RtRng;

    #[inline]
    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        // Under madsim the task is attached to the *current simulated node*,
        // so killing/pausing that node also stops the tasks openraft spawned.
        tokio::spawn(future)
    }

    #[inline]
    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    #[inline]
    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.0)
    }

    #[inline]
    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout::new(future, tokio::time::sleep(duration))
    }

    #[inline]
    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout::new(future, tokio::time::sleep_until(deadline.0))
    }

    #[inline]
    fn is_panic(join_error: &Self::JoinError) -> bool {
        // Note: madsim re-raises task panics on the simulation thread, so
        // under madsim this is effectively always `false`.
        join_error.is_panic()
    }

    #[inline]
    fn thread_rng() -> Self::ThreadLocalRng {
        RtRng::new()
    }

    type Mpsc = RtMpsc;
    type Watch = RtWatch;
    type Oneshot = RtOneshot;
    type Mutex<T: OptionalSend + 'static> = RtMutex<T>;

    /// Test helper. The thread count is ignored: the struct is a stateless
    /// unit type, and under madsim there is only the simulation thread.
    fn new(_threads: usize) -> Self {
        StockraftRuntime
    }

    /// Test helper: run `future` on a fresh executor.
    ///
    /// * normal builds: a new multi-threaded tokio runtime per call;
    /// * madsim builds: a new simulation, seeded from `MADSIM_TEST_SEED` (or
    ///   0). Panics if called from inside a running simulation, because madsim
    ///   cannot nest simulations; use `.await` there instead.
    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        #[cfg(not(madsim))]
        {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("failed to build tokio runtime")
                .block_on(future)
        }
        #[cfg(madsim)]
        {
            assert!(
                madsim::runtime::Handle::try_current().is_err(),
                "StockraftRuntime::block_on called inside a madsim simulation; await the future instead"
            );
            let seed = std::env::var("MADSIM_TEST_SEED")
                .ok()
                .map(|s| {
                    s.parse::<u64>()
                        .expect("MADSIM_TEST_SEED should be an integer")
                })
                .unwrap_or(0);
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default())
                .block_on(future)
        }
    }

    /// Normal builds use tokio's blocking pool. Under madsim the closure runs
    /// inline, on the simulation thread, when the returned future is first
    /// polled: spawning an OS thread (the trait's default) is both forbidden by
    /// madsim and non-deterministic. Unlike tokio, the closure therefore does
    /// not run at all if the future is dropped without being polled.
    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        #[cfg(not(madsim))]
        {
            let handle = tokio::task::spawn_blocking(f);
            async move { handle.await.map_err(io::Error::other) }
        }
        #[cfg(madsim)]
        {
            async move { Ok(f()) }
        }
    }
}

// --- Instant -------------------------------------------------------------

/// A point on the runtime's monotonic clock: `tokio::time::Instant`, which is
/// the simulator's virtual clock under madsim.
///
/// A newtype is needed only because of the orphan rule (both the trait and
/// tokio's type are foreign).
///
/// Under madsim the virtual monotonic clock starts near zero, so subtracting a
/// duration larger than the simulated uptime panics (`Instant - Duration`
/// overflow), which a real host with a long uptime would never hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RtInstant(pub tokio::time::Instant);

impl RtInstant {
    /// The wrapped tokio instant.
    pub fn into_inner(self) -> tokio::time::Instant {
        self.0
    }
}

impl From<tokio::time::Instant> for RtInstant {
    fn from(i: tokio::time::Instant) -> Self {
        Self(i)
    }
}

impl Add<Duration> for RtInstant {
    type Output = Self;

    #[inline]
    fn add(self, rhs: Duration) -> Self {
        Self(self.0 + rhs)
    }
}

impl AddAssign<Duration> for RtInstant {
    #[inline]
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs;
    }
}

impl Sub<Duration> for RtInstant {
    type Output = Self;

    #[inline]
    fn sub(self, rhs: Duration) -> Self {
        Self(self.0 - rhs)
    }
}

impl SubAssign<Duration> for RtInstant {
    #[inline]
    fn sub_assign(&mut self, rhs: Duration) {
        self.0 -= rhs;
    }
}

impl Sub<RtInstant> for RtInstant {
    type Output = Duration;

    /// Saturates to zero if `rhs` is later (same as `tokio::time::Instant`).
    #[inline]
    fn sub(self, rhs: RtInstant) -> Duration {
        self.0 - rhs.0
    }
}

impl openraft_rt::Instant for RtInstant {
    #[inline]
    fn now() -> Self {
        Self(tokio::time::Instant::now())
    }
}

// --- Timeout ----------------------------------------------------------------

/// Error of [`Timeout`]: the deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project_lite::pin_project! {
    /// Future returned by [`StockraftRuntime::timeout`] and
    /// [`StockraftRuntime::timeout_at`].
    ///
    /// Our own type because madsim's `tokio::time::timeout` returns an unnameable
    /// `impl Future` (so it cannot be an associated type) and has no `timeout_at`.
    /// Using one type in both configurations also means the conformance tests in
    /// normal builds exercise the exact code that runs under simulation.
    ///
    /// The wrapped future is polled before the timer, so a future that is ready at
    /// the same moment the deadline passes still yields `Ok`.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        #[pin]
        delay: tokio::time::Sleep,
    }
}

impl<F> Timeout<F> {
    fn new(future: F, delay: tokio::time::Sleep) -> Self {
        Self { future, delay }
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        this.delay.poll(cx).map(|()| Err(Elapsed))
    }
}

// --- Random numbers ---------------------------------------------------------

/// The runtime's random number generator (a rand 0.10 [`rand::Rng`]).
///
/// * normal builds: rand's thread-local, OS-seeded `ThreadRng`.
/// * madsim builds: a handle to madsim's global RNG; **every** draw is taken
///   from the simulation's seeded RNG (and is covered by madsim's determinism
///   check). Nothing is cached per OS thread, so there is no stale state to
///   reseed when the same thread runs another simulation or a seed is rerun.
///   Panics if created outside a madsim runtime (there is no seed to follow).
#[derive(Clone)]
pub struct RtRng {
    #[cfg(not(madsim))]
    inner: rand::rngs::ThreadRng,
    #[cfg(madsim)]
    inner: madsim::rand::GlobalRng,
}

impl RtRng {
    fn new() -> Self {
        Self {
            #[cfg(not(madsim))]
            inner: rand::rng(),
            #[cfg(madsim)]
            inner: madsim::rand::thread_rng(),
        }
    }
}

impl fmt::Debug for RtRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtRng").finish_non_exhaustive()
    }
}

#[cfg(not(madsim))]
impl rand::TryRng for RtRng {
    type Error = Infallible;

    #[inline]
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.inner.try_next_u32()
    }

    #[inline]
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.inner.try_next_u64()
    }

    #[inline]
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.try_fill_bytes(dst)
    }
}

// madsim's GlobalRng implements rand 0.8's `RngCore`; bridge it to rand 0.10.
#[cfg(madsim)]
impl rand::TryRng for RtRng {
    type Error = Infallible;

    #[inline]
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(madsim::rand::RngCore::next_u32(&mut self.inner))
    }

    #[inline]
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(madsim::rand::RngCore::next_u64(&mut self.inner))
    }

    #[inline]
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        madsim::rand::RngCore::fill_bytes(&mut self.inner, dst);
        Ok(())
    }
}

// --- Mpsc -------------------------------------------------------------------

/// Bounded MPSC channel family (`tokio::sync::mpsc`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RtMpsc;

/// [`MpscSender`] over `tokio::sync::mpsc::Sender`.
pub struct RtMpscSender<T>(tokio_mpsc::Sender<T>);

/// [`MpscReceiver`] over `tokio::sync::mpsc::Receiver`.
pub struct RtMpscReceiver<T>(tokio_mpsc::Receiver<T>);

/// [`MpscWeakSender`] over `tokio::sync::mpsc::WeakSender`.
pub struct RtMpscWeakSender<T>(tokio_mpsc::WeakSender<T>);

// Manual impls: `derive(Clone)` would needlessly require `T: Clone`.
impl<T> Clone for RtMpscSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Clone for RtMpscWeakSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl Mpsc for RtMpsc {
    type Sender<T: OptionalSend> = RtMpscSender<T>;
    type Receiver<T: OptionalSend> = RtMpscReceiver<T>;
    type WeakSender<T: OptionalSend> = RtMpscWeakSender<T>;

    fn channel<T: OptionalSend>(buffer: usize) -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = tokio_mpsc::channel(buffer);
        (RtMpscSender(tx), RtMpscReceiver(rx))
    }
}

impl<T: OptionalSend> MpscSender<RtMpsc, T> for RtMpscSender<T> {
    #[inline]
    async fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.0.send(msg).await.map_err(|e| SendError(e.0))
    }

    #[inline]
    fn downgrade(&self) -> RtMpscWeakSender<T> {
        RtMpscWeakSender(self.0.downgrade())
    }
}

impl<T: OptionalSend> MpscReceiver<T> for RtMpscReceiver<T> {
    #[inline]
    fn recv(&mut self) -> impl Future<Output = Option<T>> + OptionalSend {
        self.0.recv()
    }

    #[inline]
    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map_err(|e| match e {
            tokio_mpsc::error::TryRecvError::Empty => TryRecvError::Empty,
            tokio_mpsc::error::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })
    }
}

impl<T: OptionalSend> MpscWeakSender<RtMpsc, T> for RtMpscWeakSender<T> {
    #[inline]
    fn upgrade(&self) -> Option<RtMpscSender<T>> {
        self.0.upgrade().map(RtMpscSender)
    }
}

// --- Watch ------------------------------------------------------------------

/// Watch channel family: our own [`super::watch`], because `tokio::sync::watch` wakes its
/// receivers in an order drawn from a process-wide random source (see that module).
#[derive(Debug, Clone, Copy, Default)]
pub struct RtWatch;

/// [`WatchSender`] over [`super::watch::Sender`].
pub struct RtWatchSender<T>(super::watch::Sender<T>);

/// [`WatchReceiver`] over [`super::watch::Receiver`].
pub struct RtWatchReceiver<T>(super::watch::Receiver<T>);

impl<T> Clone for RtWatchSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Clone for RtWatchReceiver<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl Watch for RtWatch {
    type Sender<T: OptionalSend + OptionalSync> = RtWatchSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = RtWatchReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = std::sync::RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = super::watch::channel(init);
        (RtWatchSender(tx), RtWatchReceiver(rx))
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<RtWatch, T> for RtWatchSender<T> {
    fn send(&self, value: T) -> Result<(), openraft_rt::watch::SendError<T>> {
        self.0.send(value)
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        self.0.send_if_modified(modify)
    }

    fn borrow_watched(&self) -> std::sync::RwLockReadGuard<'_, T> {
        self.0.borrow()
    }

    fn subscribe(&self) -> RtWatchReceiver<T> {
        RtWatchReceiver(self.0.subscribe())
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<RtWatch, T> for RtWatchReceiver<T> {
    async fn changed(&mut self) -> Result<(), openraft_rt::RecvError> {
        self.0.changed().await
    }

    fn borrow_watched(&self) -> std::sync::RwLockReadGuard<'_, T> {
        self.0.borrow()
    }

    fn borrow_and_update(&mut self) -> std::sync::RwLockReadGuard<'_, T> {
        self.0.borrow_and_update()
    }
}

// --- Oneshot ----------------------------------------------------------------

/// Oneshot channel family (`tokio::sync::oneshot`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RtOneshot;

/// [`OneshotSender`] over `tokio::sync::oneshot::Sender`.
pub struct RtOneshotSender<T>(tokio_oneshot::Sender<T>);

impl Oneshot for RtOneshot {
    type Sender<T: OptionalSend> = RtOneshotSender<T>;
    type Receiver<T: OptionalSend> = tokio_oneshot::Receiver<T>;
    type ReceiverError = tokio_oneshot::error::RecvError;

    fn channel<T: OptionalSend>() -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = tokio_oneshot::channel();
        (RtOneshotSender(tx), rx)
    }
}

impl<T: OptionalSend> OneshotSender<T> for RtOneshotSender<T> {
    #[inline]
    fn send(self, t: T) -> Result<(), T> {
        self.0.send(t)
    }
}

// --- Mutex ------------------------------------------------------------------

/// Async mutex (`tokio::sync::Mutex`).
pub struct RtMutex<T>(tokio::sync::Mutex<T>);

impl<T: OptionalSend + 'static> openraft_rt::Mutex<T> for RtMutex<T> {
    type Guard<'a> = tokio::sync::MutexGuard<'a, T>;

    fn new(value: T) -> Self {
        Self(tokio::sync::Mutex::new(value))
    }

    fn lock(&self) -> impl Future<Output = Self::Guard<'_>> + OptionalSend {
        self.0.lock()
    }
}

// --- Tests ------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// openraft-rt's conformance suite: on real tokio in normal builds, and
    /// on fresh madsim simulations (one per `block_on`) under `--cfg madsim`.
    #[test]
    fn openraft_rt_conformance_suite() {
        openraft_rt::testing::Suite::<StockraftRuntime>::test_all();
    }
}

#[cfg(all(test, madsim))]
mod sim_tests {
    use std::time::Duration;

    use openraft_rt::Instant as _;
    use rand::RngExt;

    use super::*;

    fn draws(seed: u64) -> Vec<u64> {
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(async {
            (0..4)
                .map(|_| StockraftRuntime::thread_rng().random::<u64>())
                .collect()
        })
    }

    /// Random draws follow the simulation seed, also when the same OS thread
    /// runs several simulations in a row.
    #[test]
    fn rng_follows_simulation_seed() {
        let a = draws(7);
        let _ = draws(8);
        assert_eq!(a, draws(7));
        assert_ne!(a, draws(8));
    }

    /// Sleeping and timeouts use virtual time.
    #[test]
    fn time_is_virtual() {
        let wall = std::time::Instant::now();
        StockraftRuntime::run(async {
            let t0 = RtInstant::now();
            StockraftRuntime::sleep(Duration::from_secs(3600)).await;
            assert!(t0.elapsed() >= Duration::from_secs(3600));

            let r =
                StockraftRuntime::timeout(Duration::from_secs(10), std::future::pending::<()>())
                    .await;
            assert_eq!(r, Err(Elapsed));
        });
        assert!(wall.elapsed() < Duration::from_secs(30));
    }
}
