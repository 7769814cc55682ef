//! Linearizability of every SKU's client history, by the search in [`crate::checker`]: one order
//! of the operations, consistent with real time, explains every answer the clients got. That
//! implies no oversell and no lost acknowledged write as the clients saw them. A search that
//! gives up (its state budget spent) proves nothing either way: it is counted in
//! [`RunReport::unchecked_skus`], not reported as a violation.

use crate::checker::{self, CheckError, Event, Outcome};
use crate::sim::report::RunReport;

/// Checks one SKU's history and counts its operations (and unknown ones) into the report.
pub(super) fn check_linearizable(sku: &str, events: &[Event], report: &mut RunReport) {
    report.ops_checked += events.len();
    report.unknown_ops += events
        .iter()
        .filter(|e| e.outcome == Outcome::Unknown)
        .count();
    match checker::check(events) {
        Ok(_) => {}
        Err(CheckError::GaveUp { .. }) => report.unchecked_skus += 1,
        Err(error) => report
            .violations
            .push(format!("linearizability of {sku}: {error}")),
    }
}
