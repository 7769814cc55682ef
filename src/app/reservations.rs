//! The application's reads of reservations and of the views over records: a reservation by id,
//! a SKU's records in every store, and a store's records a page at a time. Each comes in two
//! forms, as single-record reads do: linearizable (after a read-index barrier on the leader)
//! and local (this node's applied state, which may be behind).
//!
//! Writes need nothing here: holds, carts, commits and releases are commands on the ordinary
//! write path ([`App::propose`], forwarding, idempotency keys); expiries are proposed by the
//! leader's expiry proposer (`app::expiry`).

use super::{App, ReadError};
use crate::inventory::{Record, Reservation, ReservationId};
use crate::storage::StorageError;

/// Most stores the SKU view lists: the view answers one SKU's records in one response, and a
/// thousand stores' records are ~200 KB of JSON.
pub const SKU_VIEW_STORES_MAX: usize = 1_000;
/// Most records one page of a store's records holds (a page asked for more gets this many).
pub const STORE_PAGE_RECORDS_MAX: usize = 1_000;

impl App {
    /// A reservation after a linearizable read barrier (as read_linearizable does for records).
    pub async fn reservation_linearizable(
        &self,
        id: ReservationId,
    ) -> Result<Option<Reservation>, ReadError> {
        self.read_barrier().await?;
        Ok(self.reservation_local(id)?)
    }

    /// A reservation as this node has applied it.
    pub fn reservation_local(
        &self,
        id: ReservationId,
    ) -> Result<Option<Reservation>, StorageError> {
        self.state.reservation(id)
    }

    /// Every store's record of `sku`, ordered by store id, at most [`SKU_VIEW_STORES_MAX`],
    /// after a linearizable read barrier.
    pub async fn sku_records_linearizable(&self, sku: &str) -> Result<Vec<Record>, ReadError> {
        self.read_barrier().await?;
        Ok(self.sku_records_local(sku)?)
    }

    /// Every store's record of `sku` as this node has applied them (see
    /// [`Self::sku_records_linearizable`]).
    pub fn sku_records_local(&self, sku: &str) -> Result<Vec<Record>, StorageError> {
        self.state.sku_records(sku, SKU_VIEW_STORES_MAX)
    }

    /// A page of a store's records ordered by SKU, strictly after `after_sku`; `limit` 1..=1000
    /// (clamped into that range). Returns the records and whether more follow. After a
    /// linearizable read barrier.
    pub async fn store_records_linearizable(
        &self,
        store_id: &str,
        after_sku: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Record>, bool), ReadError> {
        self.read_barrier().await?;
        Ok(self.store_records_local(store_id, after_sku, limit)?)
    }

    /// A page of a store's records as this node has applied them (see
    /// [`Self::store_records_linearizable`]).
    pub fn store_records_local(
        &self,
        store_id: &str,
        after_sku: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Record>, bool), StorageError> {
        let limit = limit.clamp(1, STORE_PAGE_RECORDS_MAX);
        self.state.store_records(store_id, after_sku, limit)
    }
}
