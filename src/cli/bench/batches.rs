//! `stockraft bench --batch SIZE`: the spread scenario's reserves sent as batches
//! (`POST /api/inventory/batch`, issue 33): each of the `--clients` clients sends one batch of
//! SIZE reserve lines at a time, each line 1 unit of a random SKU of the `--skus` (a SKU drawn
//! twice in one batch is two lines on one record, applied in order), through the nodes in turn.
//!
//! Figures: a run's operation is a batch, so the report's ops/s is batches per second and its
//! latency percentiles are per batch (first byte sent to the whole answer read); beside them
//! the lines applied and failed and the **lines committed per second** (lines applied over the
//! run's duration), the figure to set beside single reserves per second.
//!
//! `--batch-policy` (default `reject-everything`, the route's own default): with
//! `reject-everything` a batch is all or nothing (a refused batch counts all its lines as
//! failed); with `reject-failed-lines` each line succeeds or fails on its own and the answer's
//! `applied`/`failed` counts are added up. The spread stock never runs out, so no line fails in
//! a healthy run under either policy.
//!
//! The request is the wire's `BatchRequest`; the answer, deliberately, is read for its counts
//! only (`data.applied`, `data.failed`, or the status), not parsed into the 8,000 records it
//! carries (`Client::batch` would): the load generator shares the machine with the nodes, and
//! decoding every record would tax the figure it measures.

use std::sync::atomic::{AtomicU64, Ordering};

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::client::wire::{BatchErrorPolicy, BatchLineRequest, BatchRequest, ErrorBody};
use crate::client::{headers, routes, Client, WriteOptions};
use crate::inventory::BATCH_LINES_MAX;
use crate::transport::WireRequest;

/// What a batch does when one of its lines fails: the command line's name for the wire's
/// [`BatchErrorPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BatchPolicy {
    /// All lines or none (the route's default).
    #[default]
    RejectEverything,
    /// Each line on its own.
    RejectFailedLines,
}

impl From<BatchPolicy> for BatchErrorPolicy {
    fn from(policy: BatchPolicy) -> Self {
        match policy {
            BatchPolicy::RejectEverything => BatchErrorPolicy::RejectEverything,
            BatchPolicy::RejectFailedLines => BatchErrorPolicy::RejectFailedLines,
        }
    }
}

/// The name of the spread scenario's SKU number `index` (shared with its setup).
pub fn spread_sku(index: usize) -> String {
    format!("sku-{index}")
}

/// The counts of a batch answer (`data.applied`/`data.failed`; absent under
/// `rejectEverything`, whose success applied every line).
#[derive(Debug, Default, Deserialize)]
struct Counts {
    applied: Option<u64>,
    failed: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct CountsEnvelope {
    data: Counts,
}

/// What one batch request answered, for the bench's outcome and retry handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAnswer {
    pub status: u16,
    pub code: Option<String>,
    pub retry_after_s: Option<u64>,
}

/// The batch figures of a run (flattened into the report's JSON line).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchFigures {
    pub batch_size: usize,
    pub batch_policy: BatchPolicy,
    pub lines_applied: u64,
    pub lines_failed: u64,
    /// Lines applied per second of the run: the committed throughput.
    pub lines_per_sec: f64,
}

/// The batch load of one run: what each batch holds, and the lines counted so far.
pub struct BatchLoad {
    size: usize,
    policy: BatchPolicy,
    skus: usize,
    applied: AtomicU64,
    failed: AtomicU64,
}

impl BatchLoad {
    /// Batches of `size` lines (1 to [`BATCH_LINES_MAX`]) over `skus` spread SKUs.
    pub fn new(size: usize, policy: BatchPolicy, skus: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=BATCH_LINES_MAX).contains(&size),
            "--batch takes 1 to {BATCH_LINES_MAX} lines, not {size}"
        );
        anyhow::ensure!(skus > 0, "--skus must be positive");
        Ok(Self {
            size,
            policy,
            skus,
            applied: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// One batch's body: `size` reserves of 1 unit of random SKUs in store `store`.
    fn body(&self, store: &str) -> BatchRequest {
        let lines = (0..self.size)
            .map(|_| BatchLineRequest::Reserve {
                store_id: store.to_owned(),
                sku: spread_sku(rand::random_range(0..self.skus)),
                qty: 1,
                expected_version: None,
                ttl_seconds: None,
            })
            .collect();
        BatchRequest {
            lines,
            error_policy: Some(self.policy.into()),
        }
    }

    /// Sends one batch through `client` and counts its lines.
    pub async fn send(
        &self,
        client: &Client,
        store: &str,
        options: &WriteOptions,
    ) -> Result<BatchAnswer, crate::transport::TransportError> {
        let mut request = WireRequest::post(routes::INVENTORY_BATCH, &self.body(store));
        if let Some(key) = &options.idempotency_key {
            request
                .headers
                .push((headers::IDEMPOTENCY_KEY.into(), key.clone()));
        }
        let response = client.send(request).await?;
        let retry_after_s = response
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, value)| value.parse().ok());
        let code = self.count(response.status, &response.body);
        Ok(BatchAnswer {
            status: response.status,
            code,
            retry_after_s,
        })
    }

    /// Adds an answer's lines to the counts; returns its error code, if it is an error.
    fn count(&self, status: u16, body: &[u8]) -> Option<String> {
        if (200..300).contains(&status) {
            let counts = serde_json::from_slice::<CountsEnvelope>(body)
                .map(|envelope| envelope.data)
                .unwrap_or_default();
            let applied = counts.applied.unwrap_or(self.size as u64);
            let failed = counts.failed.unwrap_or(0);
            self.applied.fetch_add(applied, Ordering::Relaxed);
            self.failed.fetch_add(failed, Ordering::Relaxed);
            return None;
        }
        let code = serde_json::from_slice::<ErrorBody>(body)
            .map(|error| error.error.code)
            .ok();
        // A refused batch (rejectEverything) applied none of its lines. Shed or unled answers
        // (503, 429) did nothing either, but they are retried or waited on, not failed lines.
        if !matches!(status, 429 | 503) {
            self.failed.fetch_add(self.size as u64, Ordering::Relaxed);
        }
        code
    }

    /// The run's figures, over `seconds`.
    pub fn figures(&self, seconds: f64) -> BatchFigures {
        let applied = self.applied.load(Ordering::Relaxed);
        BatchFigures {
            batch_size: self.size,
            batch_policy: self.policy,
            lines_applied: applied,
            lines_failed: self.failed.load(Ordering::Relaxed),
            lines_per_sec: if seconds > 0.0 {
                applied as f64 / seconds
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_batch_is_size_reserve_lines_of_one_unit_on_the_spread_skus() {
        let load = BatchLoad::new(50, BatchPolicy::RejectFailedLines, 3).unwrap();
        let body = serde_json::to_value(load.body("run-1")).unwrap();
        assert_eq!(body["errorPolicy"], "rejectFailedLines");
        let lines = body["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 50);
        for line in lines {
            assert_eq!(line["op"], "reserve");
            assert_eq!(line["storeId"], "run-1");
            assert_eq!(line["qty"], 1);
            let sku = line["sku"].as_str().unwrap();
            assert!(["sku-0", "sku-1", "sku-2"].contains(&sku), "{sku}");
        }
        let everything = BatchLoad::new(1, BatchPolicy::default(), 1).unwrap();
        let body = serde_json::to_value(everything.body("s")).unwrap();
        assert_eq!(body["errorPolicy"], "rejectEverything");
    }

    #[test]
    fn the_size_must_be_within_the_routes_limit() {
        assert!(BatchLoad::new(0, BatchPolicy::default(), 1).is_err());
        assert!(BatchLoad::new(BATCH_LINES_MAX + 1, BatchPolicy::default(), 1).is_err());
        assert!(BatchLoad::new(BATCH_LINES_MAX, BatchPolicy::default(), 1).is_ok());
    }

    #[test]
    fn lines_are_counted_from_each_policys_answer() {
        let load = BatchLoad::new(10, BatchPolicy::RejectFailedLines, 1).unwrap();
        let each = json!({"success": true, "data": {"applied": 7, "failed": 3, "results": []}});
        assert_eq!(load.count(200, each.to_string().as_bytes()), None);
        // rejectEverything's success names no counts: every line applied.
        let all = json!({"success": true, "data": {"results": []}});
        assert_eq!(load.count(200, all.to_string().as_bytes()), None);
        let refused = json!({"success": false, "error": {"name": "ConflictError",
            "message": "m", "code": "BATCH_REFUSED", "statusCode": 422,
            "timestamp": "2026-12-07T00:00:00Z"}});
        assert_eq!(
            load.count(422, refused.to_string().as_bytes()).as_deref(),
            Some("BATCH_REFUSED")
        );
        let shed = json!({"success": false, "error": {"name": "ServiceUnavailable",
            "message": "m", "code": "OVERLOADED", "statusCode": 503,
            "timestamp": "2026-12-07T00:00:00Z"}});
        assert_eq!(
            load.count(503, shed.to_string().as_bytes()).as_deref(),
            Some("OVERLOADED")
        );
        let figures = load.figures(2.0);
        assert_eq!(figures.lines_applied, 17, "7 + 10");
        assert_eq!(
            figures.lines_failed, 13,
            "3 + a refused batch of 10, not the shed one"
        );
        assert_eq!(figures.lines_per_sec, 8.5);
    }
}
