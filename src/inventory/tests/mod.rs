//! Tests of the inventory domain that cross its files.
//!
//! They live here, beside the files they exercise, because they need several of them at once
//! (`apply` with the reservation lifecycle, stored records with stored answers); kept inside one
//! of those files, a test module would import its own importers and draw a circle.

mod events;
mod reservations;
mod stored_bytes;
