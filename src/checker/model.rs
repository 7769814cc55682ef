//! The sequential specification of one inventory record: what a single SKU answers when
//! operations reach it one at a time.
//!
//! [`step`] is a re-statement of [`inventory::apply`](crate::inventory::apply) restricted to one
//! record, with the same checks in the same order. It is kept separate (not a call into `apply`)
//! so that the search allocates nothing per step; the test
//! `model_agrees_with_inventory_apply_on_every_case` keeps the two in lock-step.

use std::fmt;

/// A record that exists: its available quantity and its version (1 after create, +1 per change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stock {
    pub qty: i64,
    pub version: u64,
}

/// The model state of one SKU: `None` while the record does not exist.
pub type State = Option<Stock>;

/// What a client asked of the SKU. Idempotency keys are not part of the model: a request retried
/// with the same key is one operation (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create the record with `initial` units; refused if it exists.
    Create { initial: i64 },
    /// Add `delta` (any sign; 0 makes a new version only) to the quantity.
    Adjust {
        delta: i64,
        expected_version: Option<u64>,
    },
    /// Take `qty` (>= 0; 0 makes a new version only) units out of the quantity.
    Reserve {
        qty: i64,
        expected_version: Option<u64>,
    },
    /// Read the record.
    Read,
}

impl Op {
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Read)
    }
}

/// What the client was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The op took effect, or the read observed the record: the resulting quantity and version.
    Ok { qty: i64, version: u64 },
    /// A read saw no record, or an adjust/reserve found none (404).
    NotFound,
    /// A create found the record already there, at `version` (409, `details.currentVersion`).
    AlreadyExists { version: u64 },
    /// `expected_version` was not the current version `actual` (409).
    VersionMismatch { actual: u64 },
    /// The change would take the quantity below zero; `available` is the current quantity (422).
    InsufficientStock { available: i64 },
    /// The result would not fit in 64 bits (422 `QUANTITY_OUT_OF_RANGE`).
    Overflow,
    /// The amount was refused before looking at the record (400): a negative initial quantity
    /// or reserve. State-independent, so it linearizes anywhere.
    Invalid,
    /// No definite answer (timeout, 503 `OUTCOME_UNKNOWN`): the op may have taken effect once, at
    /// any point after its invocation, or never.
    Unknown,
}

impl Outcome {
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown)
    }
}

/// Runs one operation against the model: the answer the record gives and the state after it.
/// Never returns [`Outcome::Unknown`]. Rejections leave the state unchanged.
pub fn step(state: State, op: &Op) -> (Outcome, State) {
    let result = match *op {
        Op::Create { initial } => create(state, initial),
        Op::Adjust {
            delta,
            expected_version,
        } => adjust(state, delta, expected_version),
        Op::Reserve {
            qty,
            expected_version,
        } => reserve(state, qty, expected_version),
        Op::Read => match state {
            Some(stock) => Err(Outcome::Ok {
                qty: stock.qty,
                version: stock.version,
            }),
            None => Err(Outcome::NotFound),
        },
    };
    match result {
        Ok(stock) => {
            debug_assert!(stock.qty >= 0, "the model never goes below zero stock");
            let outcome = Outcome::Ok {
                qty: stock.qty,
                version: stock.version,
            };
            (outcome, Some(stock))
        }
        // A read's answer and every rejection: the state is untouched.
        Err(outcome) => (outcome, state),
    }
}

/// `Ok` is the changed record; `Err` is an answer that changes nothing.
type StepResult = Result<Stock, Outcome>;

fn create(state: State, initial: i64) -> StepResult {
    if initial < 0 {
        return Err(Outcome::Invalid);
    }
    match state {
        Some(stock) => Err(Outcome::AlreadyExists {
            version: stock.version,
        }),
        None => Ok(Stock {
            qty: initial,
            version: 1,
        }),
    }
}

fn adjust(state: State, delta: i64, expected_version: Option<u64>) -> StepResult {
    let stock = existing(state, expected_version)?;
    let qty = stock.qty.checked_add(delta).ok_or(Outcome::Overflow)?;
    if qty < 0 {
        return Err(Outcome::InsufficientStock {
            available: stock.qty,
        });
    }
    changed(stock, qty)
}

fn reserve(state: State, qty: i64, expected_version: Option<u64>) -> StepResult {
    if qty < 0 {
        return Err(Outcome::Invalid);
    }
    let stock = existing(state, expected_version)?;
    if qty > stock.qty {
        return Err(Outcome::InsufficientStock {
            available: stock.qty,
        });
    }
    changed(stock, stock.qty - qty)
}

fn existing(state: State, expected_version: Option<u64>) -> StepResult {
    let stock = state.ok_or(Outcome::NotFound)?;
    match expected_version {
        Some(expected) if expected != stock.version => Err(Outcome::VersionMismatch {
            actual: stock.version,
        }),
        _ => Ok(stock),
    }
}

fn changed(stock: Stock, qty: i64) -> StepResult {
    let version = stock.version.checked_add(1).ok_or(Outcome::Overflow)?;
    Ok(Stock { qty, version })
}

impl fmt::Display for Stock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "qty {} at version {}", self.qty, self.version)
    }
}

/// Formats a [`State`]: "absent" or the stock.
pub(crate) struct ShowState(pub State);

impl fmt::Display for ShowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(stock) => stock.fmt(f),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, amount, expected_version) = match *self {
            Op::Create { initial } => ("create", initial, None),
            Op::Adjust {
                delta,
                expected_version,
            } => ("adjust", delta, expected_version),
            Op::Reserve {
                qty,
                expected_version,
            } => ("reserve", qty, expected_version),
            Op::Read => return f.write_str("read"),
        };
        write!(f, "{name}({amount}")?;
        if let Some(version) = expected_version {
            write!(f, ", if version {version}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Outcome::Ok { qty, version } => write!(f, "ok (qty {qty} at version {version})"),
            Outcome::NotFound => f.write_str("not found"),
            Outcome::AlreadyExists { version } => {
                write!(f, "already exists (version {version})")
            }
            Outcome::VersionMismatch { actual } => {
                write!(f, "version mismatch (current {actual})")
            }
            Outcome::InsufficientStock { available } => {
                write!(f, "insufficient stock (available {available})")
            }
            Outcome::Overflow => f.write_str("quantity out of range"),
            Outcome::Invalid => f.write_str("invalid"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{
        apply, ApplyContext, Command, CommandResult, MemoryState, Record, RecordKey, Rejection,
        Request,
    };

    fn key() -> RecordKey {
        RecordKey::new("s1", "sku").unwrap()
    }

    /// The answer `inventory::apply` gives for `op` in `state`, translated into an [`Outcome`].
    fn apply_outcome(state: State, op: &Op) -> Outcome {
        let mut memory = MemoryState::default();
        if let Some(stock) = state {
            let record = Record {
                key: key(),
                quantity: stock.qty,
                reserved: 0,
                version: stock.version,
                created_at_ms: 0,
                updated_at_ms: 0,
            };
            memory.records.insert(key(), record);
        }
        let command = match *op {
            Op::Create { initial } => Command::Create {
                key: key(),
                initial_quantity: initial,
            },
            Op::Adjust {
                delta,
                expected_version,
            } => Command::Adjust {
                key: key(),
                delta,
                expected_version,
            },
            Op::Reserve {
                qty,
                expected_version,
            } => Command::Reserve {
                key: key(),
                quantity: qty,
                expected_version,
            },
            Op::Read => unreachable!("reads are not commands"),
        };
        let request = Request {
            command,
            proposed_at_ms: 0,
            idempotency: None,
        };
        let context = ApplyContext {
            log_index: 1,
            now_ms: 0,
        };
        let result = match apply(&memory, &request, context).0.result {
            CommandResult::Ok(record) => Ok(record),
            CommandResult::Err(rejection) => Err(rejection),
            other => panic!("not an answer to the seed's commands: {other:?}"),
        };
        match result {
            Ok(record) => Outcome::Ok {
                qty: record.quantity,
                version: record.version,
            },
            Err(Rejection::NotFound { .. }) => Outcome::NotFound,
            Err(Rejection::AlreadyExists { version, .. }) => Outcome::AlreadyExists { version },
            Err(Rejection::VersionMismatch { actual, .. }) => Outcome::VersionMismatch { actual },
            Err(Rejection::InsufficientStock { available, .. }) => {
                Outcome::InsufficientStock { available }
            }
            Err(Rejection::Overflow) => Outcome::Overflow,
            Err(Rejection::Invalid { .. }) => Outcome::Invalid,
            Err(rejection @ Rejection::IdempotencyKeyReused { .. }) => {
                panic!("no idempotency key was sent, yet: {rejection}")
            }
            Err(rejection) => panic!("not a refusal of the seed's commands: {rejection}"),
        }
    }

    #[test]
    fn model_agrees_with_inventory_apply_on_every_case() {
        let states: Vec<State> = [None]
            .into_iter()
            .chain(
                [(0, 1), (5, 1), (5, 3), (i64::MAX, 2), (3, u64::MAX)]
                    .map(|(qty, version)| Some(Stock { qty, version })),
            )
            .collect();
        let amounts = [i64::MIN, -6, -5, -1, 0, 1, 5, 6, i64::MAX];
        let versions = [None, Some(1), Some(3), Some(u64::MAX)];
        let mut ops = Vec::new();
        for &amount in &amounts {
            ops.push(Op::Create { initial: amount });
            for &expected_version in &versions {
                ops.push(Op::Adjust {
                    delta: amount,
                    expected_version,
                });
                ops.push(Op::Reserve {
                    qty: amount,
                    expected_version,
                });
            }
        }
        for state in &states {
            for op in &ops {
                let (outcome, after) = step(*state, op);
                assert_eq!(outcome, apply_outcome(*state, op), "{op} in {state:?}");
                match outcome {
                    Outcome::Ok { qty, version } => {
                        assert_eq!(after, Some(Stock { qty, version }), "{op} in {state:?}")
                    }
                    _ => assert_eq!(after, *state, "rejected {op} must change nothing"),
                }
            }
        }
    }

    #[test]
    fn a_read_reports_the_state_and_changes_nothing() {
        let stock = Stock { qty: 4, version: 2 };
        assert_eq!(
            step(Some(stock), &Op::Read),
            (Outcome::Ok { qty: 4, version: 2 }, Some(stock))
        );
        assert_eq!(step(None, &Op::Read), (Outcome::NotFound, None));
    }
}
