//! Inventory records and their identity.

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: RecordKey,
    /// Units available. Never negative.
    pub quantity: i64,
    pub version: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
