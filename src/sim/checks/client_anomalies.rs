//! Client anomalies: what the simulated clients saw directly, with no checker needed. An answer
//! the workload could not classify (an unexpected status or a malformed body) and any quantity
//! below zero in an answer are violations as they stand; the workload records both as it goes
//! ([`History::anomalies`], [`History::negative_quantities`]) and this only reports them.

use crate::sim::report::RunReport;
use crate::sim::workload::History;

/// Every anomaly, then every negative quantity, in the order the clients saw them.
pub(super) fn check_client_anomalies(history: &History, report: &mut RunReport) {
    report.violations.extend(
        history
            .anomalies
            .iter()
            .map(|a| format!("client anomaly: {a}")),
    );
    report.violations.extend(
        history
            .negative_quantities
            .iter()
            .map(|q| format!("negative quantity observed: {q}")),
    );
}
