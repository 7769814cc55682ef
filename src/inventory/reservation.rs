//! Reservations: stock held for a while, then committed (it left), released (it came back) or
//! expired (nobody resolved it, so the log gave it back).
//!
//! A reservation is born [`ReservationStatus::Held`] by a hold (one line) or a cart (up to
//! [`CART_LINES_MAX`] lines, all or none), and ends exactly once:
//!
//! ```text
//!            commit (log time < expiresAt)
//!          +-------------------------------> committed   (units leave: on hand drops)
//!          |
//!   held --+-------------------------------> released    (units back to the available qty)
//!          |  release (log time < expiresAt)
//!          |
//!          +-------------------------------> expired     (units back to the available qty)
//!             expire (log time >= expiresAt)
//! ```
//!
//! While held, its units sit in each record's `reserved` count: they are no longer available
//! (`quantity`) but still on hand (`quantity + reserved`). Every record's `reserved` is, at every
//! log index, the sum of the lines of the held reservations naming it; the transitions in
//! `lifecycle` keep that, and the simulation checks it.
//!
//! **Ids are derived from the log** ([`ReservationId`]): the index of the entry that created the
//! reservation and its number within that entry. Every replica computes the same id for the same
//! reservation without a counter, and an idempotent replay of a hold answers the id first given.
//!
//! **The log decides the deadline.** `expires_at_ms` is log time. A commit or release applied at
//! or after it is refused even if no expiry entry has applied yet; the leader proposes expiry
//! entries naming due reservations, and each replica expires exactly those of them that are
//! still held and due *in its state at that entry*, never on the proposer's view. So a hold
//! ends exactly once and in the same way on every replica.
//!
//! Not here, deliberately: where reservations are stored, how due ones are found, and how long
//! ended ones are remembered (the state machine's business), and their JSON shape (the API's).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::record::{RecordKey, ValidationError};

/// Shortest hold, in ms: a second. A shorter hold would mostly expire before its answer reached
/// the client.
pub const HOLD_TTL_MS_MIN: u64 = 1_000;
/// Longest hold, in ms: 7 days. Stock held longer is better modelled as sold; the bound also
/// keeps expiry times far from overflowing.
pub const HOLD_TTL_MS_MAX: u64 = 7 * 24 * 60 * 60 * 1_000;
/// Most lines one cart holds: one log entry, one apply, one stored answer (the reservation, in
/// every idempotency entry that remembers the cart) of a few KB at most.
pub const CART_LINES_MAX: usize = 100;
/// Most reservation ids one expiry entry names: bounded work per entry (each id touches its
/// reservation and the records of its lines: at most 100,000 records with the largest carts),
/// while 1,000 per entry expires 100,000 due holds in a hundred entries.
pub const EXPIRE_IDS_MAX: usize = 1_000;
/// Most reservations held at once, over the whole store. Twice the 1,000,000 live holds the
/// store is sized for: a bound on the state (each held reservation costs its stored bytes and an
/// entry in the expiry order, ~200 bytes, so ~400 MB at the cap), reached only by a client that
/// holds and never resolves; past it a new hold or cart is refused, and nothing held is lost.
pub const HELD_RESERVATIONS_MAX: u64 = 2_000_000;
/// Most reservations one log entry may create: the 16 low bits of a [`ReservationId`].
pub const RESERVATIONS_PER_ENTRY_MAX: u32 = 1 << NUMBER_BITS;

/// Bits of a [`ReservationId`] that number the reservations of one entry.
const NUMBER_BITS: u32 = 16;
/// Largest log index a [`ReservationId`] can name: 2^48 - 1 (at a million entries a second,
/// nine years of log).
const LOG_INDEX_MAX: u64 = u64::MAX >> NUMBER_BITS;
/// How a reservation id is written: `rsv-<log index>-<number>`.
const ID_PREFIX: &str = "rsv-";

/// The identity of a reservation: `log_index << 16 | number`, where `log_index` is the entry
/// that created it and `number` counts the reservations that entry created (0 for the first).
///
/// Ordered as the reservations were created. Written `rsv-<log_index>-<number>`
/// (`rsv-1042-0`); [`FromStr`] accepts exactly that spelling (decimal, no sign, no leading
/// zero), so an id has one written form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReservationId(u64);

impl ReservationId {
    /// The `number`th reservation created by the entry at `log_index`; `None` past 2^48 - 1.
    pub fn new(log_index: u64, number: u16) -> Option<Self> {
        if log_index > LOG_INDEX_MAX {
            return None;
        }
        Some(Self(log_index << NUMBER_BITS | u64::from(number)))
    }

    /// The id stored as `value` (as [`Self::as_u64`] gave it). Every u64 is some id.
    pub const fn from_u64(value: u64) -> Self {
        Self(value)
    }

    /// The id as one integer, ordered as the ids are: for storage keys.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The index of the log entry that created the reservation.
    pub const fn log_index(self) -> u64 {
        self.0 >> NUMBER_BITS
    }

    /// Which of that entry's reservations this is (0 for the first).
    pub const fn number(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ID_PREFIX}{}-{}", self.log_index(), self.number())
    }
}

impl FromStr for ReservationId {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (log_index, number) = text
            .strip_prefix(ID_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .ok_or(ValidationError::ReservationId)?;
        let log_index = canonical_decimal(log_index).ok_or(ValidationError::ReservationId)?;
        let number = canonical_decimal(number)
            .and_then(|number| u16::try_from(number).ok())
            .ok_or(ValidationError::ReservationId)?;
        Self::new(log_index, number).ok_or(ValidationError::ReservationId)
    }
}

/// `text` as a decimal number written the one way `Display` writes it: digits only, no leading
/// zero (but `0` itself), within u64.
fn canonical_decimal(text: &str) -> Option<u64> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return None;
    }
    text.parse().ok()
}

/// Where a reservation is in its life. Only `Held` ever changes, and only to one of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationStatus {
    Held,
    Committed,
    Released,
    Expired,
}

impl ReservationStatus {
    /// The status as the API shows it: a lower-case word.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "held",
            ReservationStatus::Committed => "committed",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Units of one record a reservation holds (or held).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationLine {
    pub key: RecordKey,
    /// Units held: >= 0 (a hold may hold 0, as a reserve may take 0); >= 1 in a cart.
    pub quantity: i64,
}

/// Stock held until a deadline, and what became of it. Times are log time, ms since the Unix
/// epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: ReservationId,
    pub status: ReservationStatus,
    /// In the order the command named them; never two lines for one record.
    pub lines: Vec<ReservationLine>,
    pub created_at_ms: u64,
    /// The log time of its last transition (its creation while held).
    pub updated_at_ms: u64,
    /// From this log time on, it can no longer be committed or released, only expired.
    pub expires_at_ms: u64,
}

impl Reservation {
    /// Held, and still before its deadline at log time `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.status == ReservationStatus::Held && now_ms < self.expires_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_the_entry_index_and_its_number_within_the_entry() {
        let id = ReservationId::new(1_042, 3).unwrap();
        assert_eq!(id.as_u64(), 1_042 << 16 | 3);
        assert_eq!((id.log_index(), id.number()), (1_042, 3));
        assert_eq!(ReservationId::from_u64(id.as_u64()), id);
        assert!(ReservationId::new(1, 0) < ReservationId::new(1, 1));
        assert!(ReservationId::new(1, u16::MAX) < ReservationId::new(2, 0));
        assert!(ReservationId::new(LOG_INDEX_MAX, u16::MAX).is_some());
        assert_eq!(ReservationId::new(LOG_INDEX_MAX + 1, 0), None);
        assert_eq!(RESERVATIONS_PER_ENTRY_MAX, 65_536);
    }

    #[test]
    fn an_id_is_written_and_read_as_rsv_index_number() {
        for id in [
            ReservationId::new(0, 0).unwrap(),
            ReservationId::new(1_042, 0).unwrap(),
            ReservationId::new(7, u16::MAX).unwrap(),
            ReservationId::from_u64(u64::MAX),
        ] {
            let text = id.to_string();
            assert_eq!(text.parse::<ReservationId>(), Ok(id), "{text}");
        }
        assert_eq!(
            ReservationId::new(1_042, 3).unwrap().to_string(),
            "rsv-1042-3"
        );
    }

    #[test]
    fn any_other_spelling_of_an_id_is_invalid() {
        let too_large_index = format!("rsv-{}-0", LOG_INDEX_MAX + 1);
        for text in [
            "",
            "rsv-",
            "rsv-1",
            "rsv-1-",
            "rsv--1",
            "rsv-1-2-3",
            "RSV-1-2",
            "res-1-2",
            " rsv-1-2",
            "rsv-1-2 ",
            "rsv-01-2",
            "rsv-1-02",
            "rsv-+1-2",
            "rsv--1-2",
            "rsv-1-65536",
            "rsv-1-x",
            "rsv-١-2",
            "rsv-99999999999999999999-0",
            too_large_index.as_str(),
        ] {
            assert_eq!(
                text.parse::<ReservationId>(),
                Err(ValidationError::ReservationId),
                "{text:?}"
            );
        }
    }

    #[test]
    fn statuses_read_as_lower_case_words() {
        let words = [
            ReservationStatus::Held,
            ReservationStatus::Committed,
            ReservationStatus::Released,
            ReservationStatus::Expired,
        ]
        .map(|status| status.to_string());
        assert_eq!(words, ["held", "committed", "released", "expired"]);
    }
}
