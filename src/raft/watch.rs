//! A watch channel (one value, many observers, "changed" notifications) whose wake-up order is
//! deterministic.
//!
//! Why not `tokio::sync::watch`: to spread contention, tokio parks each waiting receiver on one
//! of eight internal notifiers chosen by tokio's own thread-local random generator, which is
//! seeded from a process-wide counter. Which receiver wakes first then differs between two runs
//! of the same simulation seed in one process, and openraft parks its replication and metrics
//! tasks on watch channels, so a madsim run stops being a function of its seed. This channel
//! wakes waiters in the order they started waiting; nothing else about it is clever.
//!
//! Semantics follow tokio's: a receiver sees a value as "changed" when the channel's version
//! moved past the last version it marked seen; `changed` fails once every sender is gone;
//! `send` fails (and stores nothing) when every receiver is gone.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::task::{Poll, Waker};

use openraft_rt::watch::{RecvError, SendError};

struct Meta {
    version: u64,
    senders: usize,
    receivers: usize,
    /// Tasks waiting in `changed`, in the order they began waiting.
    waiters: Vec<Waker>,
}

struct Shared<T> {
    value: RwLock<T>,
    meta: Mutex<Meta>,
}

impl<T> Shared<T> {
    fn meta(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, T> {
        self.value
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bumps the version and wakes every waiter, oldest first.
    fn publish(&self) {
        let waiters = {
            let mut meta = self.meta();
            meta.version += 1;
            std::mem::take(&mut meta.waiters)
        };
        for waker in waiters {
            waker.wake();
        }
    }
}

pub fn channel<T>(init: T) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        value: RwLock::new(init),
        meta: Mutex::new(Meta {
            version: 0,
            senders: 1,
            receivers: 1,
            waiters: Vec::new(),
        }),
    });
    let receiver = Receiver {
        shared: shared.clone(),
        seen: 0,
    };
    (Sender { shared }, receiver)
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.meta().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waiters = {
            let mut meta = self.shared.meta();
            meta.senders -= 1;
            if meta.senders > 0 {
                return;
            }
            std::mem::take(&mut meta.waiters)
        };
        for waker in waiters {
            waker.wake();
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.meta().receivers += 1;
        Self {
            shared: self.shared.clone(),
            seen: self.seen,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.meta().receivers -= 1;
    }
}

impl<T> Sender<T> {
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.shared.meta().receivers == 0 {
            return Err(SendError(value));
        }
        *self.shared.value.write().unwrap_or_else(|p| p.into_inner()) = value;
        self.shared.publish();
        Ok(())
    }

    pub fn send_if_modified<F: FnOnce(&mut T) -> bool>(&self, modify: F) -> bool {
        let modified = {
            let mut value = self.shared.value.write().unwrap_or_else(|p| p.into_inner());
            modify(&mut value)
        };
        if modified {
            self.shared.publish();
        }
        modified
    }

    pub fn borrow(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    pub fn subscribe(&self) -> Receiver<T> {
        let mut meta = self.shared.meta();
        meta.receivers += 1;
        Receiver {
            shared: self.shared.clone(),
            seen: meta.version,
        }
    }
}

impl<T> Receiver<T> {
    pub async fn changed(&mut self) -> Result<(), RecvError> {
        poll_fn(|cx| {
            let mut meta = self.shared.meta();
            if meta.version != self.seen {
                self.seen = meta.version;
                return Poll::Ready(Ok(()));
            }
            if meta.senders == 0 {
                return Poll::Ready(Err(RecvError(())));
            }
            if !meta.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                meta.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    pub fn borrow(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    pub fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        self.seen = self.shared.meta().version;
        self.shared.read()
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_receiver_sees_each_change_once_and_fails_when_senders_are_gone() {
        let (tx, mut rx) = channel(1);
        tx.send(2).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 2);
        let waiter = tokio::spawn(async move {
            rx.changed().await.unwrap();
            let value = *rx.borrow_and_update();
            (value, rx.changed().await.is_err())
        });
        tokio::task::yield_now().await;
        assert!(tx.send_if_modified(|v| {
            *v = 3;
            true
        }));
        drop(tx);
        assert_eq!(waiter.await.unwrap(), (3, true));
    }

    #[test]
    fn send_without_receivers_fails_and_subscribe_starts_at_the_current_version() {
        let (tx, rx) = channel(0);
        drop(rx);
        assert!(tx.send(5).is_err());
        assert_eq!(*tx.borrow(), 0);
        let rx = tx.subscribe();
        assert_eq!(*rx.borrow(), 0);
        tx.send(6).unwrap();
        assert_eq!(*rx.borrow(), 6);
    }
}
