//! From the domain to the wire: records as the seed showed them (with what is held),
//! reservations, and time formatting.

use crate::client::wire::{EventBody, RecordBody, ReservationBody, ReservationLineBody, Totals};
use crate::inventory::{Event, Record, Reservation};

/// A record as the seed's clients expect it, with what is held (issue 31):
/// `{sku, storeId, qty, reserved, onHand, version, createdAt, updatedAt}`.
pub fn record(record: &Record) -> RecordBody {
    RecordBody {
        sku: record.key.sku.clone(),
        store_id: record.key.store_id.clone(),
        qty: record.quantity,
        reserved: record.reserved,
        on_hand: record.on_hand(),
        version: record.version,
        created_at: rfc3339_ms(record.created_at_ms),
        updated_at: rfc3339_ms(record.updated_at_ms),
    }
}

/// A reservation: `{id, status, lines: [{storeId, sku, qty}], createdAt, updatedAt, expiresAt}`,
/// its times rendered as records' are.
pub fn reservation(reservation: &Reservation) -> ReservationBody {
    ReservationBody {
        id: reservation.id.to_string(),
        status: reservation.status.as_str().to_owned(),
        lines: reservation
            .lines
            .iter()
            .map(|line| ReservationLineBody {
                store_id: line.key.store_id.clone(),
                sku: line.key.sku.clone(),
                qty: line.quantity,
            })
            .collect(),
        created_at: rfc3339_ms(reservation.created_at_ms),
        updated_at: rfc3339_ms(reservation.updated_at_ms),
        expires_at: rfc3339_ms(reservation.expires_at_ms),
    }
}

/// An event of the feed (see [`EventBody`]).
pub fn event(event: &Event) -> EventBody {
    EventBody {
        seq: event.seq,
        log_index: event.log_index,
        kind: event.kind.as_str().to_owned(),
        store_id: event.key.store_id.clone(),
        sku: event.key.sku.clone(),
        qty: event.quantity,
        reserved: event.reserved,
        delta: event.delta,
        version: event.version,
        reservation_id: event.reservation_id.map(|id| id.to_string()),
        idempotency_key: event.idempotency_key.clone(),
        at: rfc3339_ms(event.at_ms),
    }
}

/// The sums of `qty`, `reserved` and `onHand` over `records`. Saturating: a SKU's units over
/// 1,000 stores cannot reach the bounds of an i64 in practice, but a view never panics.
pub fn totals(records: &[Record]) -> Totals {
    let sum = |part: fn(&Record) -> i64| {
        records
            .iter()
            .fold(0_i64, |total, record| total.saturating_add(part(record)))
    };
    Totals {
        qty: sum(|record| record.quantity),
        reserved: sum(|record| record.reserved),
        on_hand: sum(Record::on_hand),
    }
}

/// Formats ms since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), like JavaScript's
/// `Date.toISOString()`, which the seed used.
pub fn rfc3339_ms(ms: u64) -> String {
    let seconds = ms / 1000;
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn formats_like_javascript_to_iso_string() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }
}
