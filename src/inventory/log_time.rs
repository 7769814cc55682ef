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
//! - **never backwards**: a leader whose clock is behind its predecessor's cannot move time
//!   back (which would revive expired keys and stamp changes before earlier ones);
//! - **at most [`LOG_TIME_STEP_MAX_MS`] forward per entry**: a leader whose clock jumps ahead (a
//!   bad NTP step, a VM restored from an old image with a wrong RTC, an operator typo) cannot
//!   carry log time past every key's expiry in one entry. Without the bound, one entry stamped a
//!   day ahead would expire every idempotency key at once, and a retry of a write already
//!   applied would then be applied again.
//!
//! The bound is a constant of the replicated state machine, not a setting: replicas must agree
//! on it to compute the same time. It slows catching up, not keeping up: log time trails a
//! correct clock only after an idle period (the first entries after a quiet night are stamped up
//! to a minute apart until log time reaches the wall clock again) or a jump, and it follows a
//! clock that *stays* wrong at [`LOG_TIME_STEP_MAX_MS`] per entry. The bound buys time for such
//! a clock to be fixed; it does not make a wrong clock right.

/// The most log time may advance in one entry, in ms.
///
/// 60 s: under any real traffic entries are far closer than a minute apart, so log time keeps
/// up with a correct clock exactly; an idle cluster catches up at a minute per entry (an hour
/// of silence in 60 entries); and a jump of a day needs 1,440 entries to take full effect, not
/// one, so no single entry (nor a short burst) can expire 24 h idempotency keys. What it does
/// not do: a clock that stays a day ahead under heavy traffic still drags log time a day ahead
/// within those 1,440 entries (seconds at hundreds of writes/s). Smaller steps would slow that
/// down but make log time trail the wall clock longer after every idle period, which shows in
/// record timestamps; a minute keeps the lag invisible in practice.
pub const LOG_TIME_STEP_MAX_MS: u64 = 60_000;

/// The log time of an entry stamped `stamped_ms`, after an entry whose log time was
/// `previous_ms`: `max(previous, min(stamped, previous + LOG_TIME_STEP_MAX_MS))`.
///
/// `previous_ms == 0` means no command entry was applied yet (log time is ms since the Unix
/// epoch; no leader stamps 1970): the first entry then sets log time to its stamp, unbounded,
/// because there is nothing to step from and no key to expire.
pub fn next_log_time(previous_ms: u64, stamped_ms: u64) -> u64 {
    if previous_ms == 0 {
        return stamped_ms;
    }
    let bounded = stamped_ms.min(previous_ms.saturating_add(LOG_TIME_STEP_MAX_MS));
    let next = bounded.max(previous_ms);
    debug_assert!(next >= previous_ms, "log time never goes back");
    debug_assert!(
        next - previous_ms <= LOG_TIME_STEP_MAX_MS,
        "log time advances at most one step per entry"
    );
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    const NOW_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn a_correct_clock_is_followed_exactly() {
        assert_eq!(next_log_time(NOW_MS, NOW_MS + 5), NOW_MS + 5);
        assert_eq!(
            next_log_time(NOW_MS, NOW_MS + LOG_TIME_STEP_MAX_MS),
            NOW_MS + LOG_TIME_STEP_MAX_MS
        );
    }

    #[test]
    fn a_jump_forward_moves_log_time_by_at_most_one_step_per_entry() {
        let mut time = NOW_MS;
        for entry in 1..=10 {
            let next = next_log_time(time, NOW_MS + DAY_MS);
            assert_eq!(next - time, LOG_TIME_STEP_MAX_MS, "entry {entry}");
            time = next;
        }
        assert_eq!(time, NOW_MS + 10 * LOG_TIME_STEP_MAX_MS);
        // Near the end of the range the step saturates instead of overflowing.
        assert_eq!(next_log_time(u64::MAX - 1, u64::MAX), u64::MAX);
    }

    #[test]
    fn time_never_goes_backwards() {
        assert_eq!(next_log_time(NOW_MS, NOW_MS - 60_000), NOW_MS);
        assert_eq!(next_log_time(NOW_MS, 1), NOW_MS);
        assert_eq!(next_log_time(NOW_MS, 0), NOW_MS);
        let after_jump = next_log_time(NOW_MS, NOW_MS + DAY_MS);
        assert_eq!(next_log_time(after_jump, NOW_MS), after_jump);
    }

    #[test]
    fn the_first_entry_sets_log_time_to_its_stamp() {
        assert_eq!(next_log_time(0, NOW_MS), NOW_MS);
        assert_eq!(next_log_time(0, 0), 0);
    }
}
