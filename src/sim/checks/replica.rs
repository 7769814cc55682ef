//! What one replica holds at the end of a run, read once from its disk for the checks that
//! look at every replica (conservation, held units, endings, carts, the feed). Its own file, below them
//! and `checks/mod.rs`, so that they share it without importing each other.

use std::collections::BTreeMap;

use crate::inventory::{Event, Record, RecordKey, Reservation, ReservationId};
use crate::raft::events::FeedHead;
use crate::raft::NodeId;
use crate::sim::workload::{self, STORE};
use crate::sim::SimCluster;

/// What one replica's disk holds at the end of a run: the workload's records, by SKU, every
/// reservation it remembers, and its event feed.
pub(super) struct Replica {
    pub id: NodeId,
    pub records: BTreeMap<String, Record>,
    pub reservations: BTreeMap<ReservationId, Reservation>,
    pub feed_head: FeedHead,
    /// Every event it keeps, oldest first.
    pub feed: Vec<Event>,
}

impl Replica {
    pub(super) fn read(cluster: &SimCluster, id: NodeId) -> Self {
        let records = workload::all_skus()
            .into_iter()
            .filter_map(|sku| {
                let key = RecordKey::new(STORE, &sku).expect("workload SKUs are valid");
                cluster.record(id, &key).map(|record| (sku, record))
            })
            .collect();
        let reservations = cluster
            .reservations(id)
            .into_iter()
            .map(|reservation| (reservation.id, reservation))
            .collect();
        let (feed_head, feed) = cluster.feed(id);
        Self {
            id,
            records,
            reservations,
            feed_head,
            feed,
        }
    }
}
