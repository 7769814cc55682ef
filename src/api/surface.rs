//! Which routes a listener serves: its [`Surface`]. Its own file because both the router
//! (`api`) and the guards (`auth`) decide by it.

/// Which listener a router serves (`server`): with `client_addr` configured, Raft and node
/// traffic get a listener of their own so client load or abuse cannot starve heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// One listener for everything (no `client_addr`): every route, as the table in `auth`.
    Both,
    /// The peer listener (`addr`): Raft, admin, and client routes for callers holding the
    /// secret only (requests forwarded by other nodes, operators).
    Peer,
    /// The client listener (`client_addr`): client, admin and open routes; no Raft.
    Client,
}
