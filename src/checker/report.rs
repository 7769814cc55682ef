//! What a check returns: a [`Summary`] with a witness order, or a [`CheckError`] saying why not.

use std::fmt;

use super::model::{Op, Outcome, ShowState, State};

/// How many ids of the linearized prefix a [`Violation`]'s text shows (the last ones); the
/// full prefix stays in [`Violation::linearized_prefix`].
pub const PREFIX_SHOWN_MAX: usize = 12;

/// A history that was proven linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events taken into account: all of them except unknown-outcome reads, which are dropped.
    pub ops_checked: usize,
    /// Events with an unknown outcome (reads included).
    pub unknown_ops: usize,
    /// Distinct (linearized set, state) configurations the search entered.
    pub states_explored: u64,
    /// One valid sequential order, by event id. It contains every known event and those
    /// unknown-outcome events that this order needed to take effect; the others never happened.
    pub linearization: Vec<u64>,
}

/// Why [`check`](super::check) did not return a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Proven: no order of the events explains what the clients observed.
    #[error("{0}")]
    NotLinearizable(Box<Violation>),
    /// The search reached its limit on explored states. Nothing is proven either way: this is
    /// NOT "linearizable", and not a violation either.
    #[error(
        "gave up after exploring {states_explored} states (limit {states_explored_max}): \
         linearizability NOT established, and no violation found"
    )]
    GaveUp {
        states_explored: u64,
        states_explored_max: u64,
    },
    /// The history itself is malformed (a caller bug, not a cluster bug).
    #[error("invalid history: event #{event_id}: {reason}")]
    InvalidHistory { event_id: u64, reason: &'static str },
}

/// A proof that the history is not linearizable, described at the deepest point the search
/// reached: the longest prefix of known events that could be put in order, after which no event
/// that could come next agrees with the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The event that could not be linearized: of the known events left at that point, the one
    /// that completed first (every later-invoked event has to wait for it).
    pub event_id: u64,
    /// The events linearized before getting stuck, in order (unknown-outcome ones included).
    pub linearized_prefix: Vec<u64>,
    /// The model state after that prefix.
    pub state: State,
    /// Other states reached with as many known events linearized, by other orders (bounded).
    pub other_states: Vec<State>,
    /// Every known event that could have come next, with what it observed and what the model
    /// answers in `state` instead.
    pub mismatches: Vec<Mismatch>,
    /// A small set of events to look at first (sorted): the mismatching candidates and the
    /// last event of the prefix that changed the record.
    pub involved: Vec<u64>,
    /// Distinct configurations explored to prove the violation.
    pub states_explored: u64,
}

/// One event whose observed outcome disagrees with the model at the point of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    pub event_id: u64,
    pub op: Op,
    pub observed: Outcome,
    pub model: Outcome,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable at event #{}: no order consistent with real time gets past it \
             (it or an event concurrent with it disagrees with the model)",
            self.event_id
        )?;
        write!(f, "  deepest point: after ")?;
        write_prefix(f, &self.linearized_prefix)?;
        writeln!(f, " the record is {}", ShowState(self.state))?;
        if !self.other_states.is_empty() {
            write!(f, "  other states reachable at that depth:")?;
            for state in &self.other_states {
                write!(f, " [{}]", ShowState(*state))?;
            }
            writeln!(f)?;
        }
        for mismatch in &self.mismatches {
            writeln!(
                f,
                "  #{} {}: observed {}, the model answers {}",
                mismatch.event_id, mismatch.op, mismatch.observed, mismatch.model
            )?;
        }
        write!(f, "  events involved:")?;
        for id in &self.involved {
            write!(f, " #{id}")?;
        }
        write!(f, " ({} states explored)", self.states_explored)
    }
}

fn write_prefix(f: &mut fmt::Formatter<'_>, prefix: &[u64]) -> fmt::Result {
    if prefix.is_empty() {
        return f.write_str("no events");
    }
    let shown = &prefix[prefix.len().saturating_sub(PREFIX_SHOWN_MAX)..];
    write!(f, "{} events [", prefix.len())?;
    if shown.len() < prefix.len() {
        f.write_str("... ")?;
    }
    let ids: Vec<String> = shown.iter().map(|id| format!("#{id}")).collect();
    write!(f, "{}]", ids.join(" "))
}
