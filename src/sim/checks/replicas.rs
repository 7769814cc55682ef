//! Replica agreement: once the cluster has converged (every node applied the same log id), all
//! nodes' state machines must be byte-identical, key by key, as their disks show them: the same
//! log must leave the same state everywhere, whether a node applied it entry by entry, installed
//! a snapshot, or restarted from its disk.

use crate::sim::report::RunReport;
use crate::sim::SimCluster;

/// Compares every node with the first one; one violation per node that differs.
pub(super) fn check_replicas_agree(cluster: &SimCluster, report: &mut RunReport) {
    let ids = cluster.ids();
    let reference = cluster.state_pairs(ids[0]);
    for id in &ids[1..] {
        if cluster.state_pairs(*id) != reference {
            report.violations.push(format!(
                "replica agreement: node {id} differs from node {}",
                ids[0]
            ));
        }
    }
}
