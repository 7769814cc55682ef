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
