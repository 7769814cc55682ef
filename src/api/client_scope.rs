//! Whose request this is, for idempotency: the client scope an `Idempotency-Key` belongs to.
//!
//! Idempotency keys are remembered per scope, so that one client cannot take another's key
//! first (a guessable `order-42`) and have the other's later request refused or answered with
//! someone else's result. The scope of a request is, in order:
//! 1. the [`ClientScope`] request extension, set by the client-authentication middleware for a
//!    token-authenticated request (`token:<name>`): a client cannot choose it;
//! 2. otherwise `client:` + the `X-Client-Id` header (1 to [`CLIENT_ID_LENGTH_MAX`] visible
//!    ASCII bytes; 400 if malformed): a label cooperating clients choose, when tokens are off;
//! 3. otherwise empty: the anonymous scope, shared by every client that sends neither, which is
//!    exactly what every client had before scopes existed.
//!
//! The `client:` prefix keeps a client id from posing as a token's scope. Every node computes
//! the scope the same way from the same request: a follower forwards the client's headers
//! (`Authorization`, `X-Client-Id`) unchanged, and the leader, which proposes, computes the
//! scope again from them, as it re-parses everything else (`api::request`).

/// The scope of an authenticated client, inserted as a request extension by the authentication
/// middleware (e.g. `ClientScope(format!("token:{name}"))`). Read by `api::request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientScope(pub String);

/// Longest accepted `X-Client-Id`, in bytes.
pub const CLIENT_ID_LENGTH_MAX: usize = 128;

/// The prefix of a scope named by `X-Client-Id`.
pub const CLIENT_ID_SCOPE_PREFIX: &str = "client:";
