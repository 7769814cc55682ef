//! What an accepted command does ([`Change`]), and the steps every command shares: load a
//! record that must exist ([`existing`]) and make its next version ([`changed`]), where the
//! record invariants are asserted.

use super::command::{CommandResult, Rejection};
use super::record::{Record, RecordKey};
use super::reservation::Reservation;
use super::state::StateView;

/// An accepted command: its answer, and the writes it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Never `CommandResult::Err`: a refusal is the `Err` of the `Result` carrying the change.
    pub result: CommandResult,
    /// Each record changed or created, in its new state, at most once per record.
    pub records: Vec<Record>,
    /// Each reservation created or changed, in its new state.
    pub reservations: Vec<Reservation>,
}

impl Change {
    /// A change of records only, answered with the last of them (a seed command).
    pub fn of_records(records: Vec<Record>) -> Result<Self, Rejection> {
        let last = records
            .last()
            .cloned()
            .ok_or_else(|| invalid("a command changed no record"))?;
        Ok(Self {
            result: CommandResult::Ok(last),
            records,
            reservations: Vec::new(),
        })
    }

    /// No write at all, and `result` as the answer: a transition already made, asked again.
    pub fn nothing(result: CommandResult) -> Self {
        Self {
            result,
            records: Vec::new(),
            reservations: Vec::new(),
        }
    }
}

/// Loads a record that must exist and, when asked, be at `expected_version`.
pub fn existing(
    view: &impl StateView,
    key: &RecordKey,
    expected_version: Option<u64>,
) -> Result<Record, Rejection> {
    let record = view
        .record(key)
        .ok_or_else(|| Rejection::NotFound { key: key.clone() })?;
    match expected_version {
        Some(expected) if expected != record.version => Err(Rejection::VersionMismatch {
            expected,
            actual: record.version,
        }),
        _ => Ok(record),
    }
}

/// `record` with `quantity` available and `reserved` held: its next version, stamped `now_ms`
/// (never before its last change).
///
/// Callers check what a client can get wrong (stock, overflow) and refuse it; what reaches here
/// must keep both counts >= 0 and their sum within an i64, or apply is broken: asserted, so a
/// node stops rather than store it.
pub fn changed(
    record: Record,
    quantity: i64,
    reserved: i64,
    now_ms: u64,
) -> Result<Record, Rejection> {
    assert!(quantity >= 0, "available stock below zero: {quantity}");
    assert!(reserved >= 0, "reserved stock below zero: {reserved}");
    assert!(
        quantity.checked_add(reserved).is_some(),
        "stock on hand beyond an i64: {quantity} + {reserved}"
    );
    let version = record.version.checked_add(1).ok_or(Rejection::Overflow)?;
    Ok(Record {
        quantity,
        reserved,
        version,
        updated_at_ms: now_ms.max(record.updated_at_ms),
        ..record
    })
}

pub fn invalid(message: &str) -> Rejection {
    Rejection::Invalid {
        message: message.to_owned(),
    }
}
