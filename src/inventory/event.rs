//! Events: what changed, one per changed record (one per line of each reservation a command
//! moved), derived inside [`super::apply`] from the writes it makes.
//!
//! Why here, in the pure core: an event must exist exactly when a change does, on every replica
//! alike. Deriving it from the same [`Effects`](super::Effects) the state machine writes keeps
//! the two from drifting (a refusal or a replay writes nothing, so it records nothing), and a
//! wrapper of `apply` (the simulation's planted bugs) can break it on purpose. The state machine
//! numbers the events (`seq`, dense from 1, in apply order) and stores them; see `raft::events`.

use serde::{Deserialize, Serialize};

use super::record::{Record, RecordKey};
use super::reservation::{Reservation, ReservationId, ReservationStatus};

/// What kind of change an event reports. Stored (bincode), so new kinds go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Created,
    Adjusted,
    Reserved,
    Held,
    Committed,
    Released,
    Expired,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Created,
        EventKind::Adjusted,
        EventKind::Reserved,
        EventKind::Held,
        EventKind::Committed,
        EventKind::Released,
        EventKind::Expired,
    ];

    /// The name on the wire (`type` of an event, `event:` of a stream frame).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Adjusted => "adjusted",
            EventKind::Reserved => "reserved",
            EventKind::Held => "held",
            EventKind::Committed => "committed",
            EventKind::Released => "released",
            EventKind::Expired => "expired",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The kind of event a reservation's new state stands for.
    fn of_reservation(status: ReservationStatus) -> Self {
        match status {
            ReservationStatus::Held => EventKind::Held,
            ReservationStatus::Committed => EventKind::Committed,
            ReservationStatus::Released => EventKind::Released,
            ReservationStatus::Expired => EventKind::Expired,
        }
    }
}

/// One change of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The event's position in the feed: 1, 2, 3, ... with no gaps, the same on every replica.
    /// 0 until the state machine numbers it.
    pub seq: u64,
    /// The log entry that made the change.
    pub log_index: u64,
    pub kind: EventKind,
    pub key: RecordKey,
    /// The record's available quantity after the entry.
    pub quantity: i64,
    /// The record's held units after the entry.
    pub reserved: i64,
    /// How much the available quantity moved for this event: the delta of an adjustment, minus
    /// the units reserved or held, plus the units released or expired. None for a creation and
    /// a commit (which moves held units out, not available ones).
    pub delta: Option<i64>,
    /// The record's version after the entry.
    pub version: u64,
    /// The reservation a held, committed, released or expired event belongs to.
    pub reservation_id: Option<ReservationId>,
    /// The client's idempotency key of the request, if it had one (not its scope).
    pub idempotency_key: Option<String>,
    /// Log time of the entry, ms since the Unix epoch.
    pub at_ms: u64,
}

#[cfg(all(test, not(madsim)))]
impl Event {
    /// An adjustment by 1 of SKU `sku` in store `s1`, numbered `seq` (its log index, version and
    /// time too): the event unit tests of the feed's readers fill their feeds with.
    pub(crate) fn sample(seq: u64, sku: &str) -> Self {
        Event {
            seq,
            log_index: seq,
            kind: EventKind::Adjusted,
            key: RecordKey::new("s1", sku).unwrap(),
            quantity: 1,
            reserved: 0,
            delta: Some(1),
            version: seq,
            reservation_id: None,
            idempotency_key: None,
            at_ms: seq,
        }
    }
}

/// Which events a reader wants. Empty: all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub store_id: Option<String>,
    pub sku: Option<String>,
    /// None: every kind.
    pub kinds: Option<Vec<EventKind>>,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        self.store_id
            .as_ref()
            .is_none_or(|store| *store == event.key.store_id)
            && self.sku.as_ref().is_none_or(|sku| *sku == event.key.sku)
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&event.kind))
    }

    pub fn is_empty(&self) -> bool {
        self.store_id.is_none() && self.sku.is_none() && self.kinds.is_none()
    }
}

/// What a command did, for [`events_of`].
pub(super) enum Changed<'a> {
    /// No record.
    Nothing,
    /// A seed command: each record it wrote is created, adjusted by `delta` or reserved.
    Records {
        kind: EventKind,
        /// The adjustment's delta, or minus the units reserved; None for a creation.
        delta: Option<i64>,
        records: &'a [Record],
    },
    /// A reservation command: each reservation it wrote, in its new state, and the records of
    /// their lines in theirs.
    Reservations {
        reservations: &'a [Reservation],
        records: &'a [Record],
    },
}

/// The events of one accepted command, unnumbered, in a deterministic order: the records in
/// the order the command wrote them; a reservation command's lines in reservation order, then
/// line order.
pub(super) fn events_of(
    changed: Changed<'_>,
    log_index: u64,
    at_ms: u64,
    idempotency_key: Option<&str>,
) -> Vec<Event> {
    let event = |kind, record: &Record, delta, reservation_id| Event {
        seq: 0,
        log_index,
        kind,
        key: record.key.clone(),
        quantity: record.quantity,
        reserved: record.reserved,
        delta,
        version: record.version,
        reservation_id,
        idempotency_key: idempotency_key.map(str::to_owned),
        at_ms,
    };
    match changed {
        Changed::Nothing => Vec::new(),
        Changed::Records {
            kind,
            delta,
            records,
        } => records
            .iter()
            .map(|record| event(kind, record, delta, None))
            .collect(),
        Changed::Reservations {
            reservations,
            records,
        } => {
            let mut events = Vec::new();
            for reservation in reservations {
                let kind = EventKind::of_reservation(reservation.status);
                for line in &reservation.lines {
                    let record = records
                        .iter()
                        .find(|record| record.key == line.key)
                        .expect("a reservation's change writes the record of each of its lines");
                    let delta = match kind {
                        EventKind::Held => Some(-line.quantity),
                        EventKind::Released | EventKind::Expired => Some(line.quantity),
                        _ => None,
                    };
                    events.push(event(kind, record, delta, Some(reservation.id)));
                }
            }
            events
        }
    }
}
