//! The edge's control paths, in this process: weight writes carry a
//! generation and none is lost under concurrent writers (a stale one gets
//! 409 naming the current generation); a request is repeated on another
//! node only when that is known safe (never after it reached a node unless
//! it is a read or a deduplicated order write; never on a 4xx); nodes that
//! name different logs are reported (metric, routes); an edge without an
//! admin token says why it refuses.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tandem_edge::config::Role;

fn auth() -> String {
    format!("Bearer {TOKEN}")
}

/// `GET /admin/weights`: the generation and the weights.
async fn weights(c: &HttpClient, edge: &TestEdge) -> (u64, BTreeMap<String, u64>) {
    let a = send(
        c,
        request(
            "GET",
            &edge.admin_url("/admin/weights"),
            &[("authorization", &auth())],
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let g = v["generation"].as_u64().unwrap();
    assert_eq!(a.header("etag"), Some(format!("\"{g}\"").as_str()));
    let w = v["weights"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    (g, w)
}

async fn put_weights(
    c: &HttpClient,
    edge: &TestEdge,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let a = auth();
    let mut h = vec![("authorization", a.as_str())];
    h.extend_from_slice(headers);
    send(
        c,
        request("PUT", &edge.admin_url("/admin/weights"), &h, body),
    )
    .await
    .unwrap()
}

/// Many writers each add 1 to a weight, read-modify-write with the
/// generation they read, retrying on 409: every increment lands exactly
/// once, and the generation moved once per accepted write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_weight_writes_with_generations_lose_nothing() {
    let a = MockNode::start("a").await;
    let b = MockNode::start("b").await;
    let edge = TestEdge::start(
        edge_config(vec![
            cluster("one", Role::Stable, 1, &[(a.addr, "z-a")]),
            cluster("two", Role::Canary, 1, &[(b.addr, "z-a")]),
        ]),
        None,
    )
    .await;
    let c = client();
    let (g0, _) = weights(&c, &edge).await;
    const WRITERS: u64 = 8;
    const EACH: u64 = 10;
    let edge = Arc::new(edge);
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let (edge, c) = (Arc::clone(&edge), c.clone());
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            let mut done = 0;
            while done < EACH {
                let (g, w) = weights(&c, &edge).await;
                let body = format!(
                    r#"{{"weights":{{"one":{}}},"generation":{g}}}"#,
                    w["one"] + 1
                );
                // Half the writers name the generation in if-match instead.
                let r = if t % 2 == 0 {
                    put_weights(&c, &edge, &[], &body).await
                } else {
                    let body = format!(r#"{{"one":{}}}"#, w["one"] + 1);
                    let g = format!("\"{g}\"");
                    put_weights(&c, &edge, &[("if-match", &g)], &body).await
                };
                match r.status {
                    200 => done += 1,
                    409 => {
                        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                        assert!(v["error"].as_str().unwrap().starts_with("generation:"));
                        assert!(v["generation"].as_u64().unwrap() > g, "{}", r.body);
                        conflicts += 1;
                    }
                    s => panic!("writer {t}: {s} {}", r.body),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let (g, w) = weights(&c, &edge).await;
    assert_eq!(
        w["one"],
        1 + WRITERS * EACH,
        "increments lost ({conflicts} conflicts seen)"
    );
    assert_eq!(g, g0 + WRITERS * EACH);
    eprintln!("{conflicts} stale writes refused");
}

/// A write based on an old generation is refused with 409 naming the
/// current one, and changes nothing; body and header must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_weight_write_is_refused_with_the_current_generation() {
    let a = MockNode::start("a").await;
    let b = MockNode::start("b").await;
    let edge = TestEdge::start(
        edge_config(vec![
            cluster("one", Role::Stable, 50, &[(a.addr, "z-a")]),
            cluster("two", Role::Canary, 50, &[(b.addr, "z-a")]),
        ]),
        None,
    )
    .await;
    let c = client();
    let (g, _) = weights(&c, &edge).await;
    let r = put_weights(
        &c,
        &edge,
        &[],
        &format!(r#"{{"weights":{{"one":100,"two":0}},"generation":{g}}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["generation"].as_u64(), Some(g + 1));
    assert_eq!(v["admin_weights"]["one"].as_u64(), Some(100));
    for (headers, body) in [
        (
            vec![],
            format!(r#"{{"weights":{{"two":100}},"generation":{g}}}"#),
        ),
        (
            vec![("if-match", g.to_string())],
            r#"{"two":100}"#.to_string(),
        ),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = put_weights(&c, &edge, &h, &body).await;
        assert_eq!(r.status, 409, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["generation"].as_u64(), Some(g + 1), "{}", r.body);
        assert!(
            v["error"].as_str().unwrap().contains(&format!(
                "generation: the routes changed since generation {g}; the current generation is {}",
                g + 1
            )),
            "{}",
            r.body
        );
    }
    let r = put_weights(
        &c,
        &edge,
        &[("if-match", "5")],
        r#"{"weights":{"two":100},"generation":6}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("generation"), "{}", r.body);
    let r = put_weights(&c, &edge, &[("if-match", "x")], r#"{"two":100}"#).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("if-match"), "{}", r.body);
    let (g2, w) = weights(&c, &edge).await;
    assert_eq!(g2, g + 1);
    assert_eq!((w["one"], w["two"]), (100, 0));
}

/// Whole cluster lists follow the same generation rule, and their
/// weights count as set through the admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_list_writes_carry_the_generation_too() {
    let a = MockNode::start("a").await;
    let b = MockNode::start("b").await;
    let edge = TestEdge::start(
        edge_config(vec![cluster("one", Role::Stable, 100, &[(a.addr, "z-a")])]),
        None,
    )
    .await;
    let c = client();
    let (g, _) = weights(&c, &edge).await;
    let list = |w: u32| {
        format!(
            r#"[{{"name":"one","version":"1","role":"stable","weight":{w},"nodes":[{{"addr":"{}","zone":"z-a"}}]}},
                {{"name":"two","version":"2","role":"canary","weight":5,"nodes":[{{"addr":"{}","zone":"z-a"}}]}}]"#,
            a.addr, b.addr
        )
    };
    let put = |body: String, headers: Vec<(&'static str, String)>| {
        let c = c.clone();
        let url = edge.admin_url("/admin/clusters");
        async move {
            let a = auth();
            let mut h: Vec<(&str, &str)> = vec![("authorization", a.as_str())];
            h.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            send(&c, request("PUT", &url, &h, &body)).await.unwrap()
        }
    };
    let r = put(
        format!(r#"{{"clusters":{},"generation":{g}}}"#, list(90)),
        vec![],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = put(list(80), vec![("if-match", g.to_string())]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("\"generation\":"), "{}", r.body);
    let (g2, w) = weights(&c, &edge).await;
    assert_eq!((g2, w["one"], w["two"]), (g + 1, 90, 5));
    // Without a generation: accepted.
    let r = put(list(70), vec![]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["admin_weights"], serde_json::json!({"one": 70, "two": 5}));
}

/// One cluster, a node in the edge's zone (tried first) that fails, and a
/// good one in another zone; and the `/metrics` text.
async fn two_nodes(first: &MockNode, second: &MockNode, timeout_ms: u64) -> TestEdge {
    let mut cfg = edge_config(vec![cluster(
        "one",
        Role::Stable,
        100,
        &[(first.addr, "z-a"), (second.addr, "z-b")],
    )]);
    cfg.upstream.request_timeout_ms = timeout_ms;
    // Only the retry rule is under test: no ejection in between.
    cfg.health.eject_after_failures = 1000;
    TestEdge::start(cfg, None).await
}

/// After a request reached a node (502 or timeout), it is repeated on the
/// other node only when that is known safe; a 4xx is never repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_repeated_only_when_it_is_known_safe() {
    let bad = MockNode::start("bad").await;
    let good = MockNode::start("good").await;
    bad.mode.store(MODE_502, Ordering::Relaxed);
    let edge = two_nodes(&bad, &good, 10_000).await;
    let c = client();
    let body = r#"{"market":"M","id":"o1","account":"a1","side":"buy","price":"1","qty":"1"}"#;
    let safe = [
        ("GET", "/v1/status"),
        ("POST", "/v1/orders"),
        ("DELETE", "/v1/orders/M/o1?account=a1"),
        // After a node's 502 an amend goes on too (the node is done with
        // it; a second copy is refused by its base).
        ("PATCH", "/v1/orders/M/o1"),
    ];
    let unsafe_ = [("POST", "/v1/other"), ("PUT", "/v1/orders/M/o1")];
    for (m, p) in safe {
        let (b0, g0) = (bad.hits(), good.hits());
        let a = send(&c, request(m, &edge.url(p), &[], body)).await.unwrap();
        assert_eq!(a.status, 200, "{m} {p}: {}", a.body);
        assert_eq!(a.node(), "good", "{m} {p}");
        assert_eq!((bad.hits() - b0, good.hits() - g0), (1, 1), "{m} {p}");
    }
    for (m, p) in unsafe_ {
        let (b0, g0) = (bad.hits(), good.hits());
        let a = send(&c, request(m, &edge.url(p), &[], body)).await.unwrap();
        assert_eq!(a.status, 502, "{m} {p}: {}", a.body);
        assert_eq!(a.node(), "bad", "{m} {p}: the node's own answer");
        assert_eq!((bad.hits() - b0, good.hits() - g0), (1, 0), "{m} {p}");
    }
    // A 4xx is an answer (here: a consistency token of another log).
    bad.mode.store(MODE_400, Ordering::Relaxed);
    for (m, p) in safe {
        let (b0, g0) = (bad.hits(), good.hits());
        let a = send(
            &c,
            request(m, &edge.url(p), &[("x-tandem-min-seq", "L9:0:5")], body),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 400, "{m} {p}: {}", a.body);
        assert!(a.body.contains("x-tandem-min-seq"), "{}", a.body);
        assert_eq!((bad.hits() - b0, good.hits() - g0), (1, 0), "{m} {p}");
    }
}

/// A timeout: the node may have acted, so only safe requests go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_is_repeated_only_when_it_is_known_safe() {
    let slow = MockNode::start("slow").await;
    let good = MockNode::start("good").await;
    slow.delay_ms.store(2_000, Ordering::Relaxed);
    let edge = two_nodes(&slow, &good, 300).await;
    let c = client();
    let a = send(&c, request("POST", &edge.url("/v1/other"), &[], "{}"))
        .await
        .unwrap();
    assert_eq!(a.status, 504, "{}", a.body);
    assert!(
        a.body.contains("not known to be safe to repeat"),
        "{}",
        a.body
    );
    assert_eq!(good.hits(), 0);
    let a = send(&c, request("GET", &edge.url("/v1/status"), &[], ""))
        .await
        .unwrap();
    assert_eq!((a.status, a.node()), (200, "good"), "{}", a.body);
}

/// A request that never reached a node (connection refused) goes to
/// another whatever its method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_reached_no_node_may_always_go_to_another() {
    let good = MockNode::start("good").await;
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = edge_config(vec![cluster(
        "one",
        Role::Stable,
        100,
        &[(dead, "z-a"), (good.addr, "z-b")],
    )]);
    cfg.health.eject_after_failures = 1000;
    // No active check may mark the dead node unready before the request.
    cfg.health.interval_ms = 600_000;
    let edge = TestEdge::start(cfg, None).await;
    let c = client();
    for i in 0..3 {
        let a = send(&c, request("PUT", &edge.url("/v1/other"), &[], "{}"))
            .await
            .unwrap();
        assert_eq!((a.status, a.node()), (200, "good"), "#{i}: {}", a.body);
    }
    assert_eq!(good.hits(), 3);
}

async fn metrics(c: &HttpClient, edge: &TestEdge) -> String {
    send(c, request("GET", &edge.admin_url("/metrics"), &[], ""))
        .await
        .unwrap()
        .body
}

/// Polls `/metrics` until `f` holds for its text, at most 5 s; returns
/// whether it did and the last text.
async fn metrics_until(
    c: &HttpClient,
    edge: &TestEdge,
    f: impl Fn(&str) -> bool,
) -> (bool, String) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(c, edge).await;
        if f(&text) || std::time::Instant::now() > end {
            return (f(&text), text);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nodes naming different logs (`x-tandem-log`) show as
/// `tandem_edge_logs_distinct` above 1, one info line per node, and in the
/// routes. The first health check (at start) teaches the edge each node's
/// log; with no further checks, a change is learnt from an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_different_logs_are_reported() {
    let a = MockNode::start("a").await;
    let b = MockNode::start("b").await;
    a.set_log("log-aaaa");
    b.set_log("log-aaaa");
    let mut cfg = edge_config(vec![
        cluster("one", Role::Stable, 50, &[(a.addr, "z-a")]),
        cluster("two", Role::Canary, 50, &[(b.addr, "z-a")]),
    ]);
    cfg.health.interval_ms = 600_000;
    let edge = TestEdge::start(cfg, None).await;
    let c = client();
    let (same, text) = metrics_until(&c, &edge, |t| {
        t.contains("tandem_edge_logs_distinct{zone=\"z-a\"} 1")
            && t.matches("tandem_edge_node_log_info{").count() == 2
    })
    .await;
    assert!(same, "{text}");
    b.set_log("log-bbbb");
    let a2 = send(
        &c,
        request(
            "GET",
            &edge.url("/v1/status"),
            &[("x-dex-version", "canary")],
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        (a2.node(), a2.header("x-tandem-log")),
        ("b", Some("log-bbbb"))
    );
    let text = metrics(&c, &edge).await;
    assert!(
        text.contains("tandem_edge_logs_distinct{zone=\"z-a\"} 2"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tandem_edge_node_log_info{{zone=\"z-a\",node=\"{}\",log=\"log-bbbb\"}} 1",
            b.addr
        )),
        "{text}"
    );
    let r = send(
        &c,
        request(
            "GET",
            &edge.admin_url("/admin/routes"),
            &[("authorization", &auth())],
            "",
        ),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v["clusters"][0]["nodes"][0]["log"], "log-aaaa",
        "{}",
        r.body
    );
    assert_eq!(
        v["clusters"][1]["nodes"][0]["log"], "log-bbbb",
        "{}",
        r.body
    );
    // Back on one log: 1 again.
    b.set_log("log-aaaa");
    send(
        &c,
        request(
            "GET",
            &edge.url("/v1/status"),
            &[("x-dex-version", "canary")],
            "",
        ),
    )
    .await
    .unwrap();
    let text = metrics(&c, &edge).await;
    assert!(
        text.contains("tandem_edge_logs_distinct{zone=\"z-a\"} 1"),
        "{text}"
    );
}

/// An empty token disables the admin API, and every refusal says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_a_token_says_why_it_refuses() {
    let a = MockNode::start("a").await;
    let mut cfg = edge_config(vec![cluster("one", Role::Stable, 100, &[(a.addr, "z-a")])]);
    cfg.admin_token = String::new();
    let edge = TestEdge::start(cfg, None).await;
    let c = client();
    for (m, p) in [
        ("GET", "/admin/routes"),
        ("GET", "/admin/weights"),
        ("PUT", "/admin/weights"),
        ("POST", "/admin/reload"),
    ] {
        for auth in ["Bearer ", "Bearer x", ""] {
            let r = send(
                &c,
                request(
                    m,
                    &edge.admin_url(p),
                    &[("authorization", auth)],
                    r#"{"one":5}"#,
                ),
            )
            .await
            .unwrap();
            assert_eq!(r.status, 403, "{m} {p} {auth:?}");
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(
                v["error"],
                "admin API disabled: no admin_token set (config admin_token or TANDEM_EDGE_ADMIN_TOKEN)"
            );
        }
    }
    // What needs no token still answers.
    assert!(metrics(&c, &edge)
        .await
        .contains("tandem_edge_logs_distinct"));
}
