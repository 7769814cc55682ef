//! Planted bugs: switches that break stockraft on purpose, so a test can prove the simulation's
//! checkers catch what they claim to catch. Exists only in `--cfg madsim` builds; off unless a
//! test plants one, and set by [`plant`] at the start of every run.

use std::cell::Cell;

/// A known bug the simulation must find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    None = 0,
    /// A follower answers a linearizable read from its own, possibly stale, state.
    StaleFollowerReads = 1,
    /// A reserve beyond the available stock succeeds and empties the record (an oversell).
    ReserveSkipsStockCheck = 2,
}

thread_local! {
    /// Per OS thread, because a madsim runtime (all its nodes) runs on one thread and several
    /// runs may proceed in parallel threads of one test process.
    static PLANTED: Cell<PlantedBug> = const { Cell::new(PlantedBug::None) };
}

pub fn plant(bug: PlantedBug) {
    PLANTED.with(|planted| planted.set(bug));
}

pub fn planted() -> PlantedBug {
    PLANTED.with(Cell::get)
}
