//! The Wing-Gong/Lowe search: depth-first over partial linearizations, memoized on
//! (set of linearized events, model state).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashSet};
use std::hash::BuildHasherDefault;

use super::model::{step, Op, Outcome, State};
use super::report::{CheckError, Mismatch, Summary, Violation};

/// Default limit on distinct (linearized set, state) configurations one check may enter. Each
/// costs about 100 bytes of memo and well under a microsecond, so the limit bounds a check to
/// tens of megabytes and a fraction of a second in release builds. Ordinary histories of ~200
/// events need a few hundred to a few thousand; only histories with many concurrent
/// unknown-outcome writes (2^n subsets) come near it.
pub const STATES_EXPLORED_MAX: u64 = 200_000;

/// How many alternative states at the deepest point a [`Violation`] keeps.
pub const OTHER_STATES_REPORTED_MAX: usize = 8;

/// One client operation on one SKU, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Identifies the event in reports; must be unique within a history.
    pub id: u64,
    pub op: Op,
    /// When the client sent the request (any monotonic unit, e.g. simulated ms).
    pub invoked_at: u64,
    /// When the client received a definite answer; required unless `outcome` is
    /// [`Outcome::Unknown`], for which it is ignored (the op may still take effect later).
    pub completed_at: Option<u64>,
    pub outcome: Outcome,
}

impl Event {
    /// The completion time that constrains the order: `None` (+infinity) for unknown outcomes.
    fn deadline(&self) -> Option<u64> {
        if self.outcome.is_unknown() {
            None
        } else {
            self.completed_at
        }
    }
}

/// Checks `history` with the default [`STATES_EXPLORED_MAX`].
pub fn check(history: &[Event]) -> Result<Summary, CheckError> {
    check_with_limit(history, STATES_EXPLORED_MAX)
}

/// Checks that `history` (the events of one SKU, in any order) is linearizable with respect to
/// the single-record model, exploring at most `states_explored_max` configurations.
pub fn check_with_limit(
    history: &[Event],
    states_explored_max: u64,
) -> Result<Summary, CheckError> {
    validate(history)?;
    let mut ops: Vec<&Event> = history
        .iter()
        .filter(|event| !(event.outcome.is_unknown() && event.op.is_read()))
        .collect();
    // Stable: ties keep the caller's order, so the search is a function of the input alone.
    ops.sort_by_key(|event| event.invoked_at);
    let mut by_completion: Vec<usize> = (0..ops.len())
        .filter(|&index| ops[index].deadline().is_some())
        .collect();
    by_completion.sort_by_key(|&index| ops[index].deadline());

    let mut search = Search::new(&ops, &by_completion, states_explored_max);
    let linearization = search.run()?;
    Ok(Summary {
        ops_checked: ops.len(),
        unknown_ops: history.iter().filter(|e| e.outcome.is_unknown()).count(),
        states_explored: search.states_explored(),
        linearization,
    })
}

fn validate(history: &[Event]) -> Result<(), CheckError> {
    let mut ids = BTreeSet::new();
    for event in history {
        let invalid = |reason| CheckError::InvalidHistory {
            event_id: event.id,
            reason,
        };
        if !ids.insert(event.id) {
            return Err(invalid("duplicate event id"));
        }
        match (event.outcome.is_unknown(), event.completed_at) {
            (false, None) => return Err(invalid("a definite outcome needs completed_at")),
            (false, Some(completed)) if completed < event.invoked_at => {
                return Err(invalid("completed before it was invoked"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A set of event indices (into the sorted `ops`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OpSet {
    words: Box<[u64]>,
}

impl OpSet {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)].into_boxed_slice(),
        }
    }
    fn contains(&self, index: usize) -> bool {
        self.words[index / 64] & (1 << (index % 64)) != 0
    }
    fn insert(&mut self, index: usize) {
        debug_assert!(!self.contains(index), "event linearized twice");
        self.words[index / 64] |= 1 << (index % 64);
    }
    fn remove(&mut self, index: usize) {
        debug_assert!(self.contains(index), "event removed but not linearized");
        self.words[index / 64] &= !(1 << (index % 64));
    }
}

/// A fixed-key hasher: membership only, never iterated, and no per-process random seed (which
/// would draw randomness under the simulator).
type Memo = HashSet<(OpSet, State), BuildHasherDefault<DefaultHasher>>;

/// One linearized event on the current path, and the state to restore when it is undone.
struct Frame {
    index: usize,
    state_before: State,
}

/// The best failure description seen so far: the dead end with the most known events placed.
struct DeadEnd {
    known_placed: usize,
    violation: Violation,
}

struct Search<'a> {
    /// Events sorted by invocation time.
    ops: &'a [&'a Event],
    /// Indices of known-outcome events, sorted by completion time.
    by_completion: &'a [usize],
    linearized: OpSet,
    state: State,
    known_left: usize,
    path: Vec<Frame>,
    memo: Memo,
    states_explored_max: u64,
    deepest: Option<DeadEnd>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [&'a Event], by_completion: &'a [usize], states_explored_max: u64) -> Self {
        Self {
            ops,
            by_completion,
            linearized: OpSet::new(ops.len()),
            state: None,
            known_left: by_completion.len(),
            path: Vec::new(),
            memo: Memo::default(),
            states_explored_max,
            deepest: None,
        }
    }

    fn states_explored(&self) -> u64 {
        self.memo.len() as u64
    }

    /// Depth-first search. Returns the witness order (event ids) once every known event is
    /// placed; unknown-outcome events still unplaced then are the ones that never took effect.
    fn run(&mut self) -> Result<Vec<u64>, CheckError> {
        // Where to resume the candidate scan at the current depth after a backtrack.
        let mut cursor = 0;
        while self.known_left > 0 {
            match self.next_extension(cursor) {
                Some((index, state_after)) => {
                    if self.states_explored() > self.states_explored_max {
                        return Err(CheckError::GaveUp {
                            states_explored: self.states_explored(),
                            states_explored_max: self.states_explored_max,
                        });
                    }
                    self.place(index, state_after);
                    cursor = 0;
                }
                None => {
                    self.record_dead_end();
                    let Some(index) = self.undo() else {
                        return Err(self.violation());
                    };
                    cursor = index + 1;
                }
            }
        }
        Ok(self.path.iter().map(|f| self.ops[f.index].id).collect())
    }

    /// The first candidate at or after `cursor` whose observed outcome the model reproduces and
    /// whose resulting configuration is new. Candidates are the unplaced events invoked no later
    /// than the earliest completion among unplaced known events: anything invoked after that
    /// completion must come after that event (strictly after; equal times are concurrent).
    fn next_extension(&mut self, cursor: usize) -> Option<(usize, State)> {
        let bound = self.earliest_pending_completion();
        for index in cursor..self.ops.len() {
            let event = self.ops[index];
            if event.invoked_at > bound {
                break;
            }
            if self.linearized.contains(index) {
                continue;
            }
            let (outcome, state_after) = step(self.state, &event.op);
            if event.outcome.is_unknown() {
                // An unknown op that would change nothing here is the same as one that never
                // happened, which the search already covers by leaving it out.
                if state_after == self.state {
                    continue;
                }
            } else if outcome != event.outcome {
                continue;
            }
            self.linearized.insert(index);
            if self.memo.insert((self.linearized.clone(), state_after)) {
                return Some((index, state_after));
            }
            self.linearized.remove(index);
        }
        None
    }

    fn earliest_pending_completion(&self) -> u64 {
        self.by_completion
            .iter()
            .find(|&&index| !self.linearized.contains(index))
            .and_then(|&index| self.ops[index].deadline())
            .unwrap_or(u64::MAX)
    }

    /// Puts the event at `index` (already marked in `linearized`) next in the order.
    fn place(&mut self, index: usize, state_after: State) {
        self.path.push(Frame {
            index,
            state_before: self.state,
        });
        self.state = state_after;
        if !self.ops[index].outcome.is_unknown() {
            self.known_left -= 1;
        }
    }

    /// Takes the last placed event out of the order; `None` when the order is empty.
    fn undo(&mut self) -> Option<usize> {
        let frame = self.path.pop()?;
        self.linearized.remove(frame.index);
        self.state = frame.state_before;
        if !self.ops[frame.index].outcome.is_unknown() {
            self.known_left += 1;
        }
        Some(frame.index)
    }

    fn known_placed(&self) -> usize {
        self.by_completion.len() - self.known_left
    }

    /// Remembers this dead end if it got further (in known events placed) than any before.
    fn record_dead_end(&mut self) {
        let known_placed = self.known_placed();
        if let Some(deepest) = &mut self.deepest {
            if deepest.known_placed > known_placed {
                return;
            }
            if deepest.known_placed == known_placed {
                let violation = &mut deepest.violation;
                let seen =
                    violation.state == self.state || violation.other_states.contains(&self.state);
                if !seen && violation.other_states.len() < OTHER_STATES_REPORTED_MAX {
                    violation.other_states.push(self.state);
                }
                return;
            }
        }
        self.deepest = Some(DeadEnd {
            known_placed,
            violation: self.describe_dead_end(),
        });
    }

    fn describe_dead_end(&self) -> Violation {
        let bound = self.earliest_pending_completion();
        let mismatches: Vec<Mismatch> = (0..self.ops.len())
            .filter(|&index| !self.linearized.contains(index))
            .map(|index| self.ops[index])
            .take_while(|event| event.invoked_at <= bound)
            .filter(|event| !event.outcome.is_unknown())
            .filter_map(|event| {
                let (model, _) = step(self.state, &event.op);
                (model != event.outcome).then_some(Mismatch {
                    event_id: event.id,
                    op: event.op,
                    observed: event.outcome,
                    model,
                })
            })
            .collect();
        let blocking = self
            .by_completion
            .iter()
            .find(|&&index| !self.linearized.contains(index))
            .map(|&index| self.ops[index].id)
            .expect("a dead end has a known event left");
        let last_change = self
            .path
            .iter()
            .rev()
            .find(|frame| {
                step(frame.state_before, &self.ops[frame.index].op).1 != frame.state_before
            })
            .map(|frame| self.ops[frame.index].id);
        let mut involved: Vec<u64> = mismatches.iter().map(|m| m.event_id).collect();
        involved.extend([blocking]);
        involved.extend(last_change);
        involved.sort_unstable();
        involved.dedup();
        Violation {
            event_id: blocking,
            linearized_prefix: self.path.iter().map(|f| self.ops[f.index].id).collect(),
            state: self.state,
            other_states: Vec::new(),
            mismatches,
            involved,
            states_explored: 0,
        }
    }

    fn violation(&mut self) -> CheckError {
        let states_explored = self.states_explored();
        let mut violation = self
            .deepest
            .take()
            .expect("the search fails only after a dead end")
            .violation;
        violation.states_explored = states_explored;
        CheckError::NotLinearizable(Box::new(violation))
    }
}
