//! Backups: the whole state of a cluster at one committed log index, in one file that proves
//! its own integrity, and restoring one into a new cluster.
//!
//! Why not copy a data directory: a node's directory is its state *and* its Raft identity (its
//! vote, its incarnation, the cluster id), and a copy taken while it runs is torn. A backup is
//! instead the state machine exactly as a snapshot holds it (`raft::snapshot` builds snapshots
//! at one applied index while applies go on), so it is consistent by construction, and it
//! carries nothing of any node's identity.
//!
//! - [`format`]: the file (magic, version, cluster id, log index, term and time, the items, a
//!   SHA-256), written and read as streams in bounded memory, every corruption refused with a
//!   named reason;
//! - [`export`]: a backup made from a snapshot file, and what a backup holds ([`Contents`]);
//! - [`files`]: backup files written atomically (temporary name, sync, rename), read, pruned;
//! - [`restore`]: the data directories of a new cluster (new cluster id) holding the backup's
//!   state.
//!
//! Who takes backups is above this module: `GET /api/admin/backup` (`api::admin`) streams one
//! from the node asked, and the leader writes them on a schedule (`app::backups`). This module
//! does no networking and reads no clock.

pub mod export;
pub mod files;
pub mod format;
pub mod restore;

pub use export::{write_backup, Contents, Written};
pub use format::{BackupReader, BackupWriter, FormatError, Header};
