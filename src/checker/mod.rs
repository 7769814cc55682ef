//! A linearizability checker for the client-observed history of one SKU (Wing & Gong's search
//! with Lowe's memoization, as in Porcupine and Knossos).
//!
//! # What is checked
//!
//! The deterministic simulation records, per SKU, every client operation as an [`Event`]: the
//! [`Op`], when it was invoked, when its answer arrived, and the [`Outcome`]. [`check`] decides
//! whether there is one sequential order of those operations that
//!
//! 1. respects real time: if `a.completed_at < b.invoked_at` then `a` comes before `b`
//!    (strictly: equal timestamps count as concurrent), and
//! 2. gives, when replayed through the model, exactly the outcome each client observed.
//!
//! If so the history is linearizable and the [`Summary`] carries one such order as a witness.
//! This is what "no oversell, no lost acknowledged write, no stale read" means observably: an
//! oversell, a lost write, a stale read, a skipped version or a wrong quantity all make the
//! history non-linearizable.
//!
//! # The model
//!
//! One SKU is one record; its state is `Option<Stock { qty, version }>` (`None` = absent).
//! [`step`] is the sequential specification and matches [`inventory::apply`] exactly
//! (a test compares them case by case): create makes version 1 or answers `AlreadyExists`;
//! adjust and reserve answer `NotFound`, `VersionMismatch { actual }` (when an expected version
//! is given and differs), `InsufficientStock { available }` or `Overflow`, or change the record
//! and bump the version by one; a read returns the record or `NotFound`. Rejections change
//! nothing.
//!
//! # Unknown outcomes
//!
//! An operation whose answer was lost (timeout, 503 `OUTCOME_UNKNOWN`) may have taken effect
//! once, at any point after its invocation, or never. It is treated as *optional* with
//! completion time +infinity: the search may place it anywhere after everything that completed
//! before it was invoked, with whatever result the model gives, and succeeds as soon as every
//! *known* operation is placed, so any unknown operations left over are the ones that never
//! happened. An unknown operation is never placed where it would change nothing (that is the
//! same as leaving it out). Unknown reads constrain nothing and are dropped up front.
//!
//! # The search
//!
//! Depth-first over partial orders. At each step the candidates are the unplaced events invoked
//! no later than the earliest completion among unplaced known events (any event invoked after
//! that completion must wait for it), tried in invocation order. A configuration (set of placed
//! events as a bitset, model state) is entered at most once: reaching it again by another order
//! cannot lead anywhere new. The memo's hasher has a fixed key and is never iterated, so a check
//! is a pure function of its input: no I/O, clock or randomness.
//!
//! The search is exponential in the worst case (many concurrent unknown writes give 2^n
//! subsets). It therefore stops after [`STATES_EXPLORED_MAX`] configurations (or the limit
//! given to [`check_with_limit`]) and returns [`CheckError::GaveUp`]. **Gave up is not
//! linearizable**: nothing has been proven either way, and a harness should report it as such.
//!
//! On failure, [`Violation`] describes the deepest dead end: the longest prefix of known events
//! that could be ordered, the state(s) there, the event that could not be placed, and for every
//! event that could have come next, what it observed versus what the model answers.
//!
//! # Deliberately not done
//!
//! - Histories are not split by SKU here: the caller passes one SKU's events at a time (the
//!   model is per record, and per-object linearizability composes).
//! - Idempotency keys are not modelled. A request retried with the same key is one operation;
//!   the caller records it as one event (invoked at the first attempt, completed at the final
//!   definite answer, or unknown). `IdempotencyKeyReused` answers are not events.
//! - Requests that definitely did nothing without reaching the state machine (`NO_LEADER`,
//!   validation done by the HTTP layer) are not events either; leaving them out is exact.
//! - Invariants over the final state (e.g. conservation of stock) are the caller's business.
//!
//! [`inventory::apply`]: crate::inventory::apply

mod model;
mod report;
mod search;

#[cfg(test)]
mod tests;

pub use model::{step, Op, Outcome, State, Stock};
pub use report::{CheckError, Mismatch, Summary, Violation, PREFIX_SHOWN_MAX};
pub use search::{check, check_with_limit, Event, OTHER_STATES_REPORTED_MAX, STATES_EXPLORED_MAX};
