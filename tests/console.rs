//! The operator console's server side, on real processes: the page and its files on the client
//! listener (and not on a separate peer listener), the cluster status it reads (every member's
//! health gathered by the node asked, a dead member reported, the read scope applied), and
//! `/api/whoami`. The page itself is tested in a browser: scripts/ui-test.sh.
#![cfg(not(madsim))]

mod support;

use reqwest::Method;
use serde_json::Value;
use stockraft::client::routes;
use support::{Cluster, Layout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_on_the_client_listener_only() {
    let layout = Layout {
        split: true,
        tls: false,
    };
    let cluster = Cluster::start_layout(3, "", "", layout).await;
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let page = cluster
        .request(1, Method::GET, routes::console::INDEX, None, &[])
        .await;
    assert_eq!(page.status, 200, "{page}");
    assert!(page.text.contains("<title>stockraft console</title>"));
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    // `/ui` leads to the page (a redirect, followed).
    let root = cluster
        .request(1, Method::GET, routes::console::ROOT, None, &[])
        .await;
    assert_eq!(root.text, page.text);
    let mut total = page.text.len();
    for (file, content_type) in [
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
    ] {
        let answer = cluster
            .request(1, Method::GET, &format!("/ui/{file}"), None, &[])
            .await;
        assert_eq!(answer.status, 200, "{file}: {answer}");
        assert!(
            answer
                .header("content-type")
                .unwrap()
                .starts_with(content_type),
            "{file}: {answer:?}"
        );
        total += answer.text.len();
    }
    assert!(total < 150 * 1024, "the console weighs {total} bytes");
    let missing = cluster
        .request(1, Method::GET, "/ui/nothing.js", None, &[])
        .await;
    assert_eq!(missing.status, 404);
    // The peer listener serves nodes, not browsers.
    let on_peer = reqwest::get(format!("http://{}/ui/", cluster.peer_addr(1)))
        .await
        .unwrap();
    assert_eq!(on_peer.status(), 404);
    // What the page reads from a client listener: every member, asked on its peer listener.
    eventually!("every member answering node 1's status", {
        let (code, status) = cluster.get(1, routes::STATUS).await;
        code == 200 && status["data"]["reachableVoters"] == 3
    });
    let (_, status) = cluster.get(1, routes::STATUS).await;
    assert_eq!(member(&status["data"], 2)["addr"], cluster.peer_addr(2));
}

fn member(status: &Value, id: u64) -> &Value {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member["id"] == id)
        .unwrap_or_else(|| panic!("no member {id} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_gathers_every_members_health_and_reports_a_dead_one_and_a_lost_leader() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let other = 6 - leader - follower;
    let (code, status) = cluster.get(follower, routes::STATUS).await;
    assert_eq!(code, 200, "{status}");
    let status = &status["data"];
    assert_eq!(status["servedBy"], follower);
    assert_eq!(status["leaderId"], leader);
    assert_eq!(status["voters"], 3);
    assert_eq!(status["failureTolerance"], 1);
    assert_eq!(status["problems"], serde_json::json!([]));
    for id in [1, 2, 3] {
        let member = member(status, id);
        assert_eq!(member["reachable"], true, "{member}");
        assert_eq!(member["role"], "voter");
        assert_eq!(member["raft"]["nodeId"], id, "its own health: {member}");
        assert!(member["raft"]["appliedIndex"].is_u64(), "{member}");
        assert!(member["lag"].is_u64(), "{member}");
        assert!(member["storage"]["noSpace"].is_boolean(), "{member}");
    }
    assert_eq!(member(status, leader)["raft"]["role"], "leader");

    // A dead follower: unreachable, said so, the leader unchanged.
    cluster.kill(other);
    eventually!(format!("node {other} reported unreachable"), {
        let (_, answer) = cluster.get(follower, routes::STATUS).await;
        let data = &answer["data"];
        member(data, other)["reachable"] == false
            && data["leaderId"] == leader
            && data["reachableVoters"] == 2
            && data["problems"].to_string().contains("unreachable")
    });
    // The leader dead too: no quorum, no leader, and the asked node says so at once.
    cluster.kill(leader);
    eventually!("no leader reported", {
        let (_, answer) = cluster.get(follower, routes::STATUS).await;
        let problems = answer["data"]["problems"].to_string();
        answer["data"]["leaderId"].is_null()
            && problems.contains("no leader")
            && problems.contains("only 1 of 3 voters answer")
    });
}

const TOKENS: &str = r#"
[[cluster.client_tokens]]
name = "reader"
token = "reader-token-0001"
scopes = ["read"]
[[cluster.client_tokens]]
name = "backoffice"
token = "backoffice-tok-01"
scopes = ["write", "reserve"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_names_a_tokens_scopes_and_status_needs_the_read_scope() {
    let cluster = Cluster::start_with(3, "", TOKENS).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let bearer = |token: &str| format!("Bearer {token}");
    for (token, name, scopes, status_code) in [
        ("reader-token-0001", "reader", &["read"][..], 200),
        (
            "backoffice-tok-01",
            "backoffice",
            &["write", "reserve"][..],
            403,
        ),
    ] {
        let authorization = bearer(token);
        let headers = [("authorization", authorization.as_str())];
        let me = cluster
            .request(leader, Method::GET, routes::WHOAMI, None, &headers)
            .await;
        assert_eq!(me.status, 200, "{me}");
        assert_eq!(me.json["data"]["token"], name);
        assert_eq!(me.json["data"]["scopes"], serde_json::json!(scopes));
        assert_eq!(me.json["data"]["tokensRequired"], true);
        let status = cluster
            .request(leader, Method::GET, routes::STATUS, None, &headers)
            .await;
        assert_eq!(status.status, status_code, "{token}: {status}");
    }
    let nobody = cluster
        .request(leader, Method::GET, routes::WHOAMI, None, &[])
        .await;
    assert_eq!(nobody.json["data"]["scopes"], serde_json::json!([]));
    let status = cluster
        .request(leader, Method::GET, routes::STATUS, None, &[])
        .await;
    assert_eq!(status.status, 401);
    let wrong = cluster
        .request(
            leader,
            Method::GET,
            routes::WHOAMI,
            None,
            &[("authorization", "Bearer not-a-token-at-all")],
        )
        .await;
    assert_eq!(wrong.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_whoami_grants_every_client_scope() {
    let cluster = Cluster::start(1, "").await;
    cluster.wait_for_leader(&[1]).await;
    let me = cluster
        .request(1, Method::GET, routes::WHOAMI, None, &[])
        .await;
    assert_eq!(me.status, 200, "{me}");
    assert_eq!(me.json["data"]["tokensRequired"], false);
    assert_eq!(
        me.json["data"]["scopes"],
        serde_json::json!(["read", "reserve", "write"])
    );
    assert!(me.json["data"]["token"].is_null());
}
