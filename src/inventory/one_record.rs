//! The seed's single-record commands (create, adjust, reserve), written once: `apply` runs
//! them as commands and `batch` as lines of a batch, against whatever view it is given (a
//! batch's view includes its earlier lines). Each checks what a client can get wrong and
//! refuses it; `change::changed` asserts what must never happen.

use super::change::{changed, existing, invalid};
use super::command::Rejection;
use super::record::{Record, RecordKey};
use super::state::StateView;

pub fn create(
    view: &impl StateView,
    key: &RecordKey,
    initial_quantity: i64,
    now_ms: u64,
) -> Result<Record, Rejection> {
    if initial_quantity < 0 {
        return Err(invalid("initialQuantity must not be negative"));
    }
    if let Some(record) = view.record(key) {
        return Err(Rejection::AlreadyExists {
            key: key.clone(),
            version: record.version,
        });
    }
    Ok(Record {
        key: key.clone(),
        quantity: initial_quantity,
        reserved: 0,
        version: 1,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    })
}

/// Adds `delta` to the available quantity. A delta of 0 is accepted, as the seed does: nothing
/// moves, but it is a change like any other (a new version), so a client can use it to bump a
/// version.
pub fn adjust(
    view: &impl StateView,
    key: &RecordKey,
    delta: i64,
    expected_version: Option<u64>,
    now_ms: u64,
) -> Result<Record, Rejection> {
    let record = existing(view, key, expected_version)?;
    let quantity = record
        .quantity
        .checked_add(delta)
        .ok_or(Rejection::Overflow)?;
    if quantity < 0 {
        return Err(Rejection::InsufficientStock {
            requested: delta.checked_neg().unwrap_or(i64::MAX),
            available: record.quantity,
        });
    }
    // On hand (available + reserved) must stay within an i64 too; with nothing reserved this is
    // the check above.
    quantity
        .checked_add(record.reserved)
        .ok_or(Rejection::Overflow)?;
    let reserved = record.reserved;
    changed(record, quantity, reserved, now_ms)
}

/// Takes `quantity` units out of the available quantity for good. A qty of 0 is accepted, as
/// the seed does (an integer >= 0): a new version, no stock taken.
pub fn reserve(
    view: &impl StateView,
    key: &RecordKey,
    quantity: i64,
    expected_version: Option<u64>,
    now_ms: u64,
) -> Result<Record, Rejection> {
    if quantity < 0 {
        return Err(invalid("qty must not be negative"));
    }
    let record = existing(view, key, expected_version)?;
    if quantity > record.quantity {
        return Err(Rejection::InsufficientStock {
            requested: quantity,
            available: record.quantity,
        });
    }
    let (remaining, reserved) = (record.quantity - quantity, record.reserved);
    changed(record, remaining, reserved, now_ms)
}
