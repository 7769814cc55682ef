//! Inventory records and their identity.
//!
//! A record counts its units twice over: `quantity` is what is available (the seed's `qty`),
//! `reserved` what live holds keep aside (see `reservation`); on hand is their sum. Records are
//! stored as they are encoded here (bincode in sled and snapshot files, and inside every stored
//! answer), so their encoding is a storage format: see `record_wire`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted store id, in characters (the seed's limit).
pub const STORE_ID_LENGTH_MAX: usize = 20;
/// Longest accepted SKU, in characters (the seed's limit).
pub const SKU_LENGTH_MAX: usize = 50;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ValidationError {
    #[error("{field} must be 1 to {max} characters long")]
    Length { field: String, max: usize },
    #[error("{field} may only contain letters, digits, '.', '_' and '-'")]
    Characters { field: String },
    #[error("a reservation id reads rsv-<log index>-<number>")]
    ReservationId,
}

/// The identity of one inventory record: a SKU in a store.
///
/// Ordered (store first) so that a store's records are contiguous in the sled key space.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    pub store_id: String,
    pub sku: String,
}

impl RecordKey {
    /// Validates both parts: 1..=max characters of `[A-Za-z0-9._-]`.
    pub fn new(store_id: &str, sku: &str) -> Result<Self, ValidationError> {
        check_identifier("storeId", store_id, STORE_ID_LENGTH_MAX)?;
        check_identifier("sku", sku, SKU_LENGTH_MAX)?;
        Ok(Self {
            store_id: store_id.to_owned(),
            sku: sku.to_owned(),
        })
    }
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.store_id, self.sku)
    }
}

fn check_identifier(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > max {
        return Err(ValidationError::Length {
            field: field.to_owned(),
            max,
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !value.chars().all(allowed) {
        return Err(ValidationError::Characters {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// One SKU's stock in one store.
///
/// `version` starts at 1 and grows by exactly 1 on every change; times are log time in
/// milliseconds since the Unix epoch, stamped by the leader that proposed the change.
/// `quantity + reserved` always fits in an i64 (apply refuses a change that would not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: RecordKey,
    /// Units available. Never negative.
    pub quantity: i64,
    /// Units in held reservations: the sum of their lines for this record. Never negative.
    pub reserved: i64,
    pub version: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl Record {
    /// Units on hand: available plus reserved. Saturates rather than overflow on a record that
    /// breaks the invariant above (only a corrupt one can).
    pub fn on_hand(&self) -> i64 {
        self.quantity.saturating_add(self.reserved)
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        record_wire::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        record_wire::deserialize(deserializer)
    }
}

/// The encoding of a [`Record`].
///
/// Before holds, a record was a derived struct `{ key: { store_id, sku }, quantity, version,
/// created_at_ms, updated_at_ms }`, which bincode writes as its fields in order with no framing:
/// the first bytes are the store id's length (a varint: one byte, as ids are 1 to 20
/// characters) and the store id. Stored records and stored answers hold those bytes, and are
/// not migrated. So:
/// - a record with `reserved == 0` is written in exactly those bytes (**legacy layout**): a
///   record that never had a hold is stored as before, and a node not yet upgraded reads it;
/// - a record with `reserved != 0` is written in the **tagged layout**: a `0` varint (where the
///   legacy layout has the store id's length, never 0), then `key, quantity, reserved, version,
///   created_at_ms, updated_at_ms`.
///
/// Decoding reads the value as a tuple and its first element as a u64: 0 means the tagged
/// layout; anything else is the legacy layout's store id length, followed by that many bytes of
/// the id (bincode writes a `u8` as one raw byte, so reading them one by one reads the string's
/// bytes), then the rest of the legacy fields. bincode's tuples have no length of their own, so
/// the tuple is opened with room for any number of elements and read as far as the layout says;
/// a length claiming more bytes than the input holds fails at the end of the input, having
/// allocated no more than the input's bytes (a store id's worth up front).
///
/// Human-readable formats (JSON) need no such trick: there the record is a plain struct with
/// every field, `reserved` defaulting to 0 when absent.
mod record_wire {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Record, RecordKey, STORE_ID_LENGTH_MAX};

    /// The first varint of the tagged layout: a store id is never empty.
    const TAGGED_LAYOUT: u64 = 0;

    /// The human-readable shape, written.
    #[derive(Serialize)]
    struct Fields<'a> {
        key: &'a RecordKey,
        quantity: i64,
        reserved: i64,
        version: u64,
        created_at_ms: u64,
        updated_at_ms: u64,
    }

    /// The human-readable shape, read.
    #[derive(Deserialize)]
    struct OwnedFields {
        key: RecordKey,
        quantity: i64,
        #[serde(default)]
        reserved: i64,
        version: u64,
        created_at_ms: u64,
        updated_at_ms: u64,
    }

    pub fn serialize<S: Serializer>(record: &Record, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return Fields {
                key: &record.key,
                quantity: record.quantity,
                reserved: record.reserved,
                version: record.version,
                created_at_ms: record.created_at_ms,
                updated_at_ms: record.updated_at_ms,
            }
            .serialize(serializer);
        }
        if record.reserved == 0 {
            let mut tuple = serializer.serialize_tuple(5)?;
            tuple.serialize_element(&record.key)?;
            tuple.serialize_element(&record.quantity)?;
            tuple.serialize_element(&record.version)?;
            tuple.serialize_element(&record.created_at_ms)?;
            tuple.serialize_element(&record.updated_at_ms)?;
            return tuple.end();
        }
        let mut tuple = serializer.serialize_tuple(7)?;
        tuple.serialize_element(&TAGGED_LAYOUT)?;
        tuple.serialize_element(&record.key)?;
        tuple.serialize_element(&record.quantity)?;
        tuple.serialize_element(&record.reserved)?;
        tuple.serialize_element(&record.version)?;
        tuple.serialize_element(&record.created_at_ms)?;
        tuple.serialize_element(&record.updated_at_ms)?;
        tuple.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Record, D::Error> {
        if deserializer.is_human_readable() {
            let fields = OwnedFields::deserialize(deserializer)?;
            return Ok(Record {
                key: fields.key,
                quantity: fields.quantity,
                reserved: fields.reserved,
                version: fields.version,
                created_at_ms: fields.created_at_ms,
                updated_at_ms: fields.updated_at_ms,
            });
        }
        deserializer.deserialize_tuple(usize::MAX, LayoutVisitor)
    }

    struct LayoutVisitor;

    impl<'de> Visitor<'de> for LayoutVisitor {
        type Value = Record;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an inventory record")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Record, A::Error> {
            let mut fields = Elements::new(&mut seq);
            let first: u64 = fields.next()?;
            if first == TAGGED_LAYOUT {
                return Ok(Record {
                    key: fields.next()?,
                    quantity: fields.next()?,
                    reserved: fields.next()?,
                    version: fields.next()?,
                    created_at_ms: fields.next()?,
                    updated_at_ms: fields.next()?,
                });
            }
            let store_id = fields.store_id(first)?;
            Ok(Record {
                key: RecordKey {
                    store_id,
                    sku: fields.next()?,
                },
                quantity: fields.next()?,
                reserved: 0,
                version: fields.next()?,
                created_at_ms: fields.next()?,
                updated_at_ms: fields.next()?,
            })
        }
    }

    /// Reads the elements of a record's tuple in order, counting them for error messages.
    struct Elements<'s, A> {
        seq: &'s mut A,
        read: usize,
    }

    impl<'de, 's, A: SeqAccess<'de>> Elements<'s, A> {
        fn new(seq: &'s mut A) -> Self {
            Self { seq, read: 0 }
        }

        fn next<T: Deserialize<'de>>(&mut self) -> Result<T, A::Error> {
            let value = self
                .seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(self.read, &"an inventory record"))?;
            self.read += 1;
            Ok(value)
        }

        /// The legacy layout's store id: `length` raw bytes, UTF-8.
        fn store_id(&mut self, length: u64) -> Result<String, A::Error> {
            let capacity = usize::try_from(length).map_or(0, |n| n.min(STORE_ID_LENGTH_MAX));
            let mut bytes = Vec::with_capacity(capacity);
            for _ in 0..length {
                bytes.push(self.next::<u8>()?);
            }
            String::from_utf8(bytes)
                .map_err(|_| de::Error::custom("a record's store id is not UTF-8"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{CommandResult, IdempotencyEntry, Operation, Rejection, Response};

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
}
