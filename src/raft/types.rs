//! The Raft type configuration, declared once: what the log carries, what the state machine
//! answers, and the aliases every other module names openraft's types by.
//!
//! A file of its own so that the parts of the Raft glue (log store, state machine, snapshots,
//! network) can all import these types without importing the module that ties the parts
//! together (`raft/mod.rs`, whose [`Raft`](super::Raft) alias names the state machine).

use crate::inventory::{Request, Response};

/// What the state machine answers for one log entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Applied {
    /// A blank (leader no-op) or membership entry: nothing for a client.
    Nothing,
    /// The answer to an inventory [`Request`].
    Command(Response),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let operation = self.command.operation();
        let keys = self.command.keys();
        match (keys.as_slice(), self.command.reservation_ids()) {
            (_, [id]) => write!(f, "{operation:?} of {id}"),
            ([], ids) if !ids.is_empty() => {
                write!(f, "{operation:?} of {} reservations", ids.len())
            }
            ([key], _) => write!(f, "{operation:?} on {key}"),
            (more, _) => write!(f, "{operation:?} of {} records", more.len()),
        }
    }
}

openraft::declare_raft_types!(
    /// stockraft's Raft types: inventory requests in the log, node ids are `u64`, nodes are
    /// addressed by their HTTP address.
    pub TypeConfig:
        D = Request,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = super::runtime::StockraftRuntime,
);

pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot =
    openraft::alias::SnapshotOf<TypeConfig, crate::storage::snapshots::SnapshotFile>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

#[cfg(test)]
mod tests {
    use crate::inventory::{Command, RecordKey, Request, ReservationId};

    fn request(command: Command) -> String {
        Request {
            command,
            proposed_at_ms: 0,
            idempotency: None,
        }
        .to_string()
    }

    #[test]
    fn a_request_names_its_record_or_its_reservations() {
        let key = RecordKey::new("s1", "a").unwrap();
        let id = ReservationId::new(7, 0).unwrap();
        let hold = Command::Hold {
            key,
            quantity: 1,
            expected_version: None,
            ttl_ms: 1_000,
        };
        assert_eq!(request(hold), "Hold on s1/a");
        assert_eq!(request(Command::Commit { id }), "Commit of rsv-7-0");
        assert_eq!(request(Command::Release { id }), "Release of rsv-7-0");
        let ids = vec![id, ReservationId::new(8, 0).unwrap()];
        assert_eq!(request(Command::Expire { ids }), "Expire of 2 reservations");
    }
}
