//! The application's reads of the event feed: a page of events, linearizable (after a
//! read-index barrier on the leader) or local (this node's applied feed, which may be behind
//! but never differs: seqs are assigned in apply), the head, and the channel a stream waits on.
//!
//! The stream itself (`GET /api/events/stream`) is built on these: it reads pages by cursor from
//! this node's applied state and waits on [`App::subscribe_feed`] between them.

use super::expiry::ExpiryError;
use super::{App, ReadError};
use crate::inventory::{Command, EventFilter};
use crate::raft::events::{EventPage, EventsError, FeedHead};
use crate::raft::watch;
use crate::storage::StorageError;

/// Most events one page holds (`limit`).
pub const EVENTS_PAGE_LIMIT_MAX: usize = 1_000;
/// Events in a page when the request names no `limit`.
pub const EVENTS_PAGE_LIMIT_DEFAULT: usize = 100;

/// Why a page of events was not read.
#[derive(Debug, thiserror::Error)]
pub enum EventsReadError {
    #[error(transparent)]
    Events(#[from] EventsError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl App {
    /// A page of events after a linearizable read barrier: it holds every event of every write
    /// acknowledged before the call.
    pub async fn events_linearizable(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<EventPage, EventsReadError> {
        self.read_barrier().await?;
        Ok(self.events_local(after, limit, filter)?)
    }

    /// A page of events as this node has applied them; `limit` is clamped to 1..=1000.
    pub fn events_local(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<EventPage, EventsError> {
        let limit = limit.clamp(1, EVENTS_PAGE_LIMIT_MAX);
        self.state.events(after, limit, filter)
    }

    /// This node's feed head: its last seq and the oldest it keeps.
    pub fn feed_head(&self) -> Result<FeedHead, StorageError> {
        self.state.feed_head()
    }

    /// On a leader whose store lacks the feed (a cluster upgraded from a version without one),
    /// proposes the `StartFeed` that starts it on every replica at one entry (see
    /// `raft::events`). Returns whether it proposed one. Called by the leader's periodic loop
    /// (`app::expiry::propose_expiries`).
    pub async fn start_feed_if_missing(&self) -> Result<bool, ExpiryError> {
        if !self.is_leader() || !self.state.feed_missing()? {
            return Ok(false);
        }
        self.propose(Command::StartFeed, None).await?;
        tracing::info!("started the event feed of a cluster that had none");
        Ok(true)
    }

    /// A receiver of this node's last seq, changed as entries with events are applied.
    pub fn subscribe_feed(&self) -> watch::Receiver<u64> {
        self.state.subscribe_feed()
    }
}
