//! The feed as a consumer read it through the faults ([`crate::sim::consumer`]) against the
//! feed every replica keeps at the end: every event exactly once, in order, each equal to the
//! replicas' event of its seq, up to the head. With retention on, the events the nodes forgot
//! before the reader got to them are counted (410s), not missing: what was read plus what was
//! lost is the whole feed.

use super::replica::Replica;
use crate::client::wire::EventBody;
use crate::inventory::Event;
use crate::sim::consumer::FeedReading;
use crate::sim::report::RunReport;

/// Violations start with `subscriber`.
pub(super) fn check_subscriber(reading: &FeedReading, feed: &Replica, report: &mut RunReport) {
    for problem in &reading.problems {
        report.violations.push(format!("subscriber: {problem}"));
    }
    let head = feed.feed_head.last_seq;
    if reading.cursor != head {
        report.violations.push(format!(
            "subscriber: read up to seq {}, the feed is at seq {head}",
            reading.cursor
        ));
    }
    let read = reading.seen.len() as u64;
    if read + reading.lost_to_retention != head {
        report.violations.push(format!(
            "subscriber: read {read} events and lost {} to retention, the feed has {head}",
            reading.lost_to_retention
        ));
    }
    if let Some(pair) = reading
        .seen
        .windows(2)
        .find(|pair| pair[1].seq <= pair[0].seq)
    {
        report.violations.push(format!(
            "subscriber: seq {} came after seq {} (a duplicate or a reordering)",
            pair[1].seq, pair[0].seq
        ));
    }
    let oldest = feed.feed_head.oldest_seq;
    for seen in &reading.seen {
        let Some(kept) = seen
            .seq
            .checked_sub(oldest)
            .and_then(|at| feed.feed.get(at as usize))
        else {
            continue; // forgotten since it was read
        };
        if !same_event(seen, kept) {
            report.violations.push(format!(
                "subscriber: seq {} was read as {seen:?}, node {} keeps {kept:?}",
                seen.seq, feed.id
            ));
            return;
        }
    }
}

/// Whether an event read over the wire is the stored one (its time is rendered, not compared).
fn same_event(seen: &EventBody, kept: &Event) -> bool {
    seen.seq == kept.seq
        && seen.log_index == kept.log_index
        && seen.kind == kept.kind.as_str()
        && seen.store_id == kept.key.store_id
        && seen.sku == kept.key.sku
        && seen.qty == kept.quantity
        && seen.reserved == kept.reserved
        && seen.delta == kept.delta
        && seen.version == kept.version
        && seen.reservation_id == kept.reservation_id.map(|id| id.to_string())
        && seen.idempotency_key == kept.idempotency_key
}
