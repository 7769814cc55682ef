//! Stock conservation: the final quantity of a record (as the leader's disk shows it after
//! convergence) equals its acknowledged creates, adjusts and reserves, plus some subset of the
//! operations whose outcome is unknown (each fully applied or absent); never below zero, and at
//! most one create acknowledged. It reads the stored record rather than client answers, so it
//! does not depend on the linearizability search finishing.

use std::collections::BTreeSet;

use crate::checker::{Event, Op, Outcome};
use crate::inventory::RecordKey;
use crate::raft::NodeId;
use crate::sim::report::RunReport;
use crate::sim::workload::STORE;
use crate::sim::SimCluster;

/// Bound on the number of reachable sums tracked by the conservation check.
const CONSERVATION_SUMS_MAX: usize = 1 << 16;

/// Checks `sku`'s final record on `leader` against its history.
pub(super) fn check_final_record(
    cluster: &SimCluster,
    leader: NodeId,
    sku: &str,
    events: &[Event],
    report: &mut RunReport,
) {
    let key = RecordKey::new(STORE, sku).expect("workload SKUs are valid");
    let final_record = cluster.record(leader, &key);
    if let Err(message) = check_conservation(events, final_record.map(|r| r.quantity)) {
        report
            .violations
            .push(format!("conservation of {sku}: {message}"));
    }
}

/// Final quantity = acknowledged effects + a subset of unknown effects; at most one create.
fn check_conservation(events: &[Event], final_qty: Option<i64>) -> Result<(), String> {
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
    let Some(final_qty) = final_qty else {
        return if creates == 1 {
            Err("an acknowledged create is missing".into())
        } else {
            Ok(())
        };
    };
    if final_qty < 0 {
        return Err(format!("final quantity {final_qty} is negative"));
    }
    if creates == 0 && !unknown_create {
        return Err(format!(
            "the record exists (qty {final_qty}) but no create was sent"
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
    if reachable.contains(&final_qty) {
        Ok(())
    } else {
        Err(format!(
            "final quantity {final_qty} is not acknowledged effects {definite} plus any subset of unknown ones"
        ))
    }
}
