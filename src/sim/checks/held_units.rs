//! Held units: on every record of every replica, `reserved` is exactly the sum of the lines of
//! the held reservations naming it, and `qty + reserved` (its on hand) fits: units held are
//! neither lost nor counted twice, whichever way their reservations ended. A held reservation
//! naming a record the replica does not have is a violation too (nothing deletes records).

use std::collections::BTreeMap;

use super::replica::Replica;
use crate::inventory::{RecordKey, ReservationStatus};
use crate::sim::report::RunReport;

/// One violation per record that does not add up.
pub(super) fn check_held_units(replica: &Replica, report: &mut RunReport) {
    let mut held: BTreeMap<&RecordKey, i64> = BTreeMap::new();
    for reservation in replica.reservations.values() {
        if reservation.status == ReservationStatus::Held {
            for line in &reservation.lines {
                *held.entry(&line.key).or_default() += line.quantity;
            }
        }
    }
    let node = replica.id;
    for (sku, record) in &replica.records {
        let expected = held.remove(&record.key).unwrap_or(0);
        let problem = if record.quantity < 0 || record.reserved < 0 {
            Some("a count is negative".to_owned())
        } else if record.quantity.checked_add(record.reserved) != Some(record.on_hand()) {
            Some("qty + reserved does not fit on hand".to_owned())
        } else if record.reserved != expected {
            Some(format!("its held reservations hold {expected} units of it"))
        } else {
            None
        };
        if let Some(problem) = problem {
            report.violations.push(format!(
                "held units of {sku} on node {node}: qty {} reserved {}: {problem}",
                record.quantity, record.reserved
            ));
        }
    }
    // What is left names no record of the replica.
    for (key, units) in held {
        report.violations.push(format!(
            "held units on node {node}: {units} units of {key} held, and no such record"
        ));
    }
}
