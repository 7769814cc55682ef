//! Records and stored answers keep their bytes: what was written before holds existed reads back
//! unchanged, and a record with nothing reserved is stored in exactly the old layout.

use serde::Serialize;

use crate::inventory::*;

/// `Record` as it was before holds, field for field: what stored records and answers hold.
#[derive(Debug, Clone, Serialize)]
struct LegacyRecord {
    key: RecordKey,
    quantity: i64,
    version: u64,
    created_at_ms: u64,
    updated_at_ms: u64,
}

/// An `IdempotencyEntry` holding a legacy answer, as stored before holds.
#[derive(Serialize)]
struct LegacyEntry {
    fingerprint: Vec<u8>,
    response: LegacyResponse,
    expires_at_ms: u64,
}

#[derive(Serialize)]
struct LegacyResponse {
    operation: Operation,
    result: Result<LegacyRecord, Rejection>,
    replayed: bool,
    log_index: u64,
}

fn legacy(store_id: &str) -> LegacyRecord {
    LegacyRecord {
        key: RecordKey::new(store_id, "SKU-1").unwrap(),
        quantity: 7,
        version: 3,
        created_at_ms: 1_767_225_600_000,
        updated_at_ms: 1_767_225_600_123,
    }
}

fn record(store_id: &str, reserved: i64) -> Record {
    let old = legacy(store_id);
    Record {
        key: old.key,
        quantity: old.quantity,
        reserved,
        version: old.version,
        created_at_ms: old.created_at_ms,
        updated_at_ms: old.updated_at_ms,
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|error| error.to_string())?;
    assert_eq!(read, bytes.len(), "every byte is read");
    Ok(value)
}

#[test]
fn a_record_stored_before_holds_reads_as_nothing_reserved() {
    for store_id in ["s", "store-1", &"s".repeat(STORE_ID_LENGTH_MAX)] {
        let old = encode(&legacy(store_id));
        let decoded: Record = decode(&old).unwrap();
        assert_eq!(decoded, record(store_id, 0));
    }
}

#[test]
fn a_record_with_nothing_reserved_is_stored_in_exactly_the_old_bytes() {
    for store_id in ["s", "store-1", &"s".repeat(STORE_ID_LENGTH_MAX)] {
        assert_eq!(encode(&record(store_id, 0)), encode(&legacy(store_id)));
    }
}

#[test]
fn a_record_with_units_reserved_round_trips_in_the_tagged_layout() {
    for reserved in [1, 5, i64::MAX - 7, -1] {
        let held = record("store-1", reserved);
        let bytes = encode(&held);
        assert_eq!(bytes[0], 0, "the tag where the store id's length was");
        assert_eq!(decode::<Record>(&bytes), Ok(held));
    }
    // A tagged record with nothing reserved (never written so) reads the same.
    let tagged = encode(&(
        0u8,
        RecordKey::new("s", "a").unwrap(),
        4i64,
        0i64,
        2u64,
        1u64,
        1u64,
    ));
    let read: Record = decode(&tagged).unwrap();
    assert_eq!((read.quantity, read.reserved, read.version), (4, 0, 2));
}

#[test]
fn a_record_inside_a_stored_answer_reads_both_ways_with_bytes_after_it() {
    // An answer stored before holds, followed by more bytes (as in a chunk of entries).
    let old = LegacyEntry {
        fingerprint: vec![1, 2, 3],
        response: LegacyResponse {
            operation: Operation::Reserve,
            result: Ok(legacy("store-1")),
            replayed: false,
            log_index: 9,
        },
        expires_at_ms: 1_000,
    };
    let old_bytes = encode(&(old, 77u64, "after".to_owned()));
    let (entry, marker, after): (IdempotencyEntry, u64, String) = decode(&old_bytes).unwrap();
    assert_eq!(
        entry.response.result,
        CommandResult::Ok(record("store-1", 0))
    );
    assert_eq!((marker, after.as_str()), (77, "after"));
    assert_eq!(encode(&(entry, marker, after)), old_bytes);

    // And an answer holding a record with units reserved.
    for result in [
        CommandResult::Ok(record("store-1", 3)),
        CommandResult::Held {
            record: record("s", 2),
            reservation_id: crate::inventory::ReservationId::new(9, 0).unwrap(),
        },
    ] {
        let entry = IdempotencyEntry {
            fingerprint: vec![4],
            response: Response {
                operation: Operation::Hold,
                result,
                replayed: false,
                log_index: 9,
            },
            expires_at_ms: 2_000,
        };
        let value = (entry, 78u64, "after".to_owned());
        assert_eq!(
            decode::<(IdempotencyEntry, u64, String)>(&encode(&value)),
            Ok(value)
        );
    }
}

#[test]
fn a_record_round_trips_through_json_with_every_field() {
    for reserved in [0, 4] {
        let held = record("store-1", reserved);
        let json = serde_json::to_value(&held).unwrap();
        assert_eq!(json["reserved"], reserved);
        assert_eq!(json["quantity"], 7);
        assert_eq!(serde_json::from_value::<Record>(json).unwrap(), held);
    }
    let old_json = serde_json::to_value(legacy("store-1")).unwrap();
    assert_eq!(
        serde_json::from_value::<Record>(old_json).unwrap(),
        record("store-1", 0)
    );
}

#[test]
fn a_truncated_or_inflated_record_is_an_error_not_a_panic() {
    for reserved in [0, 9] {
        let bytes = encode(&record("store-1", reserved));
        for length in 0..bytes.len() {
            assert!(
                decode::<Record>(&bytes[..length]).is_err(),
                "{length} bytes"
            );
        }
    }
    // A store id length claiming 2^62 bytes, followed by a few.
    let mut bomb = vec![0xFD];
    bomb.extend_from_slice(&(1u64 << 62).to_le_bytes());
    bomb.extend_from_slice(b"abc");
    assert!(decode::<Record>(&bomb).is_err());
    // Store id bytes that are not UTF-8.
    let mut bad = encode(&legacy("ab"));
    bad[1] = 0xFF;
    assert!(decode::<Record>(&bad).is_err());
}

#[test]
fn on_hand_is_available_plus_reserved() {
    let held = Record {
        quantity: 5,
        ..record("s", 3)
    };
    assert_eq!(held.on_hand(), 8);
}

#[test]
fn identifiers_are_checked_for_length_and_characters() {
    assert!(RecordKey::new("store-1", "SKU_1.a").is_ok());
    assert!(matches!(
        RecordKey::new("", "a"),
        Err(ValidationError::Length { .. })
    ));
    assert!(matches!(
        RecordKey::new(&"s".repeat(21), "a"),
        Err(ValidationError::Length { .. })
    ));
    assert!(RecordKey::new(&"s".repeat(20), &"k".repeat(50)).is_ok());
    assert!(matches!(
        RecordKey::new("s", &"k".repeat(51)),
        Err(ValidationError::Length { .. })
    ));
    assert!(matches!(
        RecordKey::new("s/1", "a"),
        Err(ValidationError::Characters { .. })
    ));
    assert!(matches!(
        RecordKey::new("s", "é"),
        Err(ValidationError::Characters { .. })
    ));
}
