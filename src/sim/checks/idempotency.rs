//! Exactly-once idempotency: a keyed write is retried after unknown outcomes, possibly through
//! other nodes and across leader changes, and every definite answer under one idempotency key
//! must be identical (the first application's answer, replayed; the error timestamp is left out
//! when recorded). Different answers mean the write took effect more than once or its recorded
//! answer was lost.

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::sim::report::RunReport;
use crate::sim::workload::History;

/// One violation per key whose definite answers differ (plain writes, hold traffic, batches).
pub(super) fn check_idempotent_answers(history: &History, report: &mut RunReport) {
    check_keys(&history.keyed_answers, "", report);
    check_keys(&history.keyed_hold_answers, " of a hold operation", report);
    check_keys(&history.keyed_batch_answers, " of a batch", report);
}

fn check_keys<T: PartialEq + Debug>(
    answers_by_key: &BTreeMap<String, Vec<T>>,
    of_what: &str,
    report: &mut RunReport,
) {
    for (key, answers) in answers_by_key {
        if answers.windows(2).any(|pair| pair[0] != pair[1]) {
            report.violations.push(format!(
                "idempotency key {key}{of_what} got different answers: {answers:?}"
            ));
        }
    }
}
