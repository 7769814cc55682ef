//! Every reservation transition through the pure `apply`: holds, carts, commits, releases and
//! expiries, the races the log decides, the caps, and a randomized run that checks the
//! invariants after every entry.

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::*;
use crate::inventory::{
    apply, ApplyContext, Command, Effects, IdempotencyKey, MemoryState, Request, Response,
};

const T0_MS: u64 = 1_767_225_600_000;
const TTL_MS: u64 = 60_000;

fn key(sku: &str) -> RecordKey {
    RecordKey::new("s1", sku).unwrap()
}

/// A state with a log: each command is the next entry, at the shop's current log time.
struct Shop {
    state: MemoryState,
    index: u64,
    now_ms: u64,
}

impl Shop {
    /// Records `a`, `b` and `c` of 10 units each, at T0.
    fn new() -> Self {
        let mut shop = Shop {
            state: MemoryState::default(),
            index: 0,
            now_ms: T0_MS,
        };
        for sku in ["a", "b", "c"] {
            shop.ok(create(sku, 10));
        }
        shop
    }

    fn request(&mut self, request: Request) -> (Response, Effects) {
        self.index += 1;
        let context = ApplyContext {
            log_index: self.index,
            now_ms: self.now_ms,
        };
        let (response, effects) = apply(&self.state, &request, context);
        self.state.commit(effects.clone());
        (response, effects)
    }

    fn run(&mut self, command: Command) -> (Response, Effects) {
        self.request(Request {
            command,
            proposed_at_ms: self.now_ms,
            idempotency: None,
        })
    }

    /// Runs a command that must be accepted; its answer.
    fn ok(&mut self, command: Command) -> CommandResult {
        let (response, _) = self.run(command);
        assert!(response.result.is_ok(), "{:?}", response.result);
        response.result
    }

    /// Runs a command that must be refused and change nothing; the rejection.
    fn refused(&mut self, command: Command) -> Rejection {
        let before = self.state.clone();
        let (response, effects) = self.run(command);
        assert_eq!(effects, Effects::default(), "a refusal writes nothing");
        assert_eq!(self.state, before);
        response.result.rejection().cloned().expect("refused")
    }

    /// Holds `quantity` of `sku` for [`TTL_MS`]; the reservation's id.
    fn hold(&mut self, sku: &str, quantity: i64) -> ReservationId {
        self.ok(hold(sku, quantity, TTL_MS))
            .reservation_id()
            .unwrap()
    }

    fn record(&self, sku: &str) -> Record {
        self.state.records[&key(sku)].clone()
    }

    fn counts(&self, sku: &str) -> (i64, i64, u64) {
        let record = self.record(sku);
        (record.quantity, record.reserved, record.version)
    }

    /// Asks to commit `id`, then to release it: both must be refused with `rejection`.
    fn commit_and_release_refused(&mut self, id: ReservationId, rejection: Rejection) {
        assert_eq!(self.refused(commit(id)), rejection, "commit");
        assert_eq!(self.refused(release(id)), rejection, "release");
    }

    fn status(&self, id: ReservationId) -> ReservationStatus {
        self.state.reservations[&id].status
    }
}

fn create(sku: &str, quantity: i64) -> Command {
    Command::Create {
        key: key(sku),
        initial_quantity: quantity,
    }
}

fn hold(sku: &str, quantity: i64, ttl_ms: u64) -> Command {
    Command::Hold {
        key: key(sku),
        quantity,
        expected_version: None,
        ttl_ms,
    }
}

fn line(sku: &str, quantity: i64, expected_version: Option<u64>) -> CartLine {
    CartLine {
        key: key(sku),
        quantity,
        expected_version,
    }
}

fn cart(lines: Vec<CartLine>) -> Command {
    Command::Cart {
        lines,
        ttl_ms: TTL_MS,
    }
}

fn commit(id: ReservationId) -> Command {
    Command::Commit { id }
}

fn release(id: ReservationId) -> Command {
    Command::Release { id }
}

fn expire(ids: &[ReservationId]) -> Command {
    Command::Expire { ids: ids.to_vec() }
}

#[test]
fn a_hold_moves_units_to_reserved_and_a_commit_takes_them_off_hand() {
    let mut shop = Shop::new();
    let answer = shop.ok(hold("a", 3, TTL_MS));
    let CommandResult::Held {
        record,
        reservation_id,
    } = answer
    else {
        panic!("a hold answers Held: {answer:?}");
    };
    assert_eq!(
        (record.quantity, record.reserved, record.on_hand()),
        (7, 3, 10)
    );
    assert_eq!(record, shop.record("a"));
    let reservation = shop.state.reservations[&reservation_id].clone();
    assert_eq!(reservation.status, ReservationStatus::Held);
    assert_eq!(
        reservation.lines,
        vec![ReservationLine {
            key: key("a"),
            quantity: 3
        }]
    );
    assert_eq!(reservation.expires_at_ms, T0_MS + TTL_MS);
    assert_eq!(shop.state.held_count, 1);

    shop.now_ms += 1_000;
    let (response, effects) = shop.run(commit(reservation_id));
    let committed = response.result.reservation().cloned().unwrap();
    assert_eq!(committed.status, ReservationStatus::Committed);
    assert_eq!(committed.updated_at_ms, T0_MS + 1_000);
    assert_eq!(effects.reservations, vec![committed]);
    assert_eq!(shop.counts("a"), (7, 0, 3));
    assert_eq!(shop.record("a").on_hand(), 7);
    assert_eq!(shop.record("a").updated_at_ms, T0_MS + 1_000);
    assert_eq!(shop.state.held_count, 0);
}

#[test]
fn a_hold_then_release_gives_the_units_back() {
    let mut shop = Shop::new();
    let id = shop.hold("a", 4);
    assert_eq!(shop.counts("a"), (6, 4, 2));
    let released = shop.ok(release(id));
    assert_eq!(
        released.reservation().unwrap().status,
        ReservationStatus::Released
    );
    assert_eq!(shop.counts("a"), (10, 0, 3));
    assert_eq!(shop.state.held_count, 0);
}

#[test]
fn a_hold_is_checked_as_a_reserve_is() {
    let mut shop = Shop::new();
    assert!(matches!(
        shop.refused(hold("nope", 1, TTL_MS)),
        Rejection::NotFound { .. }
    ));
    assert_eq!(
        shop.refused(hold("a", 11, TTL_MS)),
        Rejection::InsufficientStock {
            requested: 11,
            available: 10
        }
    );
    assert!(matches!(
        shop.refused(hold("a", -1, TTL_MS)),
        Rejection::Invalid { .. }
    ));
    let stale = Command::Hold {
        key: key("a"),
        quantity: 1,
        expected_version: Some(9),
        ttl_ms: TTL_MS,
    };
    assert_eq!(
        shop.refused(stale),
        Rejection::VersionMismatch {
            expected: 9,
            actual: 1
        }
    );
    // Held units are not available to a second hold.
    shop.hold("a", 8);
    assert_eq!(
        shop.refused(hold("a", 3, TTL_MS)),
        Rejection::InsufficientStock {
            requested: 3,
            available: 2
        }
    );
}

#[test]
fn a_hold_lasts_from_a_second_to_seven_days() {
    let mut shop = Shop::new();
    for ttl_ms in [0, HOLD_TTL_MS_MIN - 1, HOLD_TTL_MS_MAX + 1, u64::MAX] {
        assert!(
            matches!(
                shop.refused(hold("a", 1, ttl_ms)),
                Rejection::Invalid { .. }
            ),
            "{ttl_ms}"
        );
        let command = Command::Cart {
            lines: vec![line("a", 1, None)],
            ttl_ms,
        };
        assert!(matches!(shop.refused(command), Rejection::Invalid { .. }));
    }
    for ttl_ms in [HOLD_TTL_MS_MIN, HOLD_TTL_MS_MAX] {
        let id = shop.ok(hold("a", 1, ttl_ms)).reservation_id().unwrap();
        assert_eq!(shop.state.reservations[&id].expires_at_ms, T0_MS + ttl_ms);
    }
    assert_eq!(HOLD_TTL_MS_MAX, 604_800_000);
}

#[test]
fn a_commit_at_the_deadline_loses_to_expiry() {
    let mut shop = Shop::new();
    let id = shop.hold("a", 3);
    shop.now_ms = T0_MS + TTL_MS;
    shop.commit_and_release_refused(id, Rejection::ReservationExpired { id });
    assert_eq!(
        shop.status(id),
        ReservationStatus::Held,
        "the expiry entry ends it"
    );
    assert_eq!(shop.ok(expire(&[id])), CommandResult::Expired { count: 1 });
    assert_eq!(shop.status(id), ReservationStatus::Expired);
    assert_eq!(shop.counts("a"), (10, 0, 3));
    // Once expired, both are still refused as expired.
    shop.commit_and_release_refused(id, Rejection::ReservationExpired { id });
}

#[test]
fn a_commit_one_ms_before_the_deadline_succeeds() {
    let mut shop = Shop::new();
    let id = shop.hold("a", 3);
    shop.now_ms = T0_MS + TTL_MS - 1;
    shop.ok(commit(id));
    assert_eq!(shop.status(id), ReservationStatus::Committed);
    // The expiry that follows finds it ended and skips it.
    shop.now_ms = T0_MS + TTL_MS;
    assert_eq!(shop.ok(expire(&[id])), CommandResult::Expired { count: 0 });
    assert_eq!(shop.counts("a"), (7, 0, 3));
}

#[test]
fn a_release_after_a_commit_is_refused_naming_committed() {
    let mut shop = Shop::new();
    let id = shop.hold("a", 3);
    shop.ok(commit(id));
    let refusal = shop.refused(release(id));
    assert_eq!(
        refusal,
        Rejection::ReservationNotHeld {
            id,
            status: ReservationStatus::Committed
        }
    );
    assert!(refusal.to_string().contains("committed"), "{refusal}");
    // And the other way round.
    let id = shop.hold("b", 1);
    shop.ok(release(id));
    assert_eq!(
        shop.refused(commit(id)),
        Rejection::ReservationNotHeld {
            id,
            status: ReservationStatus::Released
        }
    );
}

#[test]
fn a_repeated_commit_answers_the_same_reservation_and_changes_nothing() {
    let mut shop = Shop::new();
    let id = shop.hold("a", 3);
    let first = shop.ok(commit(id));
    let before = shop.state.clone();
    shop.now_ms = T0_MS + 2 * TTL_MS; // even past the deadline
    let (again, effects) = shop.run(commit(id));
    assert_eq!(again.result, first);
    assert_eq!(effects, Effects::default());
    assert_eq!(shop.state, before);
}

#[test]
fn a_repeated_release_answers_the_same_reservation_and_changes_nothing() {
    let mut shop = Shop::new();
    let id = shop.hold("a", 3);
    let first = shop.ok(release(id));
    let before = shop.state.clone();
    let (again, effects) = shop.run(release(id));
    assert_eq!(again.result, first);
    assert_eq!(effects, Effects::default());
    assert_eq!(shop.state, before);
}

#[test]
fn an_unknown_reservation_is_not_found() {
    let mut shop = Shop::new();
    let id = ReservationId::new(999, 0).unwrap();
    shop.commit_and_release_refused(id, Rejection::ReservationNotFound { id });
}

#[test]
fn an_expiry_skips_ended_unknown_and_not_yet_due_reservations() {
    let mut shop = Shop::new();
    let committed = shop.hold("a", 1);
    let released = shop.hold("a", 1);
    let due = shop.hold("a", 1);
    shop.now_ms += 1;
    let not_due = shop.hold("b", 1);
    shop.ok(commit(committed));
    shop.ok(release(released));
    let unknown = ReservationId::new(999, 0).unwrap();
    shop.now_ms = T0_MS + TTL_MS;
    let (response, effects) = shop.run(expire(&[committed, released, unknown, not_due, due]));
    assert_eq!(response.result, CommandResult::Expired { count: 1 });
    assert_eq!(effects.reservations.len(), 1);
    assert_eq!(effects.reservations[0].id, due);
    assert_eq!(shop.status(due), ReservationStatus::Expired);
    assert_eq!(shop.status(not_due), ReservationStatus::Held);
    assert_eq!(shop.status(committed), ReservationStatus::Committed);
    assert_eq!(shop.status(released), ReservationStatus::Released);
    assert_eq!(shop.counts("a").0 + shop.counts("a").1, 9);
    assert_eq!(shop.counts("b"), (9, 1, 2));
}

#[test]
fn an_expiry_applied_twice_expires_once() {
    let mut shop = Shop::new();
    let id = shop.hold("a", 3);
    shop.now_ms = T0_MS + TTL_MS;
    let (response, effects) = shop.run(expire(&[id, id]));
    assert_eq!(response.result, CommandResult::Expired { count: 1 });
    assert_eq!(effects.records.len(), 1);
    assert_eq!(shop.counts("a"), (10, 0, 3));
    let before = shop.state.clone();
    let (response, effects) = shop.run(expire(&[id]));
    assert_eq!(response.result, CommandResult::Expired { count: 0 });
    assert_eq!(effects, Effects::default());
    assert_eq!(shop.state, before);
}

#[test]
fn an_expiry_gives_one_new_version_to_a_record_many_holds_name() {
    let mut shop = Shop::new();
    let first = shop.hold("a", 2);
    let second = shop.hold("a", 3);
    let cart_id = shop
        .ok(cart(vec![line("a", 1, None), line("b", 4, None)]))
        .reservation_id()
        .unwrap();
    assert_eq!(shop.counts("a"), (4, 6, 4));
    shop.now_ms = T0_MS + TTL_MS;
    let (response, effects) = shop.run(expire(&[second, cart_id, first]));
    assert_eq!(response.result, CommandResult::Expired { count: 3 });
    let keys: Vec<&RecordKey> = effects.records.iter().map(|r| &r.key).collect();
    assert_eq!(keys, [&key("a"), &key("b")], "each record once");
    assert_eq!(shop.counts("a"), (10, 0, 5));
    assert_eq!(shop.counts("b"), (10, 0, 3));
    assert_eq!(shop.state.held_count, 0);
}

#[test]
fn an_expiry_names_one_to_a_thousand_reservations() {
    let mut shop = Shop::new();
    assert!(matches!(
        shop.refused(expire(&[])),
        Rejection::Invalid { .. }
    ));
    let many = vec![ReservationId::new(1, 0).unwrap(); EXPIRE_IDS_MAX + 1];
    assert!(matches!(
        shop.refused(expire(&many)),
        Rejection::Invalid { .. }
    ));
    let most = vec![ReservationId::new(1, 0).unwrap(); EXPIRE_IDS_MAX];
    assert_eq!(shop.ok(expire(&most)), CommandResult::Expired { count: 0 });
}

#[test]
fn a_cart_holds_every_line_and_ends_as_a_whole() {
    let mut shop = Shop::new();
    let answer = shop.ok(cart(vec![line("a", 2, Some(1)), line("b", 10, None)]));
    let reservation = answer.reservation().cloned().unwrap();
    assert_eq!(reservation.id, ReservationId::new(shop.index, 0).unwrap());
    assert_eq!(reservation.lines.len(), 2);
    assert_eq!(shop.counts("a"), (8, 2, 2));
    assert_eq!(shop.counts("b"), (0, 10, 2));
    assert_eq!(shop.state.held_count, 1);
    shop.ok(commit(reservation.id));
    assert_eq!(shop.counts("a"), (8, 0, 3));
    assert_eq!(shop.counts("b"), (0, 0, 3));

    let id = shop
        .ok(cart(vec![line("c", 5, None), line("a", 8, None)]))
        .reservation_id()
        .unwrap();
    shop.ok(release(id));
    assert_eq!(shop.counts("c"), (10, 0, 3));
    assert_eq!(shop.counts("a"), (8, 0, 5));
}

#[test]
fn a_cart_with_one_bad_line_changes_nothing_and_names_that_line() {
    let mut shop = Shop::new();
    let refusal = shop.refused(cart(vec![
        line("a", 1, None),
        line("b", 11, None),
        line("c", 1, None),
    ]));
    assert_eq!(
        refusal,
        Rejection::CartRefused {
            lines: vec![LineRefusal {
                index: 1,
                key: key("b"),
                rejection: Rejection::InsufficientStock {
                    requested: 11,
                    available: 10
                },
            }]
        }
    );
    assert_eq!(shop.state.held_count, 0);
}

#[test]
fn a_cart_with_three_failing_lines_names_all_three_in_order() {
    let mut shop = Shop::new();
    let refusal = shop.refused(cart(vec![
        line("missing", 1, None),
        line("a", 1, None),
        line("b", 1, Some(4)),
        line("c", 20, None),
    ]));
    let Rejection::CartRefused { lines } = refusal else {
        panic!("a cart refusal: {refusal:?}");
    };
    let indexes: Vec<usize> = lines.iter().map(|l| l.index).collect();
    assert_eq!(indexes, [0, 2, 3]);
    assert!(matches!(lines[0].rejection, Rejection::NotFound { .. }));
    assert_eq!(
        lines[1].rejection,
        Rejection::VersionMismatch {
            expected: 4,
            actual: 1
        }
    );
    assert!(matches!(
        lines[2].rejection,
        Rejection::InsufficientStock { .. }
    ));
    assert_eq!(lines[2].key, key("c"));
}

#[test]
fn a_malformed_cart_is_invalid() {
    let mut shop = Shop::new();
    let twice = cart(vec![
        line("a", 1, None),
        line("b", 1, None),
        line("a", 2, None),
    ]);
    let too_many = cart(
        (0..=CART_LINES_MAX)
            .map(|i| line(&format!("x{i}"), 1, None))
            .collect(),
    );
    for (command, why) in [
        (twice, "a key twice"),
        (too_many, "101 lines"),
        (cart(vec![]), "no line"),
        (cart(vec![line("a", 0, None)]), "a line of 0"),
        (cart(vec![line("a", -1, None)]), "a negative line"),
    ] {
        assert!(
            matches!(shop.refused(command), Rejection::Invalid { .. }),
            "{why}"
        );
    }
    let bad_key = Command::Cart {
        lines: vec![CartLine {
            key: RecordKey {
                store_id: "bad/store".into(),
                sku: "a".into(),
            },
            quantity: 1,
            expected_version: None,
        }],
        ttl_ms: TTL_MS,
    };
    assert!(matches!(shop.refused(bad_key), Rejection::Invalid { .. }));
    // The largest cart is accepted.
    for i in 0..CART_LINES_MAX {
        shop.ok(create(&format!("x{i}"), 1));
    }
    let largest = (0..CART_LINES_MAX)
        .map(|i| line(&format!("x{i}"), 1, None))
        .collect();
    shop.ok(cart(largest));
}

#[test]
fn holds_and_carts_are_refused_at_the_held_cap_and_nothing_is_lost() {
    let mut shop = Shop::new();
    let held = shop.hold("a", 1);
    shop.state.held_count = HELD_RESERVATIONS_MAX;
    let limit = Rejection::HoldLimitReached {
        max: HELD_RESERVATIONS_MAX,
    };
    assert_eq!(shop.refused(hold("a", 1, TTL_MS)), limit);
    assert_eq!(shop.refused(cart(vec![line("b", 1, None)])), limit);
    // What is held can still end, which makes room.
    shop.ok(commit(held));
    assert_eq!(shop.state.held_count, HELD_RESERVATIONS_MAX - 1);
    shop.hold("a", 1);
}

#[test]
fn an_idempotent_hold_replays_the_same_reservation_id() {
    let mut shop = Shop::new();
    let keyed = |command: Command| Request {
        command,
        proposed_at_ms: T0_MS,
        idempotency: Some(IdempotencyKey {
            scope: "client:shop".into(),
            key: "order-42".into(),
            ttl_ms: 86_400_000,
        }),
    };
    let (first, _) = shop.request(keyed(hold("a", 2, TTL_MS)));
    let before = shop.state.clone();
    let (again, effects) = shop.request(keyed(hold("a", 2, TTL_MS)));
    assert!(again.replayed);
    assert_eq!(again.result, first.result);
    assert!(first.result.reservation_id().is_some());
    assert_eq!(effects, Effects::default());
    assert_eq!(shop.state, before);
    // The same key on another command is refused, as on the seed's commands.
    let id = first.result.reservation_id().unwrap();
    let (reused, _) = shop.request(keyed(commit(id)));
    assert!(matches!(
        reused.result.rejection(),
        Some(Rejection::IdempotencyKeyReused { .. })
    ));
}

#[test]
fn ids_come_from_the_log_index() {
    let mut shop = Shop::new();
    let id = shop.hold("a", 1);
    assert_eq!((id.log_index(), id.number()), (shop.index, 0));
    assert_eq!(id.to_string(), format!("rsv-{}-0", shop.index));
}

#[test]
fn a_plain_reserve_and_adjust_leave_held_units_alone() {
    let mut shop = Shop::new();
    shop.hold("a", 4);
    let reserve = Command::Reserve {
        key: key("a"),
        quantity: 6,
        expected_version: None,
    };
    shop.ok(reserve);
    assert_eq!(shop.counts("a"), (0, 4, 3));
    let adjust = |delta| Command::Adjust {
        key: key("a"),
        delta,
        expected_version: None,
    };
    assert!(matches!(
        shop.refused(adjust(-1)),
        Rejection::InsufficientStock { available: 0, .. }
    ));
    // On hand must fit in an i64 too.
    assert_eq!(shop.refused(adjust(i64::MAX)), Rejection::Overflow);
    shop.ok(adjust(i64::MAX - 4));
    assert_eq!(shop.record("a").on_hand(), i64::MAX);
}

/// A small fixed-seed generator (xorshift64*): the domain draws no randomness of its own.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as u64) as i64
    }
}

/// Units that entered and left on hand, from the answers: what the records must add up to.
#[derive(Default)]
struct Ledger {
    on_hand_units: i64,
}

impl Ledger {
    fn account(&mut self, command: &Command, response: &Response, effects: &Effects) {
        if response.result.is_err() {
            return;
        }
        match command {
            Command::Create {
                initial_quantity, ..
            } => self.on_hand_units += initial_quantity,
            Command::Adjust { delta, .. } => self.on_hand_units += delta,
            Command::Reserve { quantity, .. } => self.on_hand_units -= quantity,
            Command::Commit { .. } => {
                for reservation in &effects.reservations {
                    let units: i64 = reservation.lines.iter().map(|l| l.quantity).sum();
                    self.on_hand_units -= units;
                }
            }
            _ => {}
        }
    }
}

fn random_command(dice: &mut Dice, state: &MemoryState, now_ms: u64) -> Command {
    let sku = |dice: &mut Dice| key(&format!("k{}", dice.below(6)));
    // Mostly a held reservation (the newest are the likeliest live), else any id at all.
    let known = |dice: &mut Dice| {
        let held = dice.below(4) != 0;
        let ids: Vec<ReservationId> = state
            .reservations
            .values()
            .filter(|r| !held || r.status == ReservationStatus::Held)
            .map(|r| r.id)
            .collect();
        match ids.len() {
            0 => ReservationId::new(1, 0).unwrap(),
            n => ids[n - 1 - dice.below(n.min(4) as u64) as usize],
        }
    };
    let ttl_ms = |dice: &mut Dice| dice.between(1_000, 8_000) as u64;
    match dice.below(9) {
        0 => Command::Create {
            key: sku(dice),
            initial_quantity: dice.between(0, 20),
        },
        1 => Command::Adjust {
            key: sku(dice),
            delta: dice.between(-6, 10),
            expected_version: None,
        },
        2 => Command::Reserve {
            key: sku(dice),
            quantity: dice.between(0, 4),
            expected_version: None,
        },
        3 => Command::Hold {
            key: sku(dice),
            quantity: dice.between(0, 5),
            expected_version: None,
            ttl_ms: ttl_ms(dice),
        },
        4 => {
            let mut lines: Vec<CartLine> = (0..dice.between(1, 4))
                .map(|_| CartLine {
                    key: sku(dice),
                    quantity: dice.between(1, 4),
                    expected_version: None,
                })
                .collect();
            lines.dedup_by(|a, b| a.key == b.key);
            Command::Cart {
                lines,
                ttl_ms: ttl_ms(dice),
            }
        }
        5 => Command::Commit { id: known(dice) },
        6 => Command::Release { id: known(dice) },
        7 => {
            // As a leader proposes it (the due held ones), plus a stray id or two.
            let mut ids: Vec<ReservationId> = state
                .reservations
                .values()
                .filter(|r| r.status == ReservationStatus::Held && r.expires_at_ms <= now_ms)
                .map(|r| r.id)
                .take(EXPIRE_IDS_MAX - 2)
                .collect();
            // A due id named twice, as a proposer racing itself might.
            ids.push(ids.first().copied().unwrap_or_else(|| known(dice)));
            ids.push(known(dice));
            Command::Expire { ids }
        }
        _ => Command::Expire {
            ids: vec![known(dice)],
        },
    }
}

/// What must hold after every entry, whatever it was.
fn check_invariants(state: &MemoryState, ledger: &Ledger) {
    let mut held_units: BTreeMap<&RecordKey, i64> = BTreeMap::new();
    for reservation in state.reservations.values() {
        if reservation.status == ReservationStatus::Held {
            for line in &reservation.lines {
                *held_units.entry(&line.key).or_default() += line.quantity;
            }
        }
    }
    let mut on_hand_total = 0;
    for record in state.records.values() {
        assert!(record.quantity >= 0, "{record:?}");
        assert!(record.reserved >= 0, "{record:?}");
        assert_eq!(record.on_hand(), record.quantity + record.reserved);
        let held = held_units.get(&record.key).copied().unwrap_or(0);
        assert_eq!(
            record.reserved, held,
            "reserved is the held lines: {record:?}"
        );
        on_hand_total += record.on_hand();
    }
    assert_eq!(on_hand_total, ledger.on_hand_units, "units are conserved");
    let held = state
        .reservations
        .values()
        .filter(|r| r.status == ReservationStatus::Held)
        .count();
    assert_eq!(state.held_count, held as u64);
}

/// What must hold of each entry's writes, against the state before it.
fn check_transition(before: &MemoryState, effects: &Effects, now_ms: u64) {
    let mut keys = BTreeSet::new();
    for record in &effects.records {
        assert!(
            keys.insert(&record.key),
            "a record written twice in one entry"
        );
        let version = before.records.get(&record.key).map_or(0, |r| r.version);
        assert_eq!(record.version, version + 1, "one new version per entry");
    }
    for reservation in &effects.reservations {
        let Some(earlier) = before.reservations.get(&reservation.id) else {
            assert_eq!(reservation.status, ReservationStatus::Held, "born held");
            continue;
        };
        assert_eq!(
            earlier.status,
            ReservationStatus::Held,
            "ended at most once"
        );
        let live = now_ms < earlier.expires_at_ms;
        match reservation.status {
            ReservationStatus::Committed | ReservationStatus::Released => {
                assert!(live, "ended by a client past its deadline")
            }
            ReservationStatus::Expired => assert!(!live, "expired before its deadline"),
            ReservationStatus::Held => panic!("a held reservation rewritten as held"),
        }
    }
}

#[test]
fn random_histories_conserve_units_and_end_each_hold_at_most_once() {
    for seed in 1..=20u64 {
        let mut dice = Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut state = MemoryState::default();
        let mut ledger = Ledger::default();
        let mut now_ms = T0_MS;
        for index in 1..=600 {
            now_ms += dice.below(700);
            let command = random_command(&mut dice, &state, now_ms);
            let request = Request {
                command: command.clone(),
                proposed_at_ms: now_ms,
                idempotency: None,
            };
            let context = ApplyContext {
                log_index: index,
                now_ms,
            };
            let (response, effects) = apply(&state, &request, context);
            check_transition(&state, &effects, now_ms);
            ledger.account(&command, &response, &effects);
            state.commit(effects);
            check_invariants(&state, &ledger);
        }
        // The history exercised every ending, and stock moved through holds.
        for status in [
            ReservationStatus::Committed,
            ReservationStatus::Released,
            ReservationStatus::Expired,
        ] {
            let count = state
                .reservations
                .values()
                .filter(|r| r.status == status)
                .count();
            assert!(count >= 5, "seed {seed}: only {count} {status}");
        }
        let carts = state.reservations.values().filter(|r| r.lines.len() > 1);
        assert!(carts.count() >= 5, "seed {seed}: few carts held");
    }
}
