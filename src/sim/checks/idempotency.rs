//! Exactly-once idempotency: a keyed write is retried after unknown outcomes, possibly through
//! other nodes and across leader changes, and every definite answer under one idempotency key
//! must be identical (the first application's answer, replayed; the error timestamp is left out
//! when recorded). Different answers mean the write took effect more than once or its recorded
//! answer was lost.

use crate::sim::report::RunReport;
use crate::sim::workload::History;

/// One violation per key whose definite answers differ (plain writes, then hold traffic).
pub(super) fn check_idempotent_answers(history: &History, report: &mut RunReport) {
    for (key, answers) in &history.keyed_answers {
        if answers.windows(2).any(|pair| pair[0] != pair[1]) {
            report.violations.push(format!(
                "idempotency key {key} got different answers: {answers:?}"
            ));
        }
    }
    for (key, answers) in &history.keyed_hold_answers {
        if answers.windows(2).any(|pair| pair[0] != pair[1]) {
            report.violations.push(format!(
                "idempotency key {key} of a hold operation got different answers: {answers:?}"
            ));
        }
    }
}
