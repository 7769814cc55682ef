#![cfg(not(madsim))]
//! Reservations over HTTP on a real three-node cluster (issue 31), through the leader and
//! through a follower alike: holds (the reserve route with `ttlSeconds`), commit, release,
//! expiry decided by the log, carts held whole or not at all, the SKU and store views, every
//! error code, and `stockraft inv` (its JSON and its exit codes).

mod support;

use std::process::Command;

use serde_json::{json, Value};
use stockraft::client::wire::{
    CartLineRequest, CartRequest, ChangeAnswer, CreateRequest, ReservationBody, ReservationCounts,
};
use stockraft::client::{routes, Answer, Client, Consistency, WriteOptions};
use support::Cluster;

const STORE: &str = "s1";
/// A hold that outlives any test.
const LONG_TTL_S: u64 = 600;

/// A three-node cluster, its leader and one follower.
async fn cluster() -> (Cluster, u64, u64) {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    (cluster, leader, follower)
}

async fn create(client: &Client, store_id: &str, sku: &str, quantity: i64) {
    let body = CreateRequest {
        sku: sku.into(),
        store_id: store_id.into(),
        initial_quantity: quantity,
    };
    let answer = client
        .create(&body, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        answer.status, 201,
        "create {store_id}/{sku}: {:?}",
        answer.body
    );
}

/// `(qty, reserved, onHand)` of a record, read linearizably.
async fn counts(client: &Client, store_id: &str, sku: &str) -> (i64, i64, i64) {
    let record = client
        .read(store_id, sku, Consistency::Linearizable)
        .await
        .unwrap()
        .ok()
        .unwrap();
    (record.qty, record.reserved, record.on_hand)
}

async fn hold(client: &Client, sku: &str, quantity: i64, ttl_s: u64) -> ChangeAnswer {
    let answer = client
        .hold(STORE, sku, quantity, ttl_s, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "hold {sku}: {:?}", answer.body);
    answer.ok().unwrap()
}

async fn reservation(client: &Client, id: &str) -> ReservationBody {
    let answer = client.reservation(id, Consistency::Linearizable).await;
    answer.unwrap().ok().unwrap().data
}

/// The error code and details of an error answer with `status`.
fn refused<T: std::fmt::Debug>(answer: Answer<T>, status: u16, what: &str) -> (String, Value) {
    assert_eq!(answer.status, status, "{what}: {:?}", answer.body);
    let error = answer.body.expect_err(what).error;
    (error.code, error.details.unwrap_or(Value::Null))
}

fn line(store_id: &str, sku: &str, qty: i64, expected_version: Option<u64>) -> CartLineRequest {
    CartLineRequest {
        store_id: store_id.into(),
        sku: sku.into(),
        qty,
        expected_version,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_are_committed_or_released_once_through_leader_and_follower() {
    let (cluster, leader, follower) = cluster().await;
    let mut ended_before = 0;
    for (node, sku) in [(leader, "hold-l"), (follower, "hold-f")] {
        let client = cluster.client(node);
        create(&client, STORE, sku, 10).await;

        // A hold: qty drops, reserved rises, on hand stays; the answer names the reservation.
        let keyed = WriteOptions::keyed(format!("hold-{sku}"));
        let answer = client
            .hold(STORE, sku, 3, LONG_TTL_S, &keyed)
            .await
            .unwrap();
        assert_eq!(answer.status, 201, "{:?}", answer.body);
        let held = answer.ok().unwrap();
        let id = held
            .reservation_id
            .clone()
            .expect("a hold names its reservation");
        assert_eq!(
            (held.new_quantity, held.record.reserved, held.record.on_hand),
            (7, 3, 10)
        );
        assert_eq!(counts(&client, STORE, sku).await, (7, 3, 10));
        reservation_metrics_become(&cluster, 1, ended_before).await;

        // Its replay answers the same reservation and holds nothing more.
        let replay = client
            .hold(STORE, sku, 3, LONG_TTL_S, &keyed)
            .await
            .unwrap();
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.ok().unwrap().reservation_id, Some(id.clone()));
        assert_eq!(counts(&client, STORE, sku).await, (7, 3, 10));

        let shown = reservation(&client, &id).await;
        assert_eq!(shown.status, "held");
        assert_eq!(shown.lines.len(), 1);
        assert_eq!(
            (
                shown.lines[0].store_id.as_str(),
                shown.lines[0].sku.as_str()
            ),
            (STORE, sku)
        );
        assert_eq!(shown.lines[0].qty, 3);
        assert!(shown.expires_at > shown.created_at, "{shown:?}");

        // Commit: the units left. Again: the same answer. Release after it: 409 naming it.
        let none = WriteOptions::default();
        let committed = client.commit_reservation(&id, &none).await.unwrap();
        assert_eq!(committed.status, 200, "{:?}", committed.body);
        assert_eq!(committed.ok().unwrap().data.status, "committed");
        assert_eq!(counts(&client, STORE, sku).await, (7, 0, 7));
        let again = client.commit_reservation(&id, &none).await.unwrap();
        assert_eq!(again.status, 200, "{:?}", again.body);
        assert_eq!(again.ok().unwrap().data.status, "committed");
        let late = client.release_reservation(&id, &none).await.unwrap();
        let (code, details) = refused(late, 409, "release after commit");
        assert_eq!(code, "RESERVATION_NOT_HELD");
        assert_eq!(details["status"], "committed");
        assert_eq!(counts(&client, STORE, sku).await, (7, 0, 7));

        // Release: the units come back to qty; with an Idempotency-Key, replayed.
        let second = hold(&client, sku, 2, LONG_TTL_S).await;
        let second_id = second.reservation_id.unwrap();
        assert_eq!(counts(&client, STORE, sku).await, (5, 2, 7));
        let keyed = WriteOptions::keyed(format!("release-{sku}"));
        let released = client
            .release_reservation(&second_id, &keyed)
            .await
            .unwrap();
        assert_eq!(released.status, 200, "{:?}", released.body);
        assert_eq!(released.ok().unwrap().data.status, "released");
        let replayed = client
            .release_reservation(&second_id, &keyed)
            .await
            .unwrap();
        assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
        assert_eq!(counts(&client, STORE, sku).await, (7, 0, 7));
        let late = client.commit_reservation(&second_id, &none).await.unwrap();
        let (code, details) = refused(late, 409, "commit after release");
        assert_eq!(code, "RESERVATION_NOT_HELD");
        assert_eq!(details["status"], "released");

        // Every node shows the same reservation from its own state, eventually.
        for id_on in cluster.ids() {
            let local = cluster.client(id_on);
            eventually!(format!("node {id_on} shows {id} committed"), {
                let answer = local.reservation(&id, Consistency::Local).await.unwrap();
                answer.header("x-stockraft-consistency") == Some("local")
                    && answer
                        .ok()
                        .is_ok_and(|body| body.data.status == "committed")
            });
        }

        // A plain reserve is still the seed's: no reservation, nothing reserved.
        let plain = client
            .reserve(STORE, sku, &plain_reserve(1), &none)
            .await
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(plain.reservation_id, None);
        assert_eq!(counts(&client, STORE, sku).await, (6, 0, 6));
        ended_before += 2;
        reservation_metrics_become(&cluster, 0, ended_before).await;
    }
}

/// Waits until every node's `/api/metrics` counts `held` reservations held and `ended` ended
/// ones remembered.
async fn reservation_metrics_become(cluster: &Cluster, held: u64, ended: u64) {
    for id in cluster.ids() {
        let client = cluster.client(id);
        eventually!(format!("node {id} counts {held} held and {ended} ended"), {
            let metrics = client.metrics().await.unwrap().ok().unwrap().data;
            metrics.reservations == Some(ReservationCounts { held, ended })
        });
    }
}

fn plain_reserve(qty: i64) -> stockraft::client::wire::ReserveRequest {
    stockraft::client::wire::ReserveRequest {
        qty,
        expected_version: None,
        ttl_seconds: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_expires_on_its_own_and_is_then_refused_and_bad_ids_and_ttls_are_400() {
    let (cluster, leader, follower) = cluster().await;
    for (node, sku) in [(leader, "expire-l"), (follower, "expire-f")] {
        let client = cluster.client(node);
        create(&client, STORE, sku, 5).await;
        let held = hold(&client, sku, 4, 1).await;
        let id = held.reservation_id.unwrap();
        assert_eq!(counts(&client, STORE, sku).await, (1, 4, 5));

        // Nobody resolves it: the log expires it, and the units come back.
        eventually!(format!("{id} expires"), {
            reservation(&client, &id).await.status == "expired"
        });
        assert_eq!(counts(&client, STORE, sku).await, (5, 0, 5));
        let none = WriteOptions::default();
        let late = client.commit_reservation(&id, &none).await.unwrap();
        assert_eq!(
            refused(late, 409, "commit after expiry").0,
            "RESERVATION_EXPIRED"
        );
        let late = client.release_reservation(&id, &none).await.unwrap();
        assert_eq!(
            refused(late, 409, "release after expiry").0,
            "RESERVATION_EXPIRED"
        );
        assert_eq!(counts(&client, STORE, sku).await, (5, 0, 5));

        // Unknown ids are 404; malformed ones 400, before anything is proposed.
        let unknown = "rsv-999999999-0";
        let answer = client
            .reservation(unknown, Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(
            refused(answer, 404, "unknown id").0,
            "RESERVATION_NOT_FOUND"
        );
        let answer = client.commit_reservation(unknown, &none).await.unwrap();
        assert_eq!(
            refused(answer, 404, "commit unknown").0,
            "RESERVATION_NOT_FOUND"
        );
        for bad in ["nope", "rsv-01-0", "rsv-1", "rsv-1-70000"] {
            let answer = client
                .reservation(bad, Consistency::Linearizable)
                .await
                .unwrap();
            assert_eq!(refused(answer, 400, bad).0, "VALIDATION_ERROR");
            let answer = client.release_reservation(bad, &none).await.unwrap();
            assert_eq!(refused(answer, 400, bad).0, "VALIDATION_ERROR");
        }

        // ttlSeconds is 1 s to 7 days.
        for ttl in [
            json!(0),
            json!(604_801),
            json!(1.5),
            json!(null),
            json!("60"),
        ] {
            let answer = cluster
                .request(
                    node,
                    reqwest::Method::POST,
                    &routes::reserve(STORE, sku),
                    Some(&json!({"qty": 1, "ttlSeconds": ttl}).to_string()),
                    &[],
                )
                .await;
            assert_eq!(answer.status, 400, "ttlSeconds {ttl}: {answer}");
            assert_eq!(answer.json["error"]["code"], "VALIDATION_ERROR", "{answer}");
        }
        assert_eq!(counts(&client, STORE, sku).await, (5, 0, 5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_is_held_whole_or_not_at_all() {
    let (cluster, leader, follower) = cluster().await;
    for (node, tag) in [(leader, "l"), (follower, "f")] {
        let client = cluster.client(node);
        let [a, b, c] = [0, 1, 2].map(|n| format!("cart-{tag}-{n}"));
        create(&client, STORE, &a, 5).await;
        create(&client, STORE, &b, 5).await;
        create(&client, STORE, &c, 1).await;

        let body = CartRequest {
            lines: vec![line(STORE, &a, 2, None), line(STORE, &b, 3, Some(1))],
            ttl_seconds: Some(LONG_TTL_S),
        };
        let keyed = WriteOptions::keyed(format!("cart-{tag}"));
        let answer = client.cart(&body, &keyed).await.unwrap();
        assert_eq!(answer.status, 201, "{:?}", answer.body);
        let cart = answer.ok().unwrap().data;
        assert_eq!(cart.status, "held");
        assert_eq!(cart.lines.len(), 2);
        assert_eq!(counts(&client, STORE, &a).await, (3, 2, 5));
        assert_eq!(counts(&client, STORE, &b).await, (2, 3, 5));
        let replay = client.cart(&body, &keyed).await.unwrap();
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.ok().unwrap().data.id, cart.id);

        // Three bad lines of four: nothing held, every bad line named, the first one's status.
        let missing = format!("cart-{tag}-missing");
        let body = CartRequest {
            lines: vec![
                line(STORE, &a, 1, None),
                line(STORE, &missing, 1, None),
                line(STORE, &c, 5, None),
                line(STORE, &b, 1, Some(1)),
            ],
            ttl_seconds: None,
        };
        let answer = client.cart(&body, &WriteOptions::default()).await.unwrap();
        let (code, details) = refused(answer, 404, "a cart with bad lines");
        assert_eq!(code, "CART_REFUSED");
        let lines = details["lines"].as_array().expect("details.lines");
        let named: Vec<(u64, &str, &str)> = lines
            .iter()
            .map(|l| {
                let sku = l["sku"].as_str().unwrap();
                (
                    l["index"].as_u64().unwrap(),
                    sku,
                    l["code"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                (1, missing.as_str(), "NOT_FOUND"),
                (2, c.as_str(), "INSUFFICIENT_STOCK"),
                (3, b.as_str(), "CONFLICT_ERROR"),
            ]
        );
        assert!(lines.iter().all(|l| l["storeId"] == STORE), "{details}");
        assert_eq!(counts(&client, STORE, &a).await, (3, 2, 5));
        assert_eq!(counts(&client, STORE, &c).await, (1, 0, 1));

        // The first cause decides the status: stock (422), a version (409).
        let stock_first = CartRequest {
            lines: vec![line(STORE, &c, 5, None), line(STORE, &missing, 1, None)],
            ttl_seconds: None,
        };
        let answer = client
            .cart(&stock_first, &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(refused(answer, 422, "stock first").0, "CART_REFUSED");
        let version_first = CartRequest {
            lines: vec![line(STORE, &c, 1, Some(9))],
            ttl_seconds: None,
        };
        let answer = client
            .cart(&version_first, &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(refused(answer, 409, "version first").0, "CART_REFUSED");

        // 1 to 100 lines; more, or none, is 400 before anything is proposed.
        for size in [0, 101] {
            let lines = (0..size)
                .map(|n| line(STORE, &format!("x{n}"), 1, None))
                .collect();
            let body = CartRequest {
                lines,
                ttl_seconds: None,
            };
            let answer = client.cart(&body, &WriteOptions::default()).await.unwrap();
            assert_eq!(refused(answer, 400, "cart size").0, "VALIDATION_ERROR");
        }
        let zero = CartRequest {
            lines: vec![line(STORE, &a, 0, None)],
            ttl_seconds: None,
        };
        let answer = client.cart(&zero, &WriteOptions::default()).await.unwrap();
        assert_eq!(refused(answer, 400, "qty 0").0, "VALIDATION_ERROR");

        // A commit acts on the whole cart.
        let none = WriteOptions::default();
        let committed = client.commit_reservation(&cart.id, &none).await.unwrap();
        assert_eq!(committed.ok().unwrap().data.status, "committed");
        assert_eq!(counts(&client, STORE, &a).await, (3, 0, 3));
        assert_eq!(counts(&client, STORE, &b).await, (2, 0, 2));

        // Without ttlSeconds, the configured default (15 minutes).
        let body = CartRequest {
            lines: vec![line(STORE, &a, 1, None)],
            ttl_seconds: None,
        };
        let default = client.cart(&body, &none).await.unwrap().ok().unwrap().data;
        assert_eq!(
            seconds_between(&default.created_at, &default.expires_at),
            900
        );
    }
}

/// Seconds from one `YYYY-MM-DDTHH:MM:SS.mmmZ` time to another on the same day.
fn seconds_between(from: &str, to: &str) -> i64 {
    let seconds = |time: &str| {
        let clock = &time[11..19];
        let parts: Vec<i64> = clock.split(':').map(|p| p.parse().unwrap()).collect();
        parts[0] * 3600 + parts[1] * 60 + parts[2]
    };
    (seconds(to) - seconds(from)).rem_euclid(86_400)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_show_a_sku_everywhere_and_page_through_a_store() {
    let (cluster, leader, follower) = cluster().await;
    let client = cluster.client(leader);
    for (store_id, quantity) in [("st-c", 3), ("st-a", 1), ("st-b", 2)] {
        create(&client, store_id, "view-1", quantity).await;
    }
    let held = client
        .hold("st-b", "view-1", 1, LONG_TTL_S, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(held.status, 201, "{:?}", held.body);
    let skus: Vec<String> = (0..5).map(|n| format!("page-{n}")).collect();
    for sku in skus.iter().rev() {
        create(&client, "pages", sku, 1).await;
    }

    for node in [leader, follower] {
        let client = cluster.client(node);
        let view = client
            .sku_view("view-1", Consistency::Linearizable)
            .await
            .unwrap();
        let view = view.ok().unwrap().data;
        let stores: Vec<&str> = view.stores.iter().map(|r| r.store_id.as_str()).collect();
        assert_eq!(stores, ["st-a", "st-b", "st-c"]);
        assert_eq!(
            (view.totals.qty, view.totals.reserved, view.totals.on_hand),
            (5, 1, 6)
        );
        let nothing = client
            .sku_view("no-such-sku", Consistency::Linearizable)
            .await;
        let nothing = nothing.unwrap().ok().unwrap().data;
        assert!(nothing.stores.is_empty());
        assert_eq!(nothing.totals.on_hand, 0);

        // Two at a time, by SKU, to the end.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = client
                .store_page(
                    "pages",
                    Some(2),
                    after.as_deref(),
                    Consistency::Linearizable,
                )
                .await
                .unwrap()
                .ok()
                .unwrap()
                .data;
            assert!(page.items.len() <= 2);
            seen.extend(page.items.into_iter().map(|r| r.sku));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
            assert!(seen.len() <= skus.len(), "paging does not end: {seen:?}");
        }
        assert_eq!(seen, skus);
        let all = client
            .store_page("pages", None, None, Consistency::Linearizable)
            .await;
        let all = all.unwrap().ok().unwrap().data;
        assert_eq!((all.items.len(), all.next), (5, None));

        for (query, what) in [
            ("limit=0", "limit 0"),
            ("limit=1001", "limit 1001"),
            ("limit=x", "limit x"),
            ("after=zz", "a cursor never given"),
            ("consistency=stale", "consistency"),
        ] {
            let path = format!(
                "{}?{query}",
                routes::STORE_VIEW.replace("{store_id}", "pages")
            );
            let answer = cluster
                .request(node, reqwest::Method::GET, &path, None, &[])
                .await;
            assert_eq!(answer.status, 400, "{what}: {answer}");
            assert_eq!(answer.json["error"]["code"], "VALIDATION_ERROR", "{answer}");
        }
        let answer = cluster
            .request(
                node,
                reqwest::Method::GET,
                "/api/inventory/skus/bad%20sku",
                None,
                &[],
            )
            .await;
        assert_eq!(answer.status, 400, "{answer}");

        // Local reads: this node's state, eventually the same.
        eventually!(format!("node {node} shows the SKU locally"), {
            let view = client.sku_view("view-1", Consistency::Local).await.unwrap();
            view.header("x-stockraft-consistency") == Some("local")
                && view.ok().is_ok_and(|v| v.data.totals.reserved == 1)
        });
        eventually!(format!("node {node} pages the store locally"), {
            let page = client
                .store_page("pages", Some(10), None, Consistency::Local)
                .await;
            page.unwrap().ok().is_ok_and(|p| p.data.items.len() == 5)
        });
    }
}

/// Runs `stockraft inv` with `args`; its exit code and standard output.
fn inv(cluster: &Cluster, node: u64, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_stockraft"))
        .arg("inv")
        .args(args)
        .args(["--node", cluster.addr(node)])
        .env_remove("STOCKRAFT_TOKEN")
        .output()
        .expect("running stockraft inv");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn inv_json(cluster: &Cluster, node: u64, args: &[&str]) -> Value {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let (code, stdout, stderr) = inv(cluster, node, &with_json);
    assert_eq!(code, 0, "inv {args:?}: {stdout} {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("inv {args:?}: not JSON: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stockraft_inv_speaks_the_api_and_exits_non_zero_on_errors() {
    let (cluster, leader, follower) = cluster().await;
    let cluster = tokio::task::spawn_blocking(move || {
        for node in [leader, follower] {
            let sku = format!("cli-{node}");
            let created = inv_json(&cluster, node, &["create", "s1", &sku, "10"]);
            assert_eq!(created["data"]["qty"], 10, "{created}");
            let adjusted = inv_json(
                &cluster,
                node,
                &["adjust", "s1", &sku, "-2", "--if-version", "1"],
            );
            assert_eq!(adjusted["newQuantity"], 8, "{adjusted}");
            let held = inv_json(
                &cluster,
                node,
                &["reserve", "s1", &sku, "3", "--ttl", "600"],
            );
            let id = held["reservationId"]
                .as_str()
                .expect("a reservation id")
                .to_owned();
            assert_eq!(held["record"]["reserved"], 3, "{held}");
            let shown = inv_json(&cluster, node, &["reservation", &id]);
            assert_eq!(shown["data"]["status"], "held", "{shown}");
            let committed = inv_json(&cluster, node, &["commit", &id]);
            assert_eq!(committed["data"]["status"], "committed", "{committed}");
            let record = inv_json(&cluster, node, &["get", "s1", &sku]);
            assert_eq!(
                (record["qty"].as_i64(), record["onHand"].as_i64()),
                (Some(5), Some(5))
            );
            let line = format!("s1:{sku}:1");
            let cart = inv_json(&cluster, node, &["cart", &line, "--ttl", "600"]);
            let cart_id = cart["data"]["id"].as_str().unwrap().to_owned();
            let released = inv_json(&cluster, node, &["release", &cart_id]);
            assert_eq!(released["data"]["status"], "released", "{released}");
            let view = inv_json(&cluster, node, &["sku", &sku]);
            assert_eq!(view["data"]["totals"]["onHand"], 5, "{view}");
            let page = inv_json(&cluster, node, &["store", "s1", "--limit", "1"]);
            assert_eq!(page["data"]["items"].as_array().unwrap().len(), 1, "{page}");

            // Tables by default; an error prints its code and exits non-zero.
            let (code, table, _) = inv(&cluster, node, &["get", "s1", &sku]);
            assert_eq!(code, 0);
            assert!(table.contains("ON HAND") && table.contains(&sku), "{table}");
            let (code, _, stderr) = inv(&cluster, node, &["release", &id]);
            assert_eq!(code, 1, "{stderr}");
            assert!(stderr.contains("RESERVATION_NOT_HELD"), "{stderr}");
            let (code, _, stderr) = inv(&cluster, node, &["get", "s1", "no-such"]);
            assert_eq!(code, 1, "{stderr}");
            assert!(stderr.contains("NOT_FOUND"), "{stderr}");
            let (code, stdout, _) = inv(&cluster, node, &["--json", "commit", "nope"]);
            assert_eq!(code, 1);
            let error: Value = serde_json::from_str(&stdout).expect("the error body as JSON");
            assert_eq!(error["error"]["code"], "VALIDATION_ERROR", "{error}");
            // A command line the CLI cannot read is a usage error (2).
            let (code, _, _) = inv(&cluster, node, &["cart", "s1-no-colons"]);
            assert_eq!(code, 2);
        }
        cluster
    })
    .await
    .unwrap();
    drop(cluster);
}
