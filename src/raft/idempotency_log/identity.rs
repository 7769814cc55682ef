//! The bytes of an idempotency identity, as the log stores them (and as formats 2 and 3 put
//! them in their keys).
//!
//! An identity names a key within its client scope ([`IdempotencyId`]):
//! - anonymous scope: the key's bytes, exactly as before scopes existed (so data directories
//!   written then read the same), and a key is printable ASCII, never `0x00` first
//!   (`IdempotencyKey::check`);
//! - any other scope: `0x00`, the scope's length (u32 big-endian), the scope, then the key.
//!
//! The leading zero keeps the two forms apart, and the length prefix keeps scope and key apart
//! (scope `a` + key `b:c` is not scope `a:b` + key `c`): distinct identities, distinct bytes.

use crate::inventory::IdempotencyId;

/// Marks a scoped identity (see the module docs).
const SCOPED: u8 = 0;

/// Appends the bytes of `id` to `bytes` (see the module docs).
pub(super) fn write_identity(id: &IdempotencyId, bytes: &mut Vec<u8>) {
    if !id.scope.is_empty() {
        let scope_length =
            u32::try_from(id.scope.len()).expect("a scope is far shorter than 4 GiB");
        bytes.push(SCOPED);
        bytes.extend_from_slice(&scope_length.to_be_bytes());
        bytes.extend_from_slice(id.scope.as_bytes());
    }
    bytes.extend_from_slice(id.key.as_bytes());
}

/// The bytes of an identity (see the module docs).
pub fn identity_bytes(id: &IdempotencyId) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_identity(id, &mut bytes);
    bytes
}

/// Reads back what [`identity_bytes`] wrote.
pub fn parse_identity(bytes: &[u8]) -> Option<IdempotencyId> {
    let (scope, key) = match bytes.split_first() {
        Some((&SCOPED, rest)) => {
            let (length, rest) = rest.split_first_chunk::<4>()?;
            let length = usize::try_from(u32::from_be_bytes(*length)).ok()?;
            if rest.len() < length {
                return None;
            }
            rest.split_at(length)
        }
        _ => (&[][..], bytes),
    };
    Some(IdempotencyId {
        scope: String::from_utf8(scope.to_vec()).ok()?,
        key: String::from_utf8(key.to_vec()).ok()?,
    })
}
