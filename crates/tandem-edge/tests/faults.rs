//! Faults the edge must absorb without a client noticing, and inputs it
//! must refuse cleanly: a node dying under load (no failed request), live
//! weight changes ten times a second under load (no failed request, and the
//! split follows each table), malformed requests, oversized headers and
//! bodies, slowloris clients (refused without holding up anyone else), and
//! the admin API's authorisation, validation and reload. The edge runs in
//! this process; upstreams are `common::MockNode`s. Assertions are on
//! answers and counts; load is paced but nothing asserts a duration.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tandem_edge::config::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn order(
    i: u64,
) -> (
    String,
    String,
    Vec<(String, String)>,
    String,
    Option<String>,
) {
    let account = format!("acct-{}", i % 97);
    let body = format!(
        r#"{{"market":"BTC-USD","id":"o{i}","account":"{account}","side":"buy","type":"limit","price":"1","qty":"1"}}"#
    );
    (
        "POST".into(),
        "/v1/orders".into(),
        vec![("content-type".into(), "application/json".into())],
        body,
        Some(account),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_fails_no_request() {
    let nodes = [
        MockNode::start("n0").await,
        MockNode::start("n1").await,
        MockNode::start("n2").await,
    ];
    for n in &nodes {
        // Keeps requests in flight on every node when one dies.
        n.delay_ms.store(5, Ordering::Relaxed);
    }
    let edge = TestEdge::start(
        edge_config(vec![cluster(
            "one",
            Role::Stable,
            100,
            &[
                (nodes[0].addr, "z-a"),
                (nodes[1].addr, "z-a"),
                (nodes[2].addr, "z-a"),
            ],
        )]),
        None,
    )
    .await;
    let public = edge.public;
    let load = tokio::spawn(async move {
        paced(public, 400.0, Duration::from_secs(3), Conn::Pooled, order).await
    });
    // Kill n1 once it has served a while.
    assert!(wait_until(Duration::from_secs(10), || nodes[1].hits() >= 100).await);
    let at_kill = [nodes[0].hits(), nodes[2].hits()];
    nodes[1].kill();
    let outcomes = load.await.unwrap();
    assert_no_failures("node killed under load", &outcomes);
    assert!(outcomes.len() >= 1000);
    // The survivors took the rest.
    assert!(nodes[0].hits() > at_kill[0] + 100 && nodes[2].hits() > at_kill[1] + 100);
    // The fault was real: the edge saw attempts fail on the dead node and
    // answered them from another.
    let m = edge.edge.metrics.render("");
    let upstream_errors: u64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("tandem_edge_upstream_errors_total{cluster=\"one\",version=\"0.1.0\"} ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(upstream_errors >= 1, "{m}");
}

/// One weight change as the admin client saw it.
#[derive(Debug, Clone)]
struct Change {
    heavy_first: bool,
    sent: Instant,
    done: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_changed_ten_times_a_second_under_load_fail_nothing_and_the_split_follows() {
    let a = MockNode::start("a").await;
    let b = MockNode::start("b").await;
    let edge = TestEdge::start(
        edge_config(vec![
            cluster("first", Role::Stable, 50, &[(a.addr, "z-a")]),
            cluster("second", Role::Canary, 50, &[(b.addr, "z-a")]),
        ]),
        None,
    )
    .await;
    let public = edge.public;
    // Half the requests carry an account (header), half none.
    let load = tokio::spawn(async move {
        paced(public, 400.0, Duration::from_secs(3), Conn::Pooled, |i| {
            let account = i.is_multiple_of(2).then(|| format!("acct-{}", i % 501));
            let headers = account
                .iter()
                .map(|a| ("x-tandem-account".to_string(), a.clone()))
                .collect();
            (
                "GET".into(),
                "/v1/status".into(),
                headers,
                String::new(),
                account,
            )
        })
        .await
    });
    let changes = Arc::new(Mutex::new(Vec::<Change>::new()));
    let cl = client();
    let auth = format!("Bearer {TOKEN}");
    let started = Instant::now();
    let mut k = 0u32;
    while started.elapsed() < Duration::from_millis(3100) {
        let heavy_first = k.is_multiple_of(2);
        let body = if heavy_first {
            r#"{"first":90,"second":10}"#
        } else {
            r#"{"first":10,"second":90}"#
        };
        let sent = Instant::now();
        let r = send(
            &cl,
            request(
                "PUT",
                &edge.admin_url("/admin/weights"),
                &[("authorization", &auth)],
                body,
            ),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        changes.lock().unwrap().push(Change {
            heavy_first,
            sent,
            done: Instant::now(),
        });
        k += 1;
        tokio::time::sleep_until((started + Duration::from_millis(100) * k).into()).await;
    }
    let outcomes = load.await.unwrap();
    assert_no_failures("weights changed under load", &outcomes);
    let changes = changes.lock().unwrap().clone();
    assert!(changes.len() >= 25, "{} changes", changes.len());

    let route = |heavy_first: bool, account: &str| {
        let (w0, w1) = if heavy_first { (90, 10) } else { (10, 90) };
        let c = [
            tandem_route::Cluster {
                name: "first",
                role: tandem_route::Role::Stable,
                weight: w0,
            },
            tandem_route::Cluster {
                name: "second",
                role: tandem_route::Role::Canary,
                weight: w1,
            },
        ];
        let req = tandem_route::Request {
            pin: None,
            account: Some(account.as_bytes()),
            key: 0,
        };
        c[tandem_route::route(&c, &req).unwrap()].name
    };
    // Only requests wholly inside one table's lifetime are judged: sent
    // after change k was acknowledged, answered before change k+1 was sent.
    let mut judged_accounts = 0;
    // [heavy_first as index] → (to "first", total), requests without account.
    let mut split = [(0u32, 0u32); 2];
    for o in &outcomes {
        let Some(k) = changes.iter().rposition(|c| c.done <= o.sent) else {
            continue;
        };
        if changes.get(k + 1).is_some_and(|next| o.done > next.sent) {
            continue;
        }
        let heavy_first = changes[k].heavy_first;
        let ans = o.result.as_ref().unwrap();
        match &o.account {
            Some(acct) => {
                assert_eq!(
                    ans.cluster(),
                    route(heavy_first, acct),
                    "account {acct} during change {k}"
                );
                judged_accounts += 1;
            }
            None => {
                let s = &mut split[usize::from(heavy_first)];
                s.1 += 1;
                if ans.cluster() == "first" {
                    s.0 += 1;
                }
            }
        }
    }
    assert!(judged_accounts >= 200, "{judged_accounts} judged");
    let share = |(n, t): (u32, u32)| f64::from(n) / f64::from(t.max(1));
    // ~250 draws per table: one standard deviation is about 2 points.
    assert!(split[0].1 >= 150 && split[1].1 >= 150, "{split:?}");
    assert!(share(split[1]) >= 0.8, "90/10 periods: {split:?}");
    assert!(share(split[0]) <= 0.2, "10/90 periods: {split:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_refused_cleanly() {
    let n = MockNode::start("n").await;
    let edge = TestEdge::start(
        edge_config(vec![cluster("one", Role::Stable, 100, &[(n.addr, "z-a")])]),
        None,
    )
    .await;
    let wait = Duration::from_secs(5);
    // Not HTTP at all.
    let r = raw_exchange(edge.public, b"HELLO THERE\r\n\r\n", wait).await;
    assert_eq!(raw_status(&r), Some(400), "{r:?}");
    // A bad request line and a header without a colon.
    let r = raw_exchange(
        edge.public,
        b"GET /x HTTP/1.1\r\nHost: a\r\nbroken\r\n\r\n",
        wait,
    )
    .await;
    assert_eq!(raw_status(&r), Some(400), "{r:?}");
    // Headers over the limit (8 KiB in these tests).
    let big = format!(
        "GET /v1/status HTTP/1.1\r\nhost: a\r\nx-pad: {}\r\n\r\n",
        "p".repeat(20_000)
    );
    let r = raw_exchange(edge.public, big.as_bytes(), wait).await;
    assert_eq!(raw_status(&r), Some(431), "{r:?}");
    // A body over the limit (4 KiB), announced and chunked: 413 naming it.
    let body = "x".repeat(10_000);
    let cl = client();
    let a = send(&cl, request("POST", &edge.url("/v1/orders"), &[], &body))
        .await
        .unwrap();
    assert_eq!(a.status, 413);
    assert!(a.body.contains("body"), "{}", a.body);
    let chunked = format!(
        "POST /v1/orders HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let r = raw_exchange(edge.public, chunked.as_bytes(), wait).await;
    assert_eq!(raw_status(&r), Some(413), "{r:?}");
    // Bad chunked framing.
    let r = raw_exchange(
        edge.public,
        b"POST /v1/orders HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        wait,
    )
    .await;
    assert!(
        r.is_empty() || raw_status(&r).is_some_and(|s| (400..500).contains(&s)),
        "{r:?}"
    );
    // None of it reached the node, and the edge still serves.
    assert_eq!(n.hits(), 0);
    let a = send(&cl, request("GET", &edge.url("/v1/status"), &[], ""))
        .await
        .unwrap();
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_without_holding_up_others() {
    let n = MockNode::start("n").await;
    let edge = TestEdge::start(
        edge_config(vec![cluster("one", Role::Stable, 100, &[(n.addr, "z-a")])]),
        None,
    )
    .await;
    // 50 clients, each sending one byte of a header every 100 ms (the
    // header read timeout is 1 s in these tests).
    let addr = edge.public;
    let slow: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let head = b"GET /v1/status HTTP/1.1\r\nhost: a\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                for b in head {
                    if s.write_all(&[*b]).await.is_err() {
                        return "cut off (write failed)".to_string();
                    }
                    let mut buf = [0u8; 512];
                    match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return "cut off (closed)".to_string(),
                        Ok(Ok(n)) => {
                            return format!("answered: {}", String::from_utf8_lossy(&buf[..n]))
                        }
                        Err(_) => {}
                    }
                }
                "whole slow request was accepted".to_string()
            })
        })
        .collect();
    // Meanwhile other clients are served, on new connections too.
    let outcomes = paced(addr, 100.0, Duration::from_secs(2), Conn::Fresh, |_| {
        (
            "GET".into(),
            "/v1/status".into(),
            vec![],
            String::new(),
            None,
        )
    })
    .await;
    assert_no_failures("beside slowloris clients", &outcomes);
    for s in slow {
        let how = s.await.unwrap();
        assert!(
            how.starts_with("cut off") || how.starts_with("answered: HTTP/1.1 408"),
            "a slowloris client was not cut off: {how}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_checks_the_token_and_the_weights_and_reloads() {
    let a = MockNode::start("a").await;
    let b = MockNode::start("b").await;
    let dir = std::env::temp_dir().join(format!("tandem-edge-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("edge.toml");
    let file = |w_first: u32, w_second: u32| {
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nzone = \"z-a\"\nadmin_token = \"{TOKEN}\"\n\
             [[clusters]]\nname = \"first\"\nversion = \"0.1.0\"\nrole = \"stable\"\nweight = {w_first}\n\
             nodes = [{{ addr = \"{}\", zone = \"z-a\" }}]\n\
             [[clusters]]\nname = \"second\"\nversion = \"0.2.0\"\nrole = \"canary\"\nweight = {w_second}\n\
             nodes = [{{ addr = \"{}\", zone = \"z-a\" }}]\n",
            a.addr, b.addr
        )
    };
    std::fs::write(&path, file(100, 0)).unwrap();
    let mut cfg = tandem_edge::EdgeConfig::load(Some(&path)).unwrap();
    let base = edge_config(vec![]);
    cfg.admin_token = TOKEN.into();
    cfg.health = base.health;
    let edge = TestEdge::start(cfg, Some(path.clone())).await;
    let cl = client();
    let good = format!("Bearer {TOKEN}");
    let admin = |method: &str, p: &str, auth: Option<&str>, body: &str| {
        let h: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        request(method, &edge.admin_url(p), &h, body)
    };

    // No token, a wrong one, a wrong scheme: 401, nothing changes.
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer test-token-012"),
        Some("Basic dGVzdA=="),
        Some(TOKEN),
    ] {
        for (m, p, body) in [
            ("GET", "/admin/routes", ""),
            ("PUT", "/admin/weights", r#"{"first":0,"second":100}"#),
            ("POST", "/admin/reload", ""),
        ] {
            let r = send(&cl, admin(m, p, auth, body)).await.unwrap();
            assert_eq!(r.status, 401, "{m} {p} with {auth:?}: {}", r.body);
            assert!(r.body.contains("authorization"), "{}", r.body);
        }
    }
    // /metrics and /healthz need none.
    assert_eq!(
        send(&cl, admin("GET", "/metrics", None, ""))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        send(&cl, admin("GET", "/healthz", None, ""))
            .await
            .unwrap()
            .status,
        200
    );

    // Bad weights: 400 naming the field, and the table stays.
    for (body, names) in [
        (r#"{"nope":5}"#, "weights.nope"),
        (r#"{"first":-1}"#, "body"),
        (r#"{"first":"x"}"#, "body"),
        (r#"["first",1]"#, "body"),
        (r#"{"first":0,"second":0}"#, "clusters"),
        (r#"{"first":2000000}"#, "clusters[0].weight"),
    ] {
        let r = send(&cl, admin("PUT", "/admin/weights", Some(&good), body))
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.body.contains(names),
            "{body}: {} should name {names}",
            r.body
        );
    }
    let routes = |r: &Answer| -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["weight"].as_u64().unwrap())
            .collect()
    };
    let r = send(&cl, admin("GET", "/admin/routes", Some(&good), ""))
        .await
        .unwrap();
    assert_eq!(routes(&r), vec![100, 0]);

    // A good change applies at once.
    let r = send(
        &cl,
        admin(
            "PUT",
            "/admin/weights",
            Some(&good),
            r#"{"second":100,"first":0}"#,
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(routes(&r), vec![0, 100]);
    let got = send(&cl, request("GET", &edge.url("/v1/status"), &[], ""))
        .await
        .unwrap();
    assert_eq!(got.cluster(), "second");

    // Reload: the weights set above are kept (and said so); the file's
    // come back when asked for; a broken file is refused and the table
    // stays.
    std::fs::write(&path, file(30, 70)).unwrap();
    let r = send(&cl, admin("POST", "/admin/reload", Some(&good), ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(routes(&r), vec![0, 100]);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["reload"]["weights_kept"]["first"], 0, "{}", r.body);
    let r = send(
        &cl,
        admin("POST", "/admin/reload?weights=file", Some(&good), ""),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(routes(&r), vec![30, 70]);
    std::fs::write(&path, file(0, 0)).unwrap();
    let r = send(&cl, admin("POST", "/admin/reload", Some(&good), ""))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("clusters"), "{}", r.body);
    std::fs::write(&path, "clusters = 7\n").unwrap();
    let r = send(&cl, admin("POST", "/admin/reload", Some(&good), ""))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let r = send(&cl, admin("GET", "/admin/routes", Some(&good), ""))
        .await
        .unwrap();
    assert_eq!(routes(&r), vec![30, 70]);
    let mut counts = BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        let got = send(&cl, request("GET", &edge.url("/v1/status"), &[], ""))
            .await
            .unwrap();
        *counts.entry(got.cluster().to_owned()).or_default() += 1;
    }
    assert_eq!(counts.len(), 2, "{counts:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_a_token_refuses_every_change() {
    let a = MockNode::start("a").await;
    let mut cfg = edge_config(vec![cluster("one", Role::Stable, 100, &[(a.addr, "z-a")])]);
    cfg.admin_token = String::new();
    let edge = TestEdge::start(cfg, None).await;
    let cl = client();
    for auth in ["Bearer ", "Bearer", ""] {
        let r = send(
            &cl,
            request(
                "PUT",
                &edge.admin_url("/admin/weights"),
                &[("authorization", auth)],
                r#"{"one":5}"#,
            ),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 403, "{auth:?}");
        assert!(r.body.contains("admin API disabled"), "{}", r.body);
    }
}

/// The slow-request rule times the request head only: a request whose node
/// takes longer than the header timeout (1 s here) to answer, well within
/// the upstream timeout, is answered, on a fresh and on a kept-alive
/// connection alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_answer_is_not_cut_off_by_the_header_timeout() {
    let n = MockNode::start("n").await;
    let edge = TestEdge::start(
        edge_config(vec![cluster("one", Role::Stable, 100, &[(n.addr, "z-a")])]),
        None,
    )
    .await;
    n.delay_ms.store(1_600, Ordering::Relaxed);
    let cl = client();
    for i in 0..2 {
        let started = Instant::now();
        let a = send(&cl, request("GET", &edge.url("/v1/status"), &[], ""))
            .await
            .unwrap();
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
        assert!(started.elapsed() >= Duration::from_millis(1_600));
    }
}
