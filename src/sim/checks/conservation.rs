//! Stock conservation: per record, on every replica once converged, the units it ever had
//! (`qty + reserved`, plus the units of its committed reservations, which left) equal its
//! acknowledged creates, adjusts and reserves, plus some subset of the operations whose outcome
//! is unknown (each fully applied or absent); never below zero, and at most one create
//! acknowledged. Holds, releases and expiries move units between `qty` and `reserved` and
//! change neither side; a commit moves them out of `reserved` into the committed reservation's
//! lines (as the replica remembers it: ended reservations are kept 24 h of log time, far longer
//! than a run). It reads the stored state rather than client answers, so it does not depend on
//! the linearizability search finishing.

use std::collections::BTreeSet;

use super::replica::Replica;
use crate::checker::{Event, Op, Outcome};
use crate::inventory::ReservationStatus;
use crate::sim::report::RunReport;

/// Bound on the number of reachable sums tracked by the conservation check.
const CONSERVATION_SUMS_MAX: usize = 1 << 16;

/// Checks `sku`'s final record on `replica` against its history.
pub(super) fn check_final_record(
    replica: &Replica,
    sku: &str,
    events: &[Event],
    report: &mut RunReport,
) {
    let units = replica.records.get(sku).map(|record| {
        let committed: i64 = replica
            .reservations
            .values()
            .filter(|r| r.status == ReservationStatus::Committed)
            .flat_map(|r| &r.lines)
            .filter(|line| line.key == record.key)
            .map(|line| line.quantity)
            .sum();
        record.quantity + record.reserved + committed
    });
    if let Err(message) = check_conservation(events, units) {
        report.violations.push(format!(
            "conservation of {sku} on node {}: {message}",
            replica.id
        ));
    }
}

/// Final units = acknowledged effects + a subset of unknown effects; at most one create.
fn check_conservation(events: &[Event], final_units: Option<i64>) -> Result<(), String> {
    let mut definite: i64 = 0;
    let mut creates = 0;
    let mut unknown = Vec::new();
    let mut unknown_create = false;
    for event in events {
        let effect = match event.op {
            Op::Create { initial } => initial,
            Op::Adjust { delta, .. } => delta,
            Op::Reserve { qty, .. } => -qty,
            Op::Read => continue,
        };
        match event.outcome {
            Outcome::Ok { .. } => {
                definite += effect;
                creates += usize::from(matches!(event.op, Op::Create { .. }));
            }
            Outcome::Unknown => {
                unknown.push(effect);
                unknown_create |= matches!(event.op, Op::Create { .. });
            }
            _ => {}
        }
    }
    if creates > 1 {
        return Err(format!("{creates} creates were acknowledged"));
    }
    let Some(final_units) = final_units else {
        return if creates == 1 {
            Err("an acknowledged create is missing".into())
        } else {
            Ok(())
        };
    };
    if final_units < 0 {
        return Err(format!("final units {final_units} are negative"));
    }
    if creates == 0 && !unknown_create {
        return Err(format!(
            "the record exists ({final_units} units) but no create was sent"
        ));
    }
    let mut reachable = BTreeSet::from([definite]);
    for effect in unknown {
        let next: Vec<i64> = reachable.iter().map(|sum| sum + effect).collect();
        reachable.extend(next);
        if reachable.len() > CONSERVATION_SUMS_MAX {
            return Ok(());
        }
    }
    if reachable.contains(&final_units) {
        Ok(())
    } else {
        Err(format!(
            "final units {final_units} (qty + reserved + committed) are not acknowledged effects {definite} plus any subset of unknown ones"
        ))
    }
}
