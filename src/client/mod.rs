//! The client side of stockraft's HTTP API: the one vocabulary of the wire.
//!
//! [`wire`] holds the request bodies, as the server deserializes them (with the seed's input
//! rules) and as clients serialize them. Every piece of stockraft that speaks the client API
//! (handlers, CLI, benchmarks, simulation, tests) uses these types, so a field name changes in
//! one place.

pub mod wire;
