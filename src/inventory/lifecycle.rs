//! The transitions of a reservation's life (see `reservation` for the model): [`hold`] and
//! [`cart`] create one, [`commit`], [`release`] and [`expire`] end it.
//!
//! Each keeps the record invariant `reserved == sum of the held lines naming the record` by
//! moving units in the same change that moves the status: a hold moves them from `quantity` to
//! `reserved`; a commit takes them out of `reserved` (they left: on hand drops); a release or an
//! expiry moves them back to `quantity`. Every record a transition touches gets its next
//! version, once per entry.
//!
//! Rules that make each reservation end exactly once, the same way on every replica:
//! - only `Held` changes, and the deadline is compared with the entry's log time: at or past
//!   `expires_at_ms`, a commit or release is refused `ReservationExpired` (and changes nothing:
//!   the expiry entry that follows ends it), and only an expiry can end it;
//! - asking again for the transition already made answers the reservation as it is, changing
//!   nothing (a client's retry is not an error); any other transition out of an ended state is
//!   refused, naming the status (`ReservationNotHeld`) or the expiry;
//! - an expiry entry decides each id on the state at that entry, not on the proposer's view:
//!   ids already ended, unknown, not yet due, or named twice are skipped.
//!
//! A held record is never removed (nothing deletes records), so a held reservation's records
//! exist: one missing means the state is corrupt, or the caller's view lacks what the command
//! needs (`Command::reservation_ids`), and apply stops there rather than answer.

use std::collections::{BTreeMap, BTreeSet};

use super::change::{changed, existing, invalid, Change};
use super::command::{CartLine, CommandResult, LineRefusal, Rejection};
use super::record::{Record, RecordKey};
use super::reservation::{
    Reservation, ReservationId, ReservationLine, ReservationStatus, CART_LINES_MAX, EXPIRE_IDS_MAX,
    HELD_RESERVATIONS_MAX, HOLD_TTL_MS_MAX, HOLD_TTL_MS_MIN,
};
use super::state::StateView;

/// A [`super::Command::Hold`], borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Hold<'a> {
    pub key: &'a RecordKey,
    pub quantity: i64,
    pub expected_version: Option<u64>,
    pub ttl_ms: u64,
}

/// Holds units of one record: checked as a reserve is, then a reservation of one line.
pub fn hold(
    view: &impl StateView,
    hold: Hold<'_>,
    log_index: u64,
    now_ms: u64,
) -> Result<Change, Rejection> {
    hold_as(view, hold, first_id(log_index)?, now_ms)
}

/// Holds units of one record as the reservation `id`: a hold command's (the entry's first
/// reservation), or one line of a batch (the entry's `n`th hold).
pub fn hold_as(
    view: &impl StateView,
    hold: Hold<'_>,
    id: ReservationId,
    now_ms: u64,
) -> Result<Change, Rejection> {
    check_ttl(hold.ttl_ms)?;
    if hold.quantity < 0 {
        return Err(invalid("qty must not be negative"));
    }
    check_room(view)?;
    let record = existing(view, hold.key, hold.expected_version)?;
    let record = held(record, hold.quantity, now_ms)?;
    let line = ReservationLine {
        key: hold.key.clone(),
        quantity: hold.quantity,
    };
    let reservation = created(id, vec![line], hold.ttl_ms, now_ms);
    Ok(Change {
        result: CommandResult::Held {
            record: record.clone(),
            reservation_id: id,
        },
        records: vec![record],
        reservations: vec![reservation],
    })
}

/// Holds every line of a cart, or none. Each line is checked against the state before the cart
/// (its keys are distinct, so no line sees another's change); if any fails, the refusal names
/// every one that did.
pub fn cart(
    view: &impl StateView,
    lines: &[CartLine],
    ttl_ms: u64,
    log_index: u64,
    now_ms: u64,
) -> Result<Change, Rejection> {
    check_cart(lines)?;
    check_ttl(ttl_ms)?;
    let id = first_id(log_index)?;
    check_room(view)?;
    let mut records = Vec::with_capacity(lines.len());
    let mut refusals = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let record = existing(view, &line.key, line.expected_version)
            .and_then(|record| held(record, line.quantity, now_ms));
        match record {
            Ok(record) => records.push(record),
            Err(rejection) => refusals.push(LineRefusal {
                index,
                key: line.key.clone(),
                rejection,
            }),
        }
    }
    if !refusals.is_empty() {
        return Err(Rejection::CartRefused { lines: refusals });
    }
    let lines = lines
        .iter()
        .map(|line| ReservationLine {
            key: line.key.clone(),
            quantity: line.quantity,
        })
        .collect();
    let reservation = created(id, lines, ttl_ms, now_ms);
    Ok(Change {
        result: CommandResult::Reservation(reservation.clone()),
        records,
        reservations: vec![reservation],
    })
}

/// The held units left: the reservation becomes committed and its records' on hand drops.
pub fn commit(view: &impl StateView, id: ReservationId, now_ms: u64) -> Result<Change, Rejection> {
    end_on_request(view, id, ReservationStatus::Committed, now_ms)
}

/// The held units come back: the reservation becomes released, its units available again.
pub fn release(view: &impl StateView, id: ReservationId, now_ms: u64) -> Result<Change, Rejection> {
    end_on_request(view, id, ReservationStatus::Released, now_ms)
}

/// Expires each of `ids` that is held and due at `now_ms`; skips the others. Answers how many
/// it expired. A record named by several of them gets one new version.
pub fn expire(
    view: &impl StateView,
    ids: &[ReservationId],
    now_ms: u64,
) -> Result<Change, Rejection> {
    if ids.is_empty() || ids.len() > EXPIRE_IDS_MAX {
        return Err(invalid(&format!(
            "an expiry names 1 to {EXPIRE_IDS_MAX} reservations, got {}",
            ids.len()
        )));
    }
    // The records as this entry leaves them so far: changed once, then updated in place.
    let mut touched: BTreeMap<RecordKey, Record> = BTreeMap::new();
    let mut expired = Vec::new();
    let mut seen = BTreeSet::new();
    for &id in ids {
        let due = view
            .reservation(id)
            .filter(|r| r.status == ReservationStatus::Held && r.expires_at_ms <= now_ms);
        let Some(reservation) = due.filter(|_| seen.insert(id)) else {
            continue;
        };
        // A record at its last version cannot change (2^64 changes: never in practice); its
        // holds stay held rather than the entry fail.
        if let Ok(records) = expired_lines(view, &touched, &reservation, now_ms) {
            touched.extend(records.into_iter().map(|r| (r.key.clone(), r)));
            expired.push(ended(reservation, ReservationStatus::Expired, now_ms));
        }
    }
    Ok(Change {
        result: CommandResult::Expired {
            count: expired.len() as u64,
        },
        records: touched.into_values().collect(),
        reservations: expired,
    })
}

/// A commit or release (`outcome`) a client asked for.
fn end_on_request(
    view: &impl StateView,
    id: ReservationId,
    outcome: ReservationStatus,
    now_ms: u64,
) -> Result<Change, Rejection> {
    let reservation = view
        .reservation(id)
        .ok_or(Rejection::ReservationNotFound { id })?;
    match reservation.status {
        status if status == outcome => {
            return Ok(Change::nothing(CommandResult::Reservation(reservation)));
        }
        ReservationStatus::Held if reservation.is_live(now_ms) => {}
        ReservationStatus::Held | ReservationStatus::Expired => {
            return Err(Rejection::ReservationExpired { id });
        }
        status @ (ReservationStatus::Committed | ReservationStatus::Released) => {
            return Err(Rejection::ReservationNotHeld { id, status });
        }
    }
    let records = reservation
        .lines
        .iter()
        .map(|line| settled(held_record(view, &line.key), line.quantity, outcome, now_ms))
        .collect::<Result<Vec<_>, _>>()?;
    let reservation = ended(reservation, outcome, now_ms);
    Ok(Change {
        result: CommandResult::Reservation(reservation.clone()),
        records,
        reservations: vec![reservation],
    })
}

/// The records of an expiring reservation with its units back, each starting from its state
/// earlier in this entry (`touched`, already at its new version) or else from the view.
fn expired_lines(
    view: &impl StateView,
    touched: &BTreeMap<RecordKey, Record>,
    reservation: &Reservation,
    now_ms: u64,
) -> Result<Vec<Record>, Rejection> {
    let outcome = ReservationStatus::Expired;
    reservation
        .lines
        .iter()
        .map(|line| match touched.get(&line.key) {
            Some(record) => {
                let (quantity, reserved) = settled_counts(record, line.quantity, outcome);
                Ok(Record {
                    quantity,
                    reserved,
                    ..record.clone()
                })
            }
            None => settled(held_record(view, &line.key), line.quantity, outcome, now_ms),
        })
        .collect()
}

/// `record` with `quantity` more units moved from available to reserved: its next version.
fn held(record: Record, quantity: i64, now_ms: u64) -> Result<Record, Rejection> {
    if quantity > record.quantity {
        return Err(Rejection::InsufficientStock {
            requested: quantity,
            available: record.quantity,
        });
    }
    let reserved = record
        .reserved
        .checked_add(quantity)
        .ok_or(Rejection::Overflow)?;
    let available = record.quantity - quantity;
    changed(record, available, reserved, now_ms)
}

/// `record` with `quantity` reserved units settled as `outcome`: its next version.
fn settled(
    record: Record,
    quantity: i64,
    outcome: ReservationStatus,
    now_ms: u64,
) -> Result<Record, Rejection> {
    let (available, reserved) = settled_counts(&record, quantity, outcome);
    changed(record, available, reserved, now_ms)
}

/// The available and reserved counts of `record` once `quantity` of its reserved units are
/// settled as `outcome`: gone if committed, available again otherwise.
fn settled_counts(record: &Record, quantity: i64, outcome: ReservationStatus) -> (i64, i64) {
    assert!(quantity >= 0, "a reservation line holds {quantity} units");
    assert!(
        record.reserved >= quantity,
        "{} reserves {} units, fewer than a held line of {quantity}",
        record.key,
        record.reserved
    );
    let reserved = record.reserved - quantity;
    match outcome {
        ReservationStatus::Committed => (record.quantity, reserved),
        // Cannot overflow: quantity + reserved fits (a record invariant), and this moves
        // units from one to the other.
        _ => (record.quantity + quantity, reserved),
    }
}

/// The record of a held line: it exists (see the module docs).
fn held_record(view: &impl StateView, key: &RecordKey) -> Record {
    view.record(key).unwrap_or_else(|| {
        panic!("record {key} of a held reservation is missing: corrupt state or incomplete view")
    })
}

/// A new held reservation.
fn created(
    id: ReservationId,
    lines: Vec<ReservationLine>,
    ttl_ms: u64,
    now_ms: u64,
) -> Reservation {
    Reservation {
        id,
        status: ReservationStatus::Held,
        lines,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    }
}

/// `reservation`, held, ended as `outcome` at `now_ms`.
fn ended(reservation: Reservation, outcome: ReservationStatus, now_ms: u64) -> Reservation {
    assert_eq!(
        reservation.status,
        ReservationStatus::Held,
        "only a held reservation ends"
    );
    assert_ne!(
        outcome,
        ReservationStatus::Held,
        "a reservation ends as held"
    );
    Reservation {
        status: outcome,
        updated_at_ms: now_ms.max(reservation.updated_at_ms),
        ..reservation
    }
}

/// The id of the first reservation the entry at `log_index` creates.
fn first_id(log_index: u64) -> Result<ReservationId, Rejection> {
    ReservationId::new(log_index, 0)
        .ok_or_else(|| invalid("the log index is beyond what a reservation id can name"))
}

fn check_ttl(ttl_ms: u64) -> Result<(), Rejection> {
    if (HOLD_TTL_MS_MIN..=HOLD_TTL_MS_MAX).contains(&ttl_ms) {
        return Ok(());
    }
    Err(invalid(&format!(
        "a hold lasts {HOLD_TTL_MS_MIN} to {HOLD_TTL_MS_MAX} ms, got {ttl_ms}"
    )))
}

/// 1 to [`CART_LINES_MAX`] lines, each of at least one unit, no record twice.
fn check_cart(lines: &[CartLine]) -> Result<(), Rejection> {
    if lines.is_empty() || lines.len() > CART_LINES_MAX {
        return Err(invalid(&format!(
            "a cart holds 1 to {CART_LINES_MAX} lines, got {}",
            lines.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for (index, line) in lines.iter().enumerate() {
        if line.quantity < 1 {
            return Err(invalid(&format!("line {index}: qty must be at least 1")));
        }
        if !seen.insert(&line.key) {
            return Err(invalid(&format!("the cart names {} twice", line.key)));
        }
    }
    Ok(())
}

/// Refuses a new reservation when as many are held as the store keeps.
fn check_room(view: &impl StateView) -> Result<(), Rejection> {
    if view.held_count() >= HELD_RESERVATIONS_MAX {
        return Err(Rejection::HoldLimitReached {
            max: HELD_RESERVATIONS_MAX,
        });
    }
    Ok(())
}
