//! Log time: the clock of the replicated state, derived from the leaders' stamps.
//!
//! Every command entry carries its proposing leader's wall clock (`Request::proposed_at_ms`).
//! The state machine never reads a clock of its own: it derives each entry's *log time* from
//! that stamp and the previous entry's log time with [`next_log_time`], and persists the result
//! (in the state machine, hence in snapshots), so every replica, a restarted node and a node
//! restored from a snapshot compute the same time for the same entry. Record timestamps,
//! idempotency-key expiry and the expiry-ordered eviction all run on it.
//!
//! Two rules bound what one leader's clock can do:
//! - **never backwards** (apply, [`next_log_time`]): a leader whose clock is behind its
//!   predecessor's cannot move time back (which would revive expired keys and stamp changes
//!   before earlier ones);
//! - **at most [`LOG_TIME_STEP_MAX_MS`] ahead of applied log time** (the proposer,
//!   [`proposal_stamp`]): a leader whose clock jumps ahead (a bad NTP step, a VM restored with a
//!   wrong RTC, an operator typo) stamps its proposals no further than a step past the log time
//!   it has applied, so it cannot carry log time past every key's expiry at once. Without the
//!   bound, one entry stamped a day ahead would expire every idempotency key at once, and a
//!   retry of a write already applied would then be applied again.
//!
//! Why the bound sits with the proposer and not in apply: apply's rule is part of the replicated
//! state machine, and a node must compute, for every entry in the log, exactly what every other
//! node computed, including entries proposed before the bound existed (a learner replaying an
//! old log, a cluster upgraded one node at a time). Apply's rule (`max`) has never changed; the
//! stamp a leader writes is its own business, so bounding it changes no replica's answer.
//!
//! The bound slows catching up, not keeping up: log time trails a correct clock only after an
//! idle period (the first entries after a quiet night are stamped up to a minute apart until
//! log time reaches the wall clock again) or a jump, and it follows a clock that *stays* wrong
//! by a step per round of applies. The bound buys time for such a clock to be fixed; it does
//! not make a wrong clock right.

/// The most a leader stamps a proposal ahead of the log time it has applied, in ms.
///
/// 60 s: under any real traffic entries are far closer than a minute apart, so log time keeps
/// up with a correct clock exactly; an idle cluster catches up at a minute per entry (an hour
/// of silence in 60 entries); and a jump of a day needs 1,440 rounds of applies to take full
/// effect, not one entry, so no single entry (nor a short burst) can expire 24 h idempotency
/// keys. What it does not do: a clock that stays a day ahead under heavy traffic still drags
/// log time a day ahead within seconds. Smaller steps would slow that down but make log time
/// trail the wall clock longer after every idle period, which shows in record timestamps; a
/// minute keeps the lag invisible in practice.
pub const LOG_TIME_STEP_MAX_MS: u64 = 60_000;

/// The log time of an entry stamped `stamped_ms`, after an entry whose log time was
/// `previous_ms`: the later of the two. This is apply's rule, the same in every version.
pub fn next_log_time(previous_ms: u64, stamped_ms: u64) -> u64 {
    previous_ms.max(stamped_ms)
}

/// What a leader stamps a proposal with: its clock `now_ms`, but at most
/// [`LOG_TIME_STEP_MAX_MS`] past `applied_log_time_ms`, the log time of its state machine.
///
/// `applied_log_time_ms == 0` means nothing was applied yet (log time is ms since the Unix
/// epoch; no leader stamps 1970): the clock is then taken as it is, there being nothing to
/// step from and no key to expire.
pub fn proposal_stamp(now_ms: u64, applied_log_time_ms: u64) -> u64 {
    if applied_log_time_ms == 0 {
        return now_ms;
    }
    now_ms.min(applied_log_time_ms.saturating_add(LOG_TIME_STEP_MAX_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    const NOW_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn a_correct_clock_is_followed_exactly() {
        assert_eq!(proposal_stamp(NOW_MS + 5, NOW_MS), NOW_MS + 5);
        assert_eq!(next_log_time(NOW_MS, NOW_MS + 5), NOW_MS + 5);
        assert_eq!(
            proposal_stamp(NOW_MS + LOG_TIME_STEP_MAX_MS, NOW_MS),
            NOW_MS + LOG_TIME_STEP_MAX_MS
        );
    }

    #[test]
    fn a_jump_forward_moves_log_time_by_at_most_one_step_per_applied_entry() {
        let mut time = NOW_MS;
        for entry in 1..=10 {
            let next = next_log_time(time, proposal_stamp(NOW_MS + DAY_MS, time));
            assert_eq!(next - time, LOG_TIME_STEP_MAX_MS, "entry {entry}");
            time = next;
        }
        assert_eq!(time, NOW_MS + 10 * LOG_TIME_STEP_MAX_MS);
        // Near the end of the range the step saturates instead of overflowing.
        assert_eq!(proposal_stamp(u64::MAX, u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn time_never_goes_backwards() {
        assert_eq!(next_log_time(NOW_MS, NOW_MS - 60_000), NOW_MS);
        assert_eq!(next_log_time(NOW_MS, 1), NOW_MS);
        assert_eq!(next_log_time(NOW_MS, 0), NOW_MS);
        let after_jump = next_log_time(NOW_MS, proposal_stamp(NOW_MS + DAY_MS, NOW_MS));
        assert_eq!(
            next_log_time(after_jump, proposal_stamp(NOW_MS, after_jump)),
            after_jump
        );
    }

    #[test]
    fn apply_keeps_its_rule_for_entries_stamped_without_the_bound() {
        // An entry an older leader stamped a day ahead: every replica takes it as it is.
        assert_eq!(next_log_time(NOW_MS, NOW_MS + DAY_MS), NOW_MS + DAY_MS);
    }

    #[test]
    fn the_first_entry_takes_the_clock() {
        assert_eq!(proposal_stamp(NOW_MS, 0), NOW_MS);
        assert_eq!(next_log_time(0, NOW_MS), NOW_MS);
    }
}
