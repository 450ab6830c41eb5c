//! The edge's routing rules, end to end over loopback: `x-dex-version`
//! pins to a cluster of that role; an account (header, query or JSON body)
//! always lands on the cluster `tandem_route::route` names for the same
//! weights; requests without an account split by weight; inside a cluster
//! the node of the edge's own zone is preferred while it is healthy; a node
//! whose `/readyz` fails gets nothing new; a node that keeps failing is
//! ejected. Upstreams are small servers answering like a node
//! (`common::MockNode`); every assertion is on answers and counts, none on
//! timing.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tandem_edge::config::Role;

fn route_name(weights: &[(&'static str, Role, u32)], account: &str) -> &'static str {
    let clusters: Vec<tandem_route::Cluster<'_>> = weights
        .iter()
        .map(|(n, r, w)| tandem_route::Cluster {
            name: n,
            role: match r {
                Role::Stable => tandem_route::Role::Stable,
                Role::Canary => tandem_route::Role::Canary,
            },
            weight: *w,
        })
        .collect();
    let req = tandem_route::Request {
        pin: None,
        account: Some(account.as_bytes()),
        key: 0,
    };
    weights[tandem_route::route(&clusters, &req).expect("a cluster")].0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_dex_version_pins_to_a_cluster_of_that_role() {
    let s = MockNode::start("s").await;
    let c = MockNode::start("c").await;
    let edge = TestEdge::start(
        edge_config(vec![
            cluster("stable-1", Role::Stable, 100, &[(s.addr, "z-a")]),
            cluster("canary-1", Role::Canary, 0, &[(c.addr, "z-a")]),
        ]),
        None,
    )
    .await;
    let cl = client();
    for i in 0..40 {
        let account = format!("acct-{i}");
        for (pin, want) in [
            ("canary", "canary-1"),
            ("stable", "stable-1"),
            (" Canary ", "canary-1"),
        ] {
            let a = send(
                &cl,
                request(
                    "GET",
                    &edge.url(&format!("/v1/orders/M/{i}?account={account}")),
                    &[("x-dex-version", pin)],
                    "",
                ),
            )
            .await
            .unwrap();
            assert_eq!(a.status, 200);
            assert_eq!(a.cluster(), want, "pin {pin:?}");
        }
        // Unpinned (or an unknown pin): never the weight-0 canary.
        for h in [vec![], vec![("x-dex-version", "beta")]] {
            let a = send(&cl, request("GET", &edge.url("/v1/status"), &h, ""))
                .await
                .unwrap();
            assert_eq!(a.cluster(), "stable-1");
        }
    }
    assert_eq!(c.hits(), 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_stays_on_the_cluster_the_routing_function_names() {
    let nodes = [
        MockNode::start("a").await,
        MockNode::start("b").await,
        MockNode::start("c").await,
    ];
    let weights = [
        ("aws", Role::Stable, 50),
        ("gcp", Role::Canary, 30),
        ("azure", Role::Stable, 20),
    ];
    let edge = TestEdge::start(
        edge_config(
            weights
                .iter()
                .zip(&nodes)
                .map(|((n, r, w), node)| cluster(n, *r, *w, &[(node.addr, "z-a")]))
                .collect(),
        ),
        None,
    )
    .await;
    let cl = client();
    let mut per_cluster = BTreeMap::<&str, u32>::new();
    for i in 0..300 {
        let account = format!("trader-{i}");
        let want = route_name(&weights, &account);
        *per_cluster.entry(want).or_default() += 1;
        let by_header = request(
            "GET",
            &edge.url("/v1/markets/BTC-USD/book"),
            &[("x-tandem-account", &account)],
            "",
        );
        let by_query = request(
            "DELETE",
            &edge.url(&format!(
                "/v1/orders/BTC-USD/o{i}?depth=1&account={account}"
            )),
            &[],
            "",
        );
        let body = format!(
            r#"{{"market":"BTC-USD","id":"o{i}","account":"{account}","side":"buy","type":"limit","price":"1","qty":"1"}}"#
        );
        let by_body = request(
            "POST",
            &edge.url("/v1/orders"),
            &[("content-type", "application/json")],
            &body,
        );
        for (how, req) in [
            ("header", by_header),
            ("query", by_query),
            ("body", by_body),
        ] {
            let a = send(&cl, req).await.unwrap();
            assert_eq!(a.status, 200, "{how}");
            assert_eq!(a.cluster(), want, "account {account} by {how}");
        }
    }
    // The weights were really in play: every cluster got some accounts.
    assert_eq!(per_cluster.len(), 3, "{per_cluster:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_an_account_split_by_weight() {
    let a = MockNode::start("a").await;
    let b = MockNode::start("b").await;
    let z = MockNode::start("z").await;
    let edge = TestEdge::start(
        edge_config(vec![
            cluster("big", Role::Stable, 80, &[(a.addr, "z-a")]),
            cluster("small", Role::Canary, 20, &[(b.addr, "z-a")]),
            cluster("off", Role::Stable, 0, &[(z.addr, "z-a")]),
        ]),
        None,
    )
    .await;
    let cl = client();
    let mut counts = BTreeMap::<String, u32>::new();
    let n = 2000;
    for _ in 0..n {
        let r = send(&cl, request("GET", &edge.url("/v1/status"), &[], ""))
            .await
            .unwrap();
        *counts.entry(r.cluster().to_owned()).or_default() += 1;
    }
    let big = f64::from(counts.get("big").copied().unwrap_or(0)) / f64::from(n);
    // 2000 draws at p = 0.8: one standard deviation is 0.9 point.
    assert!((0.75..=0.85).contains(&big), "{counts:?}");
    assert_eq!(counts.get("off"), None, "{counts:?}");
    assert_eq!(z.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_in_the_edge_zone_is_preferred_while_it_is_ready() {
    let near = MockNode::start("near").await;
    let far1 = MockNode::start("far1").await;
    let far2 = MockNode::start("far2").await;
    let edge = TestEdge::start(
        edge_config(vec![cluster(
            "one",
            Role::Stable,
            100,
            &[(far1.addr, "z-b"), (near.addr, "z-a"), (far2.addr, "z-c")],
        )]),
        None,
    )
    .await;
    let cl = client();
    let get = || request("GET", &edge.url("/v1/status"), &[], "");
    for _ in 0..100 {
        assert_eq!(send(&cl, get()).await.unwrap().node(), "near");
    }
    // Draining: /readyz answers 503; once the edge's check saw it, the
    // node gets nothing new and the far nodes take the traffic.
    near.ready.store(false, Ordering::Relaxed);
    let state = edge.edge.routes.node_states();
    let near_state = state
        .iter()
        .find(|s| s.addr == near.addr.to_string())
        .unwrap()
        .clone();
    assert!(
        wait_until(Duration::from_secs(5), || !near_state
            .ready
            .load(Ordering::Relaxed))
        .await
    );
    let before = near.hits();
    let mut far = BTreeMap::<String, u32>::new();
    for _ in 0..100 {
        let a = send(&cl, get()).await.unwrap();
        assert_eq!(a.status, 200);
        *far.entry(a.node().to_owned()).or_default() += 1;
    }
    assert_eq!(near.hits(), before, "a draining node got new requests");
    assert_eq!(far.len(), 2, "both far nodes serve: {far:?}");
    // Ready again: back to the near node.
    near.ready.store(true, Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(5), || near_state
            .ready
            .load(Ordering::Relaxed))
        .await
    );
    for _ in 0..20 {
        assert_eq!(send(&cl, get()).await.unwrap().node(), "near");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_failing_in_a_row_is_ejected_and_its_requests_retried() {
    let bad = MockNode::start("bad").await;
    let good = MockNode::start("good").await;
    let mut cfg = edge_config(vec![cluster(
        "one",
        Role::Stable,
        100,
        &[(bad.addr, "z-a"), (good.addr, "z-b")],
    )]);
    cfg.health.eject_ms = 60_000;
    let edge = TestEdge::start(cfg, None).await;
    // Answers 502 to requests while its /readyz stays 200: only passive
    // detection can find it.
    bad.mode.store(MODE_502, Ordering::Relaxed);
    let cl = client();
    for i in 0..60 {
        let a = send(
            &cl,
            request(
                "POST",
                &edge.url("/v1/orders"),
                &[],
                &format!(r#"{{"market":"M","id":"x{i}","account":"a{i}"}}"#),
            ),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
        assert_eq!(a.node(), "good");
    }
    // eject_after_failures = 3: the third failure in a row ejects it.
    assert_eq!(bad.hits(), 3);
    // Ejection also marks it not ready until an active check (every 50 ms
    // here) passes again; its /readyz answers 200, so one soon does, and it
    // stays ejected all the while.
    let mut polls = 0;
    let v = loop {
        let routes = send(
            &cl,
            request(
                "GET",
                &edge.admin_url("/admin/routes"),
                &[("authorization", &format!("Bearer {TOKEN}"))],
                "",
            ),
        )
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&routes.body).unwrap();
        assert_eq!(v["clusters"][0]["nodes"][0]["ejected"], true, "{v}");
        polls += 1;
        if v["clusters"][0]["nodes"][0]["ready"] == true || polls == 100 {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let nodes = &v["clusters"][0]["nodes"];
    assert_eq!(nodes[0]["ready"], true, "{v}");
    assert_eq!(nodes[1]["ejected"], false, "{v}");
    let metrics = send(&cl, request("GET", &edge.admin_url("/metrics"), &[], ""))
        .await
        .unwrap();
    assert!(
        metrics.body.contains(
            "tandem_edge_ejections_total{zone=\"z-a\",cluster=\"one\",version=\"0.1.0\"} 1"
        ),
        "{}",
        metrics.body
    );
}
