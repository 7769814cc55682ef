//! A batch: up to [`BATCH_LINES_MAX`] single-record commands applied as one log entry
//! ([`Command::Batch`](super::Command::Batch)).
//!
//! Why a command of its own rather than many entries: an import, a recount or a flash sale sends
//! thousands of lines at once, and N single requests cost N parses, N proposals and N fsync
//! shares; a batch costs one of each and applies in one pass with bounded work per line (a
//! lookup and an insert in an ordered map: nothing is scanned). It is also the only way to get
//! "all or none" across many records.
//!
//! ## Meaning
//! - Lines apply **in order**, each against the state as the lines before it left it (an
//!   [`Overlay`] of the view: the records the batch changed so far, and the holds it made). Two
//!   lines on one record apply one after the other, each a change of its own (a new version
//!   each), exactly as two single commands in two entries would.
//! - A line means what the single command means: a create, adjust or reserve line runs the
//!   same code (`one_record`), a reserve line with a ttl runs the same hold as
//!   [`Command::Hold`](super::Command::Hold) (`lifecycle::hold_as`), numbering the batch's holds
//!   0, 1, 2, ... in the entry's reservation ids. A set line (the batch's own) makes the
//!   available quantity a given value; it creates a missing record, unless it names an
//!   expected version (a missing record has none: `NotFound`).
//! - [`ErrorPolicy::RejectEverything`]: if any line fails, nothing changes and the answer is
//!   [`Rejection::BatchRefused`] naming **every** failing line, each evaluated as if the lines
//!   before it that can apply had (so the refusal tells a client all it must fix, not just the
//!   first). [`ErrorPolicy::RejectFailedLines`]: failing lines change nothing, the others apply;
//!   the answer lists each line's result.
//! - A batch of no line or more than [`BATCH_LINES_MAX`], or of more than
//!   [`BATCH_HOLD_LINES_MAX`] holds, is `Invalid` as a whole: the HTTP layer refuses it first,
//!   but apply never trusts what reaches the log.
//!
//! ## Events
//! Each applied line yields the events its single command would (created, adjusted, reserved,
//! held), with the record as that line left it; a set line is a creation of a missing record,
//! otherwise an adjustment by the difference. A refused batch, or a failed line, yields none.
//!
//! ## Remembered answers
//! An idempotency key covers the whole batch (`apply`): a retry replays every line's result.
//! What is kept is compact ([`stored_answer`]): every line's record key is left out (it is the
//! line's own, and a retry with the same fingerprint carries the same lines; [`replayed_answer`]
//! puts them back), and the fingerprint is a digest (`Command::fingerprint`). A stored batch
//! answer is then at most [`BATCH_STORED_LINE_BYTES_MAX`] bytes a line: under 600 KB for the largest
//! batch (asserted by a test). The idempotency log bounds how many entries it keeps, not their
//! bytes: keyed batches of 10,000 lines make its entries up to ~5,000 times a single write's.

use super::change::{changed, existing, invalid, Change};
use super::command::{
    BatchLine, BatchResults, CommandResult, ErrorPolicy, IdempotencyId, LineRefusal, LineResult,
    Rejection, Response, BATCH_LINES_MAX,
};
use super::event::{events_of, Changed, Event, EventKind};
use super::lifecycle;
use super::one_record;
use super::record::{Record, RecordKey};
use super::reservation::{Reservation, ReservationId, CART_LINES_MAX};
use super::state::{IdempotencyEntry, KeyMap, StateView};

/// Most bytes a stored batch answer takes per line, in the log's encoding (bincode, varints),
/// keys left out: a record of five integers at their largest and a reservation id (~40), or a
/// failed line's rejection, whose message is at most [`LINE_MESSAGE_BYTES_MAX`] bytes. The
/// idempotency log's chunks are sized from it (`raft::idempotency_log`).
pub const BATCH_STORED_LINE_BYTES_MAX: usize = 72;

/// Most reserve lines with a ttl (holds) one batch may hold. Each creates a reservation, and
/// the reservation store keeps those of 32 consecutive entries in one value, rewritten whenever
/// one of them changes: it is sized for an entry creating one reservation of up to
/// [`CART_LINES_MAX`] lines (~8 KB). As many one-line holds weigh about as much (~11 KB), where
/// 10,000 would make that value ~30 MB. A batch of more holds is `Invalid` as a whole.
pub const BATCH_HOLD_LINES_MAX: usize = CART_LINES_MAX;

/// Longest message of a line's `Invalid` rejection, in bytes: today's are all shorter; the
/// cap keeps [`BATCH_STORED_LINE_BYTES_MAX`] true whatever a future message says.
const LINE_MESSAGE_BYTES_MAX: usize = 64;

/// Where the entry stands: its index (reservation ids) and log time, and the request's
/// idempotency key (events carry it).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub log_index: u64,
    pub now_ms: u64,
    pub idempotency_key: Option<&'a str>,
}

/// Applies a batch: its answer and writes, and the events of the lines that applied.
pub fn execute(
    view: &impl StateView,
    lines: &[BatchLine],
    policy: ErrorPolicy,
    entry: Entry<'_>,
) -> (Change, Vec<Event>) {
    if lines.is_empty() || lines.len() > BATCH_LINES_MAX {
        let message = format!(
            "a batch holds 1 to {BATCH_LINES_MAX} lines, got {}",
            lines.len()
        );
        return refused(invalid(&message));
    }
    let holds = lines.iter().filter(|line| line.is_hold()).count();
    if holds > BATCH_HOLD_LINES_MAX {
        let message =
            format!("a batch holds at most {BATCH_HOLD_LINES_MAX} lines with a ttl, got {holds}");
        return refused(invalid(&message));
    }
    let mut overlay = Overlay::new(view, lines.len());
    let mut results = Vec::with_capacity(lines.len());
    let mut refusals = Vec::new();
    let mut applied = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        match apply_line(&overlay, line, entry).map_err(bounded) {
            Ok(line) => {
                overlay.write(&line.record);
                overlay.holds += u64::from(line.reservation.is_some());
                results.push(LineResult::Ok {
                    record: line.record.clone(),
                    reservation_id: line.reservation.as_ref().map(|r| r.id),
                });
                applied.push(line);
            }
            Err(rejection) => {
                refusals.push(LineRefusal {
                    index,
                    key: line.key().clone(),
                    rejection: rejection.clone(),
                });
                results.push(LineResult::Failed(rejection));
            }
        }
    }
    assert_eq!(results.len(), lines.len(), "one result per line");
    if policy == ErrorPolicy::RejectEverything && !refusals.is_empty() {
        return refused(Rejection::BatchRefused { lines: refusals });
    }
    let events = applied.iter().flat_map(|line| line.events(entry)).collect();
    let reservations = applied.into_iter().filter_map(|line| line.reservation);
    let change = Change {
        result: CommandResult::Batch(BatchResults { lines: results }),
        records: overlay.into_records(),
        reservations: reservations.collect(),
    };
    (change, events)
}

fn refused(rejection: Rejection) -> (Change, Vec<Event>) {
    (Change::nothing(CommandResult::Err(rejection)), Vec::new())
}

/// The state as a batch's lines so far leave it: the view below, and what the batch wrote on
/// top of it.
struct Overlay<'a, V> {
    view: &'a V,
    /// Each record the batch changed, as its last line left it. Looked up, never iterated
    /// (`order` is the order): its hash seed changes nothing.
    records: KeyMap<RecordKey, Record>,
    /// The keys of `records` in the order the batch first wrote them: the order of the writes.
    order: Vec<RecordKey>,
    /// Reservations the batch created so far.
    holds: u64,
}

impl<'a, V: StateView> Overlay<'a, V> {
    fn new(view: &'a V, lines: usize) -> Self {
        Self {
            view,
            records: KeyMap::with_capacity_and_hasher(lines, Default::default()),
            order: Vec::with_capacity(lines),
            holds: 0,
        }
    }

    fn write(&mut self, record: &Record) {
        if self
            .records
            .insert(record.key.clone(), record.clone())
            .is_none()
        {
            self.order.push(record.key.clone());
        }
    }

    /// Each record written, once, in its last state, in the order first written.
    fn into_records(mut self) -> Vec<Record> {
        let records: Vec<Record> = (self.order.iter())
            .map(|key| self.records.remove(key).expect("every written key is kept"))
            .collect();
        assert!(self.records.is_empty(), "every kept record was written");
        records
    }
}

impl<V: StateView> StateView for Overlay<'_, V> {
    fn record(&self, key: &RecordKey) -> Option<Record> {
        match self.records.get(key) {
            Some(record) => Some(record.clone()),
            None => self.view.record(key),
        }
    }
    fn idempotency(&self, id: &IdempotencyId) -> Option<IdempotencyEntry> {
        self.view.idempotency(id)
    }
    /// Lines never name a reservation: the view's only.
    fn reservation(&self, id: ReservationId) -> Option<Reservation> {
        self.view.reservation(id)
    }
    fn held_count(&self) -> u64 {
        self.view.held_count().saturating_add(self.holds)
    }
}

/// One line that applied: the record as it left it, the reservation it created (a hold), and
/// what its events say.
struct AppliedLine {
    record: Record,
    reservation: Option<Reservation>,
    kind: EventKind,
    /// How much the available quantity moved (see `Event::delta`); None for a creation.
    delta: Option<i64>,
}

impl AppliedLine {
    fn of(kind: EventKind, delta: Option<i64>, record: Record) -> Self {
        Self {
            record,
            reservation: None,
            kind,
            delta,
        }
    }

    /// The events the single command would have yielded.
    fn events(&self, entry: Entry<'_>) -> Vec<Event> {
        let records = std::slice::from_ref(&self.record);
        let changed = match &self.reservation {
            Some(reservation) => Changed::Reservations {
                reservations: std::slice::from_ref(reservation),
                records,
            },
            None => Changed::Records {
                kind: self.kind,
                delta: self.delta,
                records,
            },
        };
        events_of(
            changed,
            entry.log_index,
            entry.now_ms,
            entry.idempotency_key,
        )
    }
}

/// Applies one line against the batch's state so far, or says why it cannot.
fn apply_line(
    view: &Overlay<'_, impl StateView>,
    line: &BatchLine,
    entry: Entry<'_>,
) -> Result<AppliedLine, Rejection> {
    let key = line.key();
    RecordKey::new(&key.store_id, &key.sku).map_err(|error| Rejection::Invalid {
        message: error.to_string(),
    })?;
    let now_ms = entry.now_ms;
    match *line {
        BatchLine::Create {
            ref key,
            initial_quantity,
        } => {
            let record = one_record::create(view, key, initial_quantity, now_ms)?;
            Ok(AppliedLine::of(EventKind::Created, None, record))
        }
        BatchLine::Adjust {
            ref key,
            delta,
            expected_version,
        } => {
            let record = one_record::adjust(view, key, delta, expected_version, now_ms)?;
            Ok(AppliedLine::of(EventKind::Adjusted, Some(delta), record))
        }
        BatchLine::Set {
            ref key,
            qty,
            expected_version,
        } => set(view, key, qty, expected_version, now_ms),
        BatchLine::Reserve {
            ref key,
            quantity,
            expected_version,
            ttl_ms: None,
        } => {
            let record = one_record::reserve(view, key, quantity, expected_version, now_ms)?;
            // Accepted: quantity >= 0, so its negation exists.
            Ok(AppliedLine::of(
                EventKind::Reserved,
                quantity.checked_neg(),
                record,
            ))
        }
        BatchLine::Reserve {
            ref key,
            quantity,
            expected_version,
            ttl_ms: Some(ttl_ms),
        } => {
            let hold = lifecycle::Hold {
                key,
                quantity,
                expected_version,
                ttl_ms,
            };
            hold_line(view, hold, entry)
        }
    }
}

/// `rejection`, with an `Invalid` message cut to [`LINE_MESSAGE_BYTES_MAX`] bytes (at a
/// character boundary): the same on every replica, in the first answer as in a replay.
fn bounded(rejection: Rejection) -> Rejection {
    match rejection {
        Rejection::Invalid { mut message } if message.len() > LINE_MESSAGE_BYTES_MAX => {
            let mut end = LINE_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            Rejection::Invalid { message }
        }
        other => other,
    }
}

/// Makes the available quantity `qty`; the held units stay. A missing record is created, unless
/// the line expects a version of it.
fn set(
    view: &impl StateView,
    key: &RecordKey,
    qty: i64,
    expected_version: Option<u64>,
    now_ms: u64,
) -> Result<AppliedLine, Rejection> {
    if qty < 0 {
        return Err(invalid("qty must not be negative"));
    }
    if expected_version.is_none() && view.record(key).is_none() {
        let record = one_record::create(view, key, qty, now_ms)?;
        return Ok(AppliedLine::of(EventKind::Created, None, record));
    }
    let record = existing(view, key, expected_version)?;
    // On hand (available + reserved) must stay within an i64.
    qty.checked_add(record.reserved)
        .ok_or(Rejection::Overflow)?;
    // Both are in 0..=i64::MAX: the difference fits.
    let delta = qty - record.quantity;
    let reserved = record.reserved;
    let record = changed(record, qty, reserved, now_ms)?;
    Ok(AppliedLine::of(EventKind::Adjusted, Some(delta), record))
}

/// A reserve line with a ttl: the batch's next hold, as [`lifecycle::hold_as`] makes it.
fn hold_line(
    view: &Overlay<'_, impl StateView>,
    hold: lifecycle::Hold<'_>,
    entry: Entry<'_>,
) -> Result<AppliedLine, Rejection> {
    // At most BATCH_HOLD_LINES_MAX holds, far below the 2^16 ids of an entry.
    let number = u16::try_from(view.holds).map_err(|_| invalid("too many holds in one entry"))?;
    let id = ReservationId::new(entry.log_index, number)
        .ok_or_else(|| invalid("the log index is beyond what a reservation id can name"))?;
    let mut change = lifecycle::hold_as(view, hold, id, entry.now_ms)?;
    assert_eq!(change.records.len(), 1, "a hold changes its one record");
    assert_eq!(
        change.reservations.len(),
        1,
        "a hold creates one reservation"
    );
    Ok(AppliedLine {
        record: change.records.remove(0),
        reservation: change.reservations.pop(),
        kind: EventKind::Held,
        delta: hold.quantity.checked_neg(),
    })
}

/// `response` as an idempotency entry keeps it: a batch's line keys left out (see the module
/// docs). Any other answer is kept whole.
pub fn stored_answer(mut response: Response) -> Response {
    for_each_line_key(&mut response.result, |_, key| *key = hollow_key());
    response
}

/// A stored batch answer with its line keys put back from the batch's `lines` (the same lines:
/// the fingerprints matched).
pub fn replayed_answer(mut response: Response, lines: &[BatchLine]) -> Response {
    for_each_line_key(&mut response.result, |index, key| {
        if let Some(line) = lines.get(index) {
            *key = line.key().clone();
        }
    });
    response
}

/// The placeholder of a left-out key: one byte of store id (`/` is in no valid id) and no sku.
/// Not an empty store id: a record's stored layout reads a store id of length 0 as the tag of
/// its other layout (`record::Record`'s serializer), so a record with one would not decode.
fn hollow_key() -> RecordKey {
    RecordKey {
        store_id: "/".into(),
        sku: String::new(),
    }
}

/// Calls `visit` with each line index and each record key of that line that a batch answer
/// holds (the record's, the refusal's, the rejection's). Every one of them is the line's key.
fn for_each_line_key(result: &mut CommandResult, mut visit: impl FnMut(usize, &mut RecordKey)) {
    match result {
        CommandResult::Batch(results) => {
            for (index, line) in results.lines.iter_mut().enumerate() {
                match line {
                    LineResult::Ok { record, .. } => visit(index, &mut record.key),
                    LineResult::Failed(rejection) => {
                        if let Some(key) = rejection_key(rejection) {
                            visit(index, key);
                        }
                    }
                }
            }
        }
        CommandResult::Err(Rejection::BatchRefused { lines }) => {
            for refusal in lines {
                visit(refusal.index, &mut refusal.key);
                if let Some(key) = rejection_key(&mut refusal.rejection) {
                    visit(refusal.index, key);
                }
            }
        }
        _ => {}
    }
}

/// The record key a line's rejection names, if any.
fn rejection_key(rejection: &mut Rejection) -> Option<&mut RecordKey> {
    match rejection {
        Rejection::NotFound { key } | Rejection::AlreadyExists { key, .. } => Some(key),
        _ => None,
    }
}
