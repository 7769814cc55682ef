//! What can be asked of the inventory ([`Command`]), what goes into the Raft log ([`Request`]),
//! and what comes back ([`Response`]).
//!
//! These types are the one vocabulary shared by the state machine, the HTTP layer, the CLI, the
//! benchmarks and the simulation. They are serialised into the Raft log, so changing a variant
//! is a storage-format change: add variants at the end, never reorder.

use serde::{Deserialize, Serialize};

use super::packed::{Packed, UnpackError};
use super::record::{Record, RecordKey};
use super::reservation::{Reservation, ReservationId, ReservationStatus};

/// Longest accepted `Idempotency-Key`, in bytes (printable ASCII only).
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;
/// Longest client scope of an idempotency key, in bytes: `client:` and a 128-byte
/// `X-Client-Id`, or `token:` and a token's name, with room to spare.
pub const IDEMPOTENCY_SCOPE_LENGTH_MAX: usize = 512;
/// Most records one batch create may hold: one log entry, one apply, and a request body that
/// stays under the default 64 KiB limit with the longest ids.
pub const BATCH_RECORDS_MAX: usize = 500;
/// Most lines one [`Command::Batch`] may hold: one log entry (~1 MiB with the longest ids),
/// one apply with bounded work per line, one answer. TigerBeetle's batches hold 8,190 events;
/// 10,000 leaves room for a round number of lines per request (issue 33).
pub const BATCH_LINES_MAX: usize = 10_000;

/// A change to the inventory. A new kind of change adds a variant here (at the end: see the
/// module docs) and an arm in `apply::execute`; nothing else in the write path needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a record; refused if it already exists (never overwritten).
    Create {
        key: RecordKey,
        initial_quantity: i64,
    },
    /// Add `delta` (any sign; 0 only makes a new version) to the available quantity.
    Adjust {
        key: RecordKey,
        delta: i64,
        expected_version: Option<u64>,
    },
    /// Take `quantity` (>= 0; 0 only makes a new version) units out of the available quantity.
    Reserve {
        key: RecordKey,
        quantity: i64,
        expected_version: Option<u64>,
    },
    /// Create every record of `records` (1 to [`BATCH_RECORDS_MAX`], distinct keys), or none:
    /// refused as a whole if any exists. For loading a catalogue in one log entry.
    CreateBatch { records: Vec<NewRecord> },
    /// Hold `quantity` (>= 0) units of one record for `ttl_ms` (from
    /// [`super::HOLD_TTL_MS_MIN`] to [`super::HOLD_TTL_MS_MAX`]): checked as a `Reserve`, but the
    /// units move from the available quantity to `reserved`, and a held reservation of one line
    /// is created. Added for reservations (issue 31), like every variant below.
    Hold {
        key: RecordKey,
        quantity: i64,
        expected_version: Option<u64>,
        ttl_ms: u64,
    },
    /// Hold every line (1 to [`super::CART_LINES_MAX`], distinct keys, quantities >= 1) for
    /// `ttl_ms`, as one reservation, or none: refused as a whole, naming every line that cannot
    /// be held.
    Cart { lines: Vec<CartLine>, ttl_ms: u64 },
    /// The held units left: a held reservation, before its deadline, becomes committed.
    Commit { id: ReservationId },
    /// The held units come back: a held reservation, before its deadline, becomes released.
    Release { id: ReservationId },
    /// Proposed by the leader: each of `ids` (at most [`super::EXPIRE_IDS_MAX`]) that is held
    /// and due at this entry's log time becomes expired; any other is skipped.
    Expire { ids: Vec<ReservationId> },
    /// Proposed by a leader whose state has applied entries but has no event feed (a cluster
    /// upgraded from a version without one): the feed starts at this entry, numbering from 1,
    /// on every replica alike (`raft::events`). Changes no record; added for the feed (issue 32).
    StartFeed,
    /// Apply every line (1 to [`BATCH_LINES_MAX`]) in order, each seeing the earlier lines'
    /// effects (two lines may name one record), as one log entry. With
    /// [`ErrorPolicy::RejectEverything`] all lines apply or none does; with
    /// [`ErrorPolicy::RejectFailedLines`] each line applies or fails on its own. Added for the
    /// batch route (issue 33); see `inventory::batch`.
    Batch {
        lines: Vec<BatchLine>,
        policy: ErrorPolicy,
    },
    /// A [`Command::Batch`] as it is proposed: its lines packed into one byte string, encoded
    /// once where the request came in ([`PackedLines`]: an entry of thousands of lines is
    /// copied, not walked, on its way through the WAL and to the followers). Each state
    /// machine unpacks it into the `Batch` it applies ([`Request::unpacked`]); lines that do
    /// not unpack are refused as `Invalid`. The earlier proposals of the batch route were the
    /// `Batch` itself, which an older log may still hold: both apply alike.
    PackedBatch {
        lines: PackedLines,
        policy: ErrorPolicy,
    },
}

/// A batch's lines as [`Command::PackedBatch`] carries them (`inventory::packed`).
pub type PackedLines = Packed<BatchLine>;

/// What a [`Command::Batch`] does when some of its lines cannot apply. Stored in the log:
/// variants are only added at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorPolicy {
    /// All lines or none: one failing line refuses the batch ([`Rejection::BatchRefused`]).
    #[default]
    RejectEverything,
    /// Each line applies or fails on its own, in order.
    RejectFailedLines,
}

/// One line of a [`Command::Batch`]: a single-record command. Stored in the log: variants are
/// only added at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchLine {
    /// As [`Command::Create`].
    Create {
        key: RecordKey,
        initial_quantity: i64,
    },
    /// As [`Command::Adjust`].
    Adjust {
        key: RecordKey,
        delta: i64,
        expected_version: Option<u64>,
    },
    /// Make the available quantity `qty` (>= 0), whatever it was; the held units stay. Creates
    /// a missing record, unless `expected_version` is given: a missing record has no version,
    /// so that line fails `NotFound`.
    Set {
        key: RecordKey,
        qty: i64,
        expected_version: Option<u64>,
    },
    /// As [`Command::Reserve`], or with `ttl_ms` as [`Command::Hold`] (a held reservation of
    /// one line).
    Reserve {
        key: RecordKey,
        quantity: i64,
        expected_version: Option<u64>,
        ttl_ms: Option<u64>,
    },
}

impl BatchLine {
    /// Whether the line is a hold (a reserve with a ttl).
    pub fn is_hold(&self) -> bool {
        matches!(
            self,
            BatchLine::Reserve {
                ttl_ms: Some(_),
                ..
            }
        )
    }

    /// The record the line names.
    pub fn key(&self) -> &RecordKey {
        match self {
            BatchLine::Create { key, .. }
            | BatchLine::Adjust { key, .. }
            | BatchLine::Set { key, .. }
            | BatchLine::Reserve { key, .. } => key,
        }
    }
}

/// The answer of an applied [`Command::Batch`]: one result per line, in the batch's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResults {
    pub lines: Vec<LineResult>,
}

impl BatchResults {
    /// How many lines applied.
    pub fn applied(&self) -> usize {
        self.lines.iter().filter(|line| line.is_ok()).count()
    }

    /// How many lines failed (only ever nonzero with [`ErrorPolicy::RejectFailedLines`]).
    pub fn failed(&self) -> usize {
        self.lines.len() - self.applied()
    }
}

/// What became of one line of a batch. Stored in answers: variants are only added at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineResult {
    /// The line applied: its record as this line left it, and the reservation a hold line
    /// created.
    Ok {
        record: Record,
        reservation_id: Option<ReservationId>,
    },
    /// The line failed and changed nothing (with [`ErrorPolicy::RejectFailedLines`]).
    Failed(Rejection),
}

impl LineResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, LineResult::Ok { .. })
    }
}

/// One line of a [`Command::Cart`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub key: RecordKey,
    /// Units to hold: >= 1.
    pub quantity: i64,
    /// Refuse the line unless the record is at this version.
    pub expected_version: Option<u64>,
}

/// One record of a [`Command::CreateBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecord {
    pub key: RecordKey,
    pub initial_quantity: i64,
}

impl Command {
    /// The batch of `lines` as it is proposed: packed ([`Command::PackedBatch`]).
    pub fn packed_batch(lines: &[BatchLine], policy: ErrorPolicy) -> Command {
        Command::PackedBatch {
            lines: PackedLines::pack(lines),
            policy,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            Command::Create { .. } => Operation::Create,
            Command::Adjust { .. } => Operation::Adjust,
            Command::Reserve { .. } => Operation::Reserve,
            Command::CreateBatch { .. } => Operation::CreateBatch,
            Command::Hold { .. } => Operation::Hold,
            Command::Cart { .. } => Operation::Cart,
            Command::Commit { .. } => Operation::Commit,
            Command::Release { .. } => Operation::Release,
            Command::Expire { .. } => Operation::Expire,
            Command::StartFeed => Operation::StartFeed,
            Command::Batch { .. } | Command::PackedBatch { .. } => Operation::Batch,
        }
    }

    /// Every record this command names, in the command's order. A commit, release or expiry
    /// names reservations instead ([`Self::reservation_ids`]): the records it touches are the
    /// lines of those reservations, known only from the state.
    pub fn keys(&self) -> Vec<&RecordKey> {
        match self {
            Command::Create { key, .. }
            | Command::Adjust { key, .. }
            | Command::Reserve { key, .. }
            | Command::Hold { key, .. } => vec![key],
            Command::CreateBatch { records } => records.iter().map(|r| &r.key).collect(),
            Command::Cart { lines, .. } => lines.iter().map(|line| &line.key).collect(),
            // A record named by several lines is named once per line.
            Command::Batch { lines, .. } => lines.iter().map(BatchLine::key).collect(),
            // Unpacked first (`Request::unpacked`): undecodable lines name nothing.
            Command::PackedBatch { .. }
            | Command::Commit { .. }
            | Command::Release { .. }
            | Command::Expire { .. }
            | Command::StartFeed => Vec::new(),
        }
    }

    /// How many lines the command carries (records or reservations named), at least one: what
    /// its size, and its answer's, grow with (a forwarded batch of commands is bounded by it).
    pub fn line_count(&self) -> usize {
        let lines = match self {
            Command::CreateBatch { records } => records.len(),
            Command::Cart { lines, .. } => lines.len(),
            Command::Batch { lines, .. } => lines.len(),
            Command::PackedBatch { lines, .. } => lines.len(),
            Command::Expire { ids } => ids.len(),
            Command::Create { .. }
            | Command::Adjust { .. }
            | Command::Reserve { .. }
            | Command::Hold { .. }
            | Command::Commit { .. }
            | Command::Release { .. }
            | Command::StartFeed => 1,
        };
        lines.max(1)
    }

    /// Every existing reservation this command names, in the command's order: what a state
    /// machine loads (with the records of their lines) before applying it.
    pub fn reservation_ids(&self) -> &[ReservationId] {
        match self {
            Command::Commit { id } | Command::Release { id } => std::slice::from_ref(id),
            Command::Expire { ids } => ids,
            Command::Create { .. }
            | Command::Adjust { .. }
            | Command::Reserve { .. }
            | Command::CreateBatch { .. }
            | Command::Hold { .. }
            | Command::Cart { .. }
            | Command::StartFeed
            | Command::Batch { .. }
            | Command::PackedBatch { .. } => &[],
        }
    }

    /// Canonical bytes identifying this exact request, for idempotency-key reuse detection.
    /// The whole command is kept (not a hash): commands are small and equality is then exact.
    /// Except a batch: up to [`BATCH_LINES_MAX`] lines encode to ~1 MiB, kept in every
    /// idempotency entry that remembers it, so a batch is identified by the SHA-256 of its
    /// encoding, behind a prefix no whole encoding starts with (a command's first byte is its
    /// variant index, below [`FINGERPRINT_DIGEST_TAG`]). A collision is as likely as one of
    /// SHA-256's.
    ///
    /// A packed batch has the fingerprint of the batch it unpacks to, computed from its bytes
    /// (they are the lines' encoding): a retry is recognised whichever form either took.
    pub fn fingerprint(&self) -> Vec<u8> {
        use sha2::Digest;
        let encode = |command: &Command| {
            bincode::serde::encode_to_vec(command, bincode::config::standard())
                .expect("encoding a command into memory cannot fail")
        };
        let digest = match self {
            Command::Batch { .. } => sha2::Sha256::digest(encode(self)),
            Command::PackedBatch { lines, policy } => {
                // The batch of no line: its variant index, a count of 0 (one byte each: both
                // are below 251) and the policy. Its lines' place holds the packed bytes.
                let empty = encode(&Command::Batch {
                    lines: Vec::new(),
                    policy: *policy,
                });
                let mut hasher = sha2::Sha256::new();
                hasher.update(&empty[..1]);
                hasher.update(lines.bytes());
                hasher.update(&empty[2..]);
                hasher.finalize()
            }
            _ => return encode(self),
        };
        let mut fingerprint = vec![FINGERPRINT_DIGEST_TAG];
        fingerprint.extend_from_slice(&digest);
        fingerprint
    }
}

/// The first byte of a hashed fingerprint ([`Command::fingerprint`]): no command's encoding
/// starts with it, as bincode writes a variant index below 251 as itself.
const FINGERPRINT_DIGEST_TAG: u8 = 0xFF;

/// The kind of a command, kept in the response so the HTTP layer can pick the status code
/// (201 for create/reserve, 200 for adjust) without re-reading the request. Stored in answers:
/// variants are only added at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    Create,
    Adjust,
    Reserve,
    CreateBatch,
    Hold,
    Cart,
    Commit,
    Release,
    Expire,
    StartFeed,
    Batch,
}

/// An idempotency key, the client scope it belongs to, and how long it is remembered, in log
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Whose key this is, computed by the HTTP layer (`api::request`): `token:<name>` for a
    /// token-authenticated client, `client:<X-Client-Id>` otherwise, or empty (anonymous: the
    /// one shared scope every client had before scopes existed). The same key under two scopes
    /// is two keys, so one client cannot claim, or replay, another's.
    pub scope: String,
    pub key: String,
    /// Time to live, stamped by the leader from its configuration so that every replica expires
    /// the key at the same log time.
    pub ttl_ms: u64,
}

impl IdempotencyKey {
    /// The identity the key is remembered under.
    pub fn id(&self) -> IdempotencyId {
        IdempotencyId {
            scope: self.scope.clone(),
            key: self.key.clone(),
        }
    }

    /// Re-checks what the HTTP layer checked (the key is 1 to [`IDEMPOTENCY_KEY_LENGTH_MAX`]
    /// printable ASCII characters, the scope at most [`IDEMPOTENCY_SCOPE_LENGTH_MAX`] bytes), so
    /// that a malformed key in the log is refused identically everywhere rather than stored. The
    /// storage key layout relies on it: a key never starts with a control byte.
    pub fn check(&self) -> Result<(), String> {
        let printable = self.key.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if self.key.is_empty() || self.key.len() > IDEMPOTENCY_KEY_LENGTH_MAX || !printable {
            return Err(format!(
                "an idempotency key is 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} printable ASCII characters"
            ));
        }
        if self.scope.len() > IDEMPOTENCY_SCOPE_LENGTH_MAX {
            return Err(format!(
                "an idempotency scope is at most {IDEMPOTENCY_SCOPE_LENGTH_MAX} bytes"
            ));
        }
        Ok(())
    }
}

/// What an idempotency key is remembered under: the key within its client scope. Ordered (scope
/// first) so that maps of them iterate the same way everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdempotencyId {
    /// Empty for the anonymous scope.
    pub scope: String,
    pub key: String,
}

/// One entry of the Raft log's application payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    /// The proposing leader's wall clock, ms since the Unix epoch. The state machine never reads
    /// a clock; it derives the entry's log time from this stamp and the previous log time
    /// ([`super::next_log_time`]): never backwards. The leader stamps at most
    /// [`super::LOG_TIME_STEP_MAX_MS`] past the log time it has applied
    /// ([`super::proposal_stamp`]).
    pub proposed_at_ms: u64,
    /// Encoded so that entries written before scopes existed still decode (as the anonymous
    /// scope), and anonymous keys are written exactly as they were: see `idempotency_wire`.
    #[serde(with = "idempotency_wire")]
    pub idempotency: Option<IdempotencyKey>,
}

impl Request {
    /// The request as a state machine applies it: a packed batch unpacked into the
    /// [`Command::Batch`] of its lines (decoded once, here). Anything else, and packed lines
    /// that do not unpack (apply refuses them as `Invalid`), is the request itself.
    pub fn unpacked(&self) -> std::borrow::Cow<'_, Request> {
        use std::borrow::Cow;
        let Command::PackedBatch { lines, policy } = &self.command else {
            return Cow::Borrowed(self);
        };
        match unpack_lines(lines) {
            Ok(lines) => Cow::Owned(Request {
                command: Command::Batch {
                    lines,
                    policy: *policy,
                },
                proposed_at_ms: self.proposed_at_ms,
                idempotency: self.idempotency.clone(),
            }),
            Err(_) => Cow::Borrowed(self),
        }
    }
}

/// A packed batch's lines: at most [`BATCH_LINES_MAX`].
pub fn unpack_lines(lines: &PackedLines) -> Result<Vec<BatchLine>, UnpackError> {
    lines.unpack(BATCH_LINES_MAX)
}

/// The log encoding of [`Request::idempotency`].
///
/// Before scopes, the field was an `Option<{ key, ttl_ms }>`, which bincode writes as one tag
/// byte (0 none, 1 some) and then the key. It is now an enum whose variant index takes the
/// place of that tag: bincode writes a variant index below 251 as the same single byte, so
/// `Absent` and `Anonymous` are byte for byte the old `None` and `Some`, and `Scoped` (index
/// 2) is new. Old entries therefore decode unchanged as anonymous keys, anonymous keys are still
/// written in the old bytes (a node not yet upgraded can read them), and only a scoped key
/// needs the new code. Variants are only ever added at the end.
mod idempotency_wire {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::IdempotencyKey;

    #[derive(Serialize)]
    enum Wire<'a> {
        Absent,
        Anonymous {
            key: &'a str,
            ttl_ms: u64,
        },
        Scoped {
            scope: &'a str,
            key: &'a str,
            ttl_ms: u64,
        },
    }

    #[derive(Deserialize)]
    enum OwnedWire {
        Absent,
        Anonymous {
            key: String,
            ttl_ms: u64,
        },
        Scoped {
            scope: String,
            key: String,
            ttl_ms: u64,
        },
    }

    pub fn serialize<S: Serializer>(
        value: &Option<IdempotencyKey>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let wire = match value {
            None => Wire::Absent,
            Some(key) if key.scope.is_empty() => Wire::Anonymous {
                key: &key.key,
                ttl_ms: key.ttl_ms,
            },
            Some(key) => Wire::Scoped {
                scope: &key.scope,
                key: &key.key,
                ttl_ms: key.ttl_ms,
            },
        };
        wire.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<IdempotencyKey>, D::Error> {
        Ok(match OwnedWire::deserialize(deserializer)? {
            OwnedWire::Absent => None,
            OwnedWire::Anonymous { key, ttl_ms } => Some(IdempotencyKey {
                scope: String::new(),
                key,
                ttl_ms,
            }),
            OwnedWire::Scoped { scope, key, ttl_ms } => Some(IdempotencyKey { scope, key, ttl_ms }),
        })
    }
}

/// A deterministic refusal: replicated, remembered for idempotent replay, shown to the client.
/// Stored in answers: variants are only added at the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    #[error("invalid command: {message}")]
    Invalid { message: String },
    #[error("inventory record {key} not found")]
    NotFound { key: RecordKey },
    #[error("inventory record {key} already exists (version {version})")]
    AlreadyExists { key: RecordKey, version: u64 },
    #[error("version mismatch: expected {expected}, current {actual}")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error("insufficient stock: requested {requested}, available {available}")]
    InsufficientStock { requested: i64, available: i64 },
    #[error("quantity out of range: the result would not fit in a 64-bit integer")]
    Overflow,
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyKeyReused { key: String },
    /// Added for reservations (issue 31), like every variant below.
    #[error("reservation {id} not found")]
    ReservationNotFound { id: ReservationId },
    /// The reservation already ended otherwise (committed, or released): it is no longer held.
    #[error("reservation {id} is {status}, no longer held")]
    ReservationNotHeld {
        id: ReservationId,
        status: ReservationStatus,
    },
    /// The reservation's deadline passed (at this entry's log time): it expired, or will when
    /// the expiry entry that follows applies.
    #[error("reservation {id} expired")]
    ReservationExpired { id: ReservationId },
    /// Some lines of a cart cannot be held, so none is: every failing line, in the cart's order.
    #[error("cart refused: {} of its lines cannot be held", .lines.len())]
    CartRefused { lines: Vec<LineRefusal> },
    /// As many reservations are held as the store keeps ([`super::HELD_RESERVATIONS_MAX`]).
    #[error("{max} reservations are held, the most the store keeps: commit or release some")]
    HoldLimitReached { max: u64 },
    /// Some lines of a batch (with [`ErrorPolicy::RejectEverything`]) cannot apply, so none
    /// does: every failing line, in the batch's order, each evaluated as if the lines before it
    /// that can apply had. Added for the batch route (issue 33).
    #[error("batch refused: {} of its lines cannot apply", .lines.len())]
    BatchRefused { lines: Vec<LineRefusal> },
}

/// Why one line of a cart cannot be held, or one line of a batch cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRefusal {
    /// The line's position in the cart (or batch), from 0.
    pub index: usize,
    pub key: RecordKey,
    /// For a cart: `NotFound`, `VersionMismatch`, `InsufficientStock` or `Overflow`; for a
    /// batch, also `Invalid`, `AlreadyExists` and `HoldLimitReached`.
    pub rejection: Rejection,
}

/// The outcome of one command.
///
/// Stored in answers, so its encoding is a storage format. It used to be `Result<Record,
/// Rejection>`, which serde encodes as an enum with `Ok` (index 0) and `Err` (index 1): the
/// first two variants keep those names and indexes, so old answers decode unchanged (and JSON
/// stays `{"Ok": ..}` / `{"Err": ..}`). Variants are only added at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The record as it is after the change (for a batch, the last one created: all were).
    Ok(Record),
    /// Why nothing changed.
    Err(Rejection),
    /// A [`Command::Hold`] held: the record after the change, and the reservation created.
    Held {
        record: Record,
        reservation_id: ReservationId,
    },
    /// A cart held, or a reservation committed or released (or already so): the reservation
    /// as it is now.
    Reservation(Reservation),
    /// An expiry entry applied: how many reservations it expired (those it skipped are not
    /// counted).
    Expired { count: u64 },
    /// A [`Command::StartFeed`] applied (the state machine started the feed, or it had one).
    FeedStarted,
    /// A [`Command::Batch`] applied: every line's result (all `Ok` with
    /// [`ErrorPolicy::RejectEverything`]).
    Batch(BatchResults),
}

impl CommandResult {
    /// Whether the command was applied (or was already so): anything but a rejection.
    pub fn is_ok(&self) -> bool {
        !self.is_err()
    }

    /// Whether the command was refused.
    pub fn is_err(&self) -> bool {
        matches!(self, CommandResult::Err(_))
    }

    /// Why nothing changed, if it was refused.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            CommandResult::Err(rejection) => Some(rejection),
            _ => None,
        }
    }

    /// The record the answer shows: of `Ok` and `Held`.
    pub fn record(&self) -> Option<&Record> {
        match self {
            CommandResult::Ok(record) | CommandResult::Held { record, .. } => Some(record),
            _ => None,
        }
    }

    /// The per-line results of an applied batch.
    pub fn batch(&self) -> Option<&BatchResults> {
        match self {
            CommandResult::Batch(results) => Some(results),
            _ => None,
        }
    }

    /// The reservation the answer shows in full: of `Reservation`.
    pub fn reservation(&self) -> Option<&Reservation> {
        match self {
            CommandResult::Reservation(reservation) => Some(reservation),
            _ => None,
        }
    }

    /// The reservation the answer names: of `Held` and `Reservation`.
    pub fn reservation_id(&self) -> Option<ReservationId> {
        match self {
            CommandResult::Held { reservation_id, .. } => Some(*reservation_id),
            CommandResult::Reservation(reservation) => Some(reservation.id),
            _ => None,
        }
    }
}

impl From<Result<Record, Rejection>> for CommandResult {
    fn from(result: Result<Record, Rejection>) -> Self {
        match result {
            Ok(record) => CommandResult::Ok(record),
            Err(rejection) => CommandResult::Err(rejection),
        }
    }
}

/// What the state machine answers for one applied [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub operation: Operation,
    pub result: CommandResult,
    /// True when this answer is the remembered answer of an earlier request with the same
    /// idempotency key; nothing was applied this time.
    pub replayed: bool,
    /// Log index at which the answer was first produced.
    pub log_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Request` as it was before scopes, field for field: what existing logs hold.
    #[derive(Serialize)]
    struct UnscopedRequest {
        command: Command,
        proposed_at_ms: u64,
        idempotency: Option<UnscopedKey>,
    }

    #[derive(Serialize)]
    struct UnscopedKey {
        key: String,
        ttl_ms: u64,
    }

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    fn decode(bytes: &[u8]) -> Request {
        let (request, read) =
            bincode::serde::decode_from_slice(bytes, bincode::config::standard()).unwrap();
        assert_eq!(read, bytes.len(), "every byte is read");
        request
    }

    fn create() -> Command {
        Command::Create {
            key: RecordKey::new("s1", "a").unwrap(),
            initial_quantity: 3,
        }
    }

    #[test]
    fn entries_logged_before_scopes_decode_as_anonymous_keys() {
        for idempotency in [
            None,
            Some(UnscopedKey {
                key: "order-42".into(),
                ttl_ms: 86_400_000,
            }),
        ] {
            let expected = idempotency.as_ref().map(|old| IdempotencyKey {
                scope: String::new(),
                key: old.key.clone(),
                ttl_ms: old.ttl_ms,
            });
            let old = encode(&UnscopedRequest {
                command: create(),
                proposed_at_ms: 7,
                idempotency,
            });
            let request = decode(&old);
            assert_eq!(request.idempotency, expected);
            assert_eq!(request.proposed_at_ms, 7);
            // And an anonymous key is still written in exactly the old bytes.
            assert_eq!(encode(&request), old);
        }
    }

    /// `Response` as it was before reservations: `result` a plain `Result`.
    #[derive(Serialize)]
    struct ResultResponse {
        operation: Operation,
        result: Result<Record, Rejection>,
        replayed: bool,
        log_index: u64,
    }

    fn decode_response(bytes: &[u8]) -> Response {
        let (response, read) =
            bincode::serde::decode_from_slice(bytes, bincode::config::standard()).unwrap();
        assert_eq!(read, bytes.len(), "every byte is read");
        response
    }

    #[test]
    fn answers_stored_before_reservations_decode_and_encode_to_the_same_bytes() {
        let record = Record {
            key: RecordKey::new("s1", "a").unwrap(),
            quantity: 3,
            reserved: 0,
            version: 2,
            created_at_ms: 5,
            updated_at_ms: 6,
        };
        let rejection = Rejection::InsufficientStock {
            requested: 9,
            available: 3,
        };
        for (old, expected) in [
            (Ok(record.clone()), CommandResult::Ok(record)),
            (Err(rejection.clone()), CommandResult::Err(rejection)),
        ] {
            let old = encode(&ResultResponse {
                operation: Operation::Reserve,
                result: old,
                replayed: true,
                log_index: 12,
            });
            let response = decode_response(&old);
            assert_eq!(response.result, expected);
            assert_eq!(encode(&response), old);
        }
    }

    #[test]
    fn answers_keep_their_json_shape() {
        let refused = CommandResult::Err(Rejection::Overflow);
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"Err":"Overflow"}"#
        );
        let json = serde_json::to_string(&Err::<Record, _>(Rejection::Overflow)).unwrap();
        assert_eq!(
            serde_json::from_str::<CommandResult>(&json).unwrap(),
            refused
        );
        let expired = CommandResult::Expired { count: 2 };
        let json = serde_json::to_string(&expired).unwrap();
        assert_eq!(
            serde_json::from_str::<CommandResult>(&json).unwrap(),
            expired
        );
    }

    #[test]
    fn new_commands_and_answers_round_trip_through_the_log_encoding() {
        let key = RecordKey::new("s1", "a").unwrap();
        let id = ReservationId::new(40, 0).unwrap();
        let commands = [
            Command::Hold {
                key: key.clone(),
                quantity: 2,
                expected_version: Some(3),
                ttl_ms: 60_000,
            },
            Command::Cart {
                lines: vec![CartLine {
                    key: key.clone(),
                    quantity: 1,
                    expected_version: None,
                }],
                ttl_ms: 900_000,
            },
            Command::Commit { id },
            Command::Release { id },
            Command::Expire { ids: vec![id] },
        ];
        for command in commands {
            let request = Request {
                command,
                proposed_at_ms: 7,
                idempotency: None,
            };
            assert_eq!(decode(&encode(&request)), request);
        }
        let refusal = Rejection::CartRefused {
            lines: vec![LineRefusal {
                index: 0,
                key,
                rejection: Rejection::ReservationNotHeld {
                    id,
                    status: ReservationStatus::Released,
                },
            }],
        };
        let response = Response {
            operation: Operation::Cart,
            result: CommandResult::Err(refusal),
            replayed: false,
            log_index: 40,
        };
        assert_eq!(decode_response(&encode(&response)), response);
    }

    fn batch_of(lines: Vec<BatchLine>) -> Command {
        Command::Batch {
            lines,
            policy: ErrorPolicy::RejectFailedLines,
        }
    }

    #[test]
    fn batches_and_their_answers_round_trip_through_the_log_encoding() {
        let key = RecordKey::new("s1", "a").unwrap();
        let lines = vec![
            BatchLine::Create {
                key: key.clone(),
                initial_quantity: 1,
            },
            BatchLine::Adjust {
                key: key.clone(),
                delta: -1,
                expected_version: Some(1),
            },
            BatchLine::Set {
                key: key.clone(),
                qty: 4,
                expected_version: None,
            },
            BatchLine::Reserve {
                key: key.clone(),
                quantity: 2,
                expected_version: None,
                ttl_ms: Some(60_000),
            },
        ];
        let request = Request {
            command: batch_of(lines),
            proposed_at_ms: 7,
            idempotency: None,
        };
        assert_eq!(decode(&encode(&request)), request);
        let record = Record {
            key: key.clone(),
            quantity: 3,
            reserved: 2,
            version: 4,
            created_at_ms: 5,
            updated_at_ms: 6,
        };
        for result in [
            CommandResult::Batch(BatchResults {
                lines: vec![
                    LineResult::Ok {
                        record,
                        reservation_id: ReservationId::new(9, 0),
                    },
                    LineResult::Failed(Rejection::Overflow),
                ],
            }),
            CommandResult::Err(Rejection::BatchRefused {
                lines: vec![LineRefusal {
                    index: 3,
                    key: key.clone(),
                    rejection: Rejection::NotFound { key },
                }],
            }),
        ] {
            let response = Response {
                operation: Operation::Batch,
                result,
                replayed: false,
                log_index: 9,
            };
            assert_eq!(decode_response(&encode(&response)), response);
        }
    }

    #[test]
    fn error_policies_have_their_wire_names() {
        for (policy, name) in [
            (ErrorPolicy::RejectEverything, "\"rejectEverything\""),
            (ErrorPolicy::RejectFailedLines, "\"rejectFailedLines\""),
        ] {
            assert_eq!(serde_json::to_string(&policy).unwrap(), name);
            assert_eq!(serde_json::from_str::<ErrorPolicy>(name).unwrap(), policy);
        }
        assert_eq!(ErrorPolicy::default(), ErrorPolicy::RejectEverything);
    }

    #[test]
    fn a_batch_is_fingerprinted_by_a_digest_that_tells_batches_apart() {
        let line = |delta| BatchLine::Adjust {
            key: RecordKey::new("s1", "a").unwrap(),
            delta,
            expected_version: None,
        };
        let one = batch_of(vec![line(1), line(2)]);
        let fingerprint = one.fingerprint();
        assert_eq!(fingerprint.len(), 33);
        assert_eq!(fingerprint[0], FINGERPRINT_DIGEST_TAG);
        assert_eq!(fingerprint, one.clone().fingerprint());
        for other in [
            batch_of(vec![line(2), line(1)]),
            batch_of(vec![line(1)]),
            Command::Batch {
                lines: vec![line(1), line(2)],
                policy: ErrorPolicy::RejectEverything,
            },
        ] {
            assert_ne!(other.fingerprint(), fingerprint, "{other:?}");
        }
        // Any other command keeps its whole bytes, which never start with the tag.
        assert_eq!(create().fingerprint(), encode(&create()));
        assert_ne!(create().fingerprint()[0], FINGERPRINT_DIGEST_TAG);
    }

    #[test]
    fn a_scoped_key_round_trips_through_the_log_encoding() {
        let request = Request {
            command: create(),
            proposed_at_ms: 7,
            idempotency: Some(IdempotencyKey {
                scope: "client:shop-1".into(),
                key: "order-42".into(),
                ttl_ms: 1_000,
            }),
        };
        assert_eq!(decode(&encode(&request)), request);
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
    }
}
