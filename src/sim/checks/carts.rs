//! Carts are held whole or not at all: a cart a client was answered 201 holds every line it
//! asked for (record and units), in the answer and in every replica's reservation, never only
//! some of them. With `held_units` (each record's `reserved` is the sum of the held lines naming
//! it) this means every line's record carries the hold, or (refused) none does.
//! A hold is a cart of one line and is checked the same way on the replicas.

use super::replica::Replica;
use crate::inventory::{ReservationId, ReservationLine};
use crate::sim::history::History;
use crate::sim::report::RunReport;

/// One violation per cart whose answer holds other lines than it asked for.
pub(super) fn check_cart_answers(history: &History, report: &mut RunReport) {
    for (id, log) in &history.reservations {
        match &log.answered {
            Some(answered) if *answered != log.requested => {
                report.violations.push(format!(
                    "half cart: {id} was asked to hold {:?}, its answer holds {answered:?}",
                    log.requested
                ));
            }
            _ => {}
        }
    }
}

/// One violation per acknowledged hold or cart that `replica` stores with other lines than
/// were asked for.
pub(super) fn check_carts_stored(replica: &Replica, history: &History, report: &mut RunReport) {
    for (id, log) in &history.reservations {
        if log.requested.is_empty() {
            continue; // not created by the client that saw it: nothing asked to compare
        }
        let Ok(parsed) = id.parse::<ReservationId>() else {
            continue; // reported by the endings check
        };
        let Some(reservation) = replica.reservations.get(&parsed) else {
            continue; // reported by the endings check
        };
        let stored = lines(&reservation.lines);
        if stored != log.requested {
            report.violations.push(format!(
                "half cart: {id} was asked to hold {:?}, node {} holds {stored:?}",
                log.requested, replica.id
            ));
        }
    }
}

/// A reservation's lines as the workload writes them: `(sku, units)`.
fn lines(lines: &[ReservationLine]) -> Vec<(String, i64)> {
    lines
        .iter()
        .map(|line| (line.key.sku.clone(), line.quantity))
        .collect()
}
