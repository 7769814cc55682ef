//! Security over real processes: TLS between peers and for clients, the peer and client
//! listeners apart, scoped client tokens on every node, secrets from files and in rotation,
//! and the start-up refusals of an exposed node with weak settings.
#![cfg(not(madsim))]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use stockraft::client::routes;
use support::{Cluster, Layout, SECRET};

const CREATE_A: &str = r#"{"sku":"A","storeId":"s1","initialQuantity":100}"#;

fn follower_of(cluster: &Cluster, leader: u64) -> u64 {
    cluster.ids().into_iter().find(|id| *id != leader).unwrap()
}

/// Creates record `A` (100 units) through node `node`'s client address.
async fn create_a(cluster: &Cluster, node: u64, headers: &[(&str, &str)]) {
    let created = cluster
        .request(
            node,
            Method::POST,
            routes::INVENTORY,
            Some(CREATE_A),
            headers,
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
}

/// A client with no TLS settings of its own (plain HTTP, web roots only).
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap()
}

/// An HTTPS client trusting only the CA certificate in `ca`, presenting the certificate
/// `<identity>.pem` with its key `<identity>-key.pem` when given.
fn https_client(ca: &Path, identity: Option<&Path>) -> reqwest::Client {
    let ca = std::fs::read(ca).unwrap();
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    if let Some(prefix) = identity {
        let prefix = prefix.to_str().unwrap();
        let mut pem = std::fs::read(format!("{prefix}.pem")).unwrap();
        pem.extend(std::fs::read(format!("{prefix}-key.pem")).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_clients_get_https_followers_forward_over_tls_and_peers_demand_a_ca_signed_certificate(
) {
    let layout = Layout {
        split: true,
        tls: true,
    };
    let cluster = Cluster::start_layout(3, "", "", layout).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = follower_of(&cluster, leader);

    // A write through a follower's HTTPS client listener is forwarded to the leader over mutual
    // TLS, and committed.
    create_a(&cluster, follower, &[]).await;
    let read = cluster
        .request(leader, Method::GET, &routes::record("s1", "A"), None, &[])
        .await;
    assert_eq!(read.json["qty"], 100, "{read:?}");

    // The client listener speaks only TLS.
    let client_addr = cluster.addr(follower).to_owned();
    let plain = plain_client()
        .get(format!("http://{client_addr}/api/health"))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status().as_u16() != 200).unwrap_or(true),
        "plain HTTP must not be served on a TLS listener"
    );

    // The peer listener: no client certificate, no handshake.
    let peer = format!(
        "https://{}{}",
        cluster.peer_addr(leader),
        routes::raft::STATUS
    );
    let tls = cluster.dir.path().join("tls");
    let ca = tls.join("ca.pem");
    let no_cert = https_client(&ca, None).get(&peer).send().await;
    assert!(
        no_cert.is_err(),
        "a peer listener must refuse a client without a certificate: {no_cert:?}"
    );
    // A certificate another CA signed: no handshake either, even with the secret.
    let other = tempfile::tempdir().unwrap();
    let made = Command::new(env!("CARGO_BIN_EXE_stockraft"))
        .args(["certs", "--nodes", "1", "--out"])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let answer = https_client(&ca, Some(&other.path().join("admin")))
        .get(&peer)
        .header("x-stockraft-secret", SECRET)
        .send()
        .await;
    assert!(
        answer.is_err(),
        "a certificate of another CA must fail the handshake: {answer:?}"
    );
    // The cluster's own operator certificate without the secret: 401; with it: served.
    let operator = https_client(&ca, Some(&tls.join("admin")));
    let answer = operator.get(&peer).send().await.unwrap();
    assert_eq!(answer.status(), 401);
    let answer = operator
        .get(&peer)
        .header("x-stockraft-secret", SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // The admin CLI over TLS, with the secret from a file.
    let secret_file = cluster.dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_stockraft"))
        .args(["admin", "--node", cluster.peer_addr(follower), "--tls-dir"])
        .arg(&tls)
        .arg("--secret-file")
        .arg(&secret_file)
        .arg("status")
        .env_remove("STOCKRAFT_SECRET")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(printed.contains("leader"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_and_clients_have_listeners_of_their_own() {
    let layout = Layout {
        split: true,
        tls: false,
    };
    let cluster = Cluster::start_layout(3, "", "", layout).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = follower_of(&cluster, leader);
    let http = plain_client();

    // The client listener has no Raft routes at all.
    let answer = http
        .get(format!(
            "http://{}{}",
            cluster.addr(leader),
            routes::raft::STATUS
        ))
        .header("x-stockraft-secret", SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    // Admin routes: the secret opens them on the peer listener only; a client listener takes
    // no secret (it would go around the peer listener's certificate check).
    for (addr, expected) in [
        (cluster.addr(leader), 401),
        (cluster.peer_addr(leader), 200),
    ] {
        let answer = http
            .get(format!("http://{addr}{}", routes::CLUSTER))
            .header("x-stockraft-secret", SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), expected, "admin with the secret on {addr}");
    }
    // The peer listener serves client routes only to secret holders (nodes forwarding).
    let on_peer = format!("http://{}{}", cluster.peer_addr(leader), routes::INVENTORY);
    let answer = http
        .post(&on_peer)
        .header("content-type", "application/json")
        .body(CREATE_A)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    // A write through a follower's client listener is forwarded through the leader's peer one.
    create_a(&cluster, follower, &[]).await;
    let reserved = cluster.reserve_one(follower, "A", &[]).await;
    assert_eq!(reserved.status, 201, "{reserved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_reaches_exactly_the_route_families_of_its_scopes_on_every_node() {
    let tokens = r#"
[[cluster.client_tokens]]
name = "reader"
token = "reader-token-0001"
scopes = ["read"]
[[cluster.client_tokens]]
name = "checkout"
token = "checkout-token-01"
scopes = ["read", "reserve"]
[[cluster.client_tokens]]
name = "backoffice"
token = "backoffice-tok-01"
scopes = ["write"]
[[cluster.client_tokens]]
name = "ops"
token = "ops-token-0000001"
scopes = ["admin"]
"#;
    // The tokens go after the [cluster] keys, as their own tables.
    let cluster = Cluster::start_with(3, "", tokens).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = follower_of(&cluster, leader);
    let bearer = |token: &str| format!("Bearer {token}");
    let backoffice = bearer("backoffice-tok-01");
    create_a(&cluster, leader, &[("authorization", &backoffice)]).await;

    let record = routes::record("s1", "A");
    let reserve = routes::reserve("s1", "A");
    let adjust = routes::adjust("s1", "A");
    // (family, method, path, body)
    let families: [(&str, Method, &str, Option<&str>); 5] = [
        ("read", Method::GET, &record, None),
        ("reserve", Method::POST, &reserve, Some(r#"{"qty":1}"#)),
        ("write", Method::POST, &adjust, Some(r#"{"delta":1}"#)),
        ("admin", Method::GET, routes::CLUSTER, None),
        ("admin", Method::POST, routes::METRICS_RESET, None),
    ];
    let matrix: [(&str, &[&str]); 4] = [
        ("reader-token-0001", &["read"]),
        ("checkout-token-01", &["read", "reserve"]),
        ("backoffice-tok-01", &["write"]),
        ("ops-token-0000001", &["admin"]),
    ];
    for node in [leader, follower] {
        for (token, allowed) in matrix {
            let authorization = bearer(token);
            for (family, method, path, body) in &families {
                let answer = cluster
                    .request(
                        node,
                        method.clone(),
                        path,
                        *body,
                        &[("authorization", &authorization)],
                    )
                    .await;
                if allowed.contains(family) {
                    assert!(
                        (200..300).contains(&answer.status),
                        "{token} on {method} {path} via node {node}: {answer:?}"
                    );
                } else {
                    assert_eq!(
                        answer.status, 403,
                        "{token} on {method} {path} via node {node}: {answer:?}"
                    );
                    assert_eq!(answer.json["error"]["code"], "FORBIDDEN");
                }
            }
        }
        // No token, or an unknown one: 401 on every family.
        for (_, method, path, body) in &families {
            for headers in [&[][..], &[("authorization", "Bearer nope-nope-nope")][..]] {
                let answer = cluster
                    .request(node, method.clone(), path, *body, headers)
                    .await;
                assert_eq!(answer.status, 401, "{method} {path}: {answer:?}");
            }
        }
    }
    // Nothing a refused token tried was applied: created at 100, reserved once per node by the
    // checkout token, adjusted once per node by the backoffice token.
    let answer = cluster
        .request(
            leader,
            Method::GET,
            &record,
            None,
            &[("authorization", "Bearer reader-token-0001")],
        )
        .await;
    assert_eq!(answer.json["qty"], 100, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_belong_to_the_token_that_used_them() {
    let tokens = r#"
[[cluster.client_tokens]]
name = "shop-a"
token = "shop-a-token-0001"
scopes = ["read", "reserve", "write"]
[[cluster.client_tokens]]
name = "shop-b"
token = "shop-b-token-0001"
scopes = ["read", "reserve"]
"#;
    let cluster = Cluster::start_with(3, "", tokens).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = follower_of(&cluster, leader);
    let as_a = [("authorization", "Bearer shop-a-token-0001")];
    create_a(&cluster, leader, &as_a).await;
    let key = ("idempotency-key", "order-42");
    // Shop B takes the guessable key first; shop A's request with it is still its own.
    let b = [("authorization", "Bearer shop-b-token-0001"), key];
    let a = [as_a[0], key];
    // A client id cannot move a token's request into another scope.
    let a_posing = [as_a[0], key, ("x-client-id", "shop-b")];
    for (node, headers, replayed) in [
        (leader, &b[..], false),
        (follower, &a[..], false),
        (leader, &a[..], true),
        (follower, &a_posing[..], true),
        (follower, &b[..], true),
    ] {
        let answer = cluster.reserve_one(node, "A", headers).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        assert_eq!(
            answer.header("idempotent-replayed") == Some("true"),
            replayed,
            "{headers:?} via node {node}: {answer:?}"
        );
    }
    let read = cluster
        .request(leader, Method::GET, &routes::record("s1", "A"), None, &as_a)
        .await;
    assert_eq!(read.json["qty"], 98, "one reserve per token: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_comes_from_a_file_and_a_rotated_out_secret_is_accepted_while_listed() {
    let previous = "previous-secret-0123456789";
    let mut cluster = Cluster::configure(3, &format!("accepted_secrets = [\"{previous}\"]"), "");
    // Every node reads the secret from a file named on its command line; the configuration
    // file holds another one, to prove the file wins.
    let secret_file = cluster.dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let text = std::fs::read_to_string(&cluster.config_path).unwrap();
    std::fs::write(
        &cluster.config_path,
        text.replace(SECRET, "wrong-secret-in-the-file-0000"),
    )
    .unwrap();
    for id in 1..=3 {
        cluster.spawn_with(id, &["--secret-file", secret_file.to_str().unwrap()]);
    }
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create_a(&cluster, 1, &[]).await;
    for (secret, expected) in [
        (SECRET, 200),
        (previous, 200),
        ("wrong-secret-in-the-file-0000", 401),
    ] {
        let answer = cluster
            .request(
                leader,
                Method::GET,
                routes::CLUSTER,
                None,
                &[("x-stockraft-secret", secret)],
            )
            .await;
        assert_eq!(answer.status, expected, "{secret}: {answer:?}");
    }
}

/// Runs `stockraft serve` with `config` text and `args`; it must exit at once, unsuccessfully,
/// saying `expected`.
fn refuses_to_start(config: &str, args: &[&str], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_stockraft"))
        .args(["serve", "--id", "1", "--config"])
        .arg(&path)
        .args(args)
        .env_remove("STOCKRAFT_SECRET")
        .env_remove("STOCKRAFT_SECRET_FILE")
        .env_remove("STOCKRAFT_CLIENT_TOKEN")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{printed}");
    assert!(
        printed.contains(expected),
        "expected {expected:?} in: {printed}"
    );
}

#[test]
fn an_exposed_node_refuses_weak_secrets_and_open_client_routes() {
    // Addresses off loopback are never bound: the checks run before any socket is opened.
    let exposed = |secret: &str, extra: &str| {
        format!(
            "[cluster]\nsecret = \"{secret}\"\n{extra}\n[[nodes]]\nid = 1\naddr = \
             \"10.255.255.1:7001\"\n[storage]\ndata_dir = \"data\"\n"
        )
    };
    refuses_to_start(
        &exposed("local-dev-secret-change-me", ""),
        &[],
        "at least 16 bytes",
    );
    refuses_to_start(&exposed("short-secret1", ""), &[], "at least 16 bytes");
    refuses_to_start(
        &exposed("a-long-enough-secret-123", ""),
        &[],
        "--insecure-open-client",
    );
    // No secret anywhere: the message names where one goes.
    refuses_to_start(
        "[cluster]\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n",
        &[],
        "STOCKRAFT_SECRET_FILE",
    );
    // A secret file that is not there.
    refuses_to_start(
        "[cluster]\n[[nodes]]\nid = 1\naddr = \"127.0.0.1:1\"\n",
        &["--secret-file", "/nonexistent/secret"],
        "/nonexistent/secret",
    );
}
