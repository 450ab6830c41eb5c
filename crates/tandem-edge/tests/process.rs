//! The edge as a process (`tandem edge --config FILE`), for what only a
//! process can show: replacing it under load with SIGUSR2 (the successor
//! inherits the listening sockets, the old one drains) refuses no
//! connection and fails no request, twice in a row; SIGHUP reloads the
//! clusters from the file. The client opens a new connection for every
//! request, so a refused or reset connection would show. Weights set
//! through the admin API survive both SIGHUP (which applies the token and
//! the body limit live and names what needs a restart) and SIGUSR2 (the
//! successor takes them with their generation); an edge without an admin
//! token, or routing to nodes on different logs, says so in its log.
//!
//! Needs the `tandem` binary (`cargo build -p tandem-cli`, or
//! `TANDEM_BIN=/path/to/tandem`); without it each test says so and passes
//! vacuously.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tandem_control::supervise::Supervised;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn config_text(
    public: SocketAddr,
    admin: SocketAddr,
    nodes: &[&MockNode],
    weights: &[u32],
) -> String {
    let mut s = format!(
        "listen = \"{public}\"\nadmin_listen = \"{admin}\"\nadmin_token = \"{TOKEN}\"\nzone = \"z-a\"\ndrain_timeout_secs = 5\n\
         [health]\ninterval_ms = 100\ntimeout_ms = 200\n"
    );
    for (i, (n, w)) in nodes.iter().zip(weights).enumerate() {
        s.push_str(&format!(
            "[[clusters]]\nname = \"c{i}\"\nversion = \"0.1.0\"\nrole = \"stable\"\nweight = {w}\nnodes = [{{ addr = \"{}\", zone = \"z-a\" }}]\n",
            n.addr
        ));
    }
    s
}

/// A running `tandem edge` process and its files.
struct EdgeProcess {
    /// The first process (its successors are not its children).
    proc_: Supervised,
    dir: PathBuf,
    admin: SocketAddr,
    public: SocketAddr,
}

impl EdgeProcess {
    async fn start(
        bin: &Path,
        name: &str,
        text: impl Fn(SocketAddr, SocketAddr) -> String,
    ) -> EdgeProcess {
        let dir = std::env::temp_dir().join(format!("tandem-edge-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (public, admin) = (free_addr(), free_addr());
        std::fs::write(dir.join("edge.toml"), text(public, admin)).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["edge", "--config"])
            .arg(dir.join("edge.toml"))
            .env_remove("TANDEM_EDGE_ADMIN_TOKEN");
        let mut proc_ =
            Supervised::start_logged(name, cmd, &dir.join("edge.log")).expect("start tandem edge");
        let c = client();
        let ready = proc_
            .wait_ready_async(Duration::from_secs(10), || {
                let c = c.clone();
                async move {
                    send(
                        &c,
                        request("GET", &format!("http://{admin}/healthz"), &[], ""),
                    )
                    .await
                    .is_ok_and(|a| a.status == 200)
                }
            })
            .await;
        if let Err(e) = ready {
            panic!("the edge did not come up: {e}");
        }
        EdgeProcess {
            proc_,
            dir,
            admin,
            public,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("edge.log")).unwrap_or_default()
    }

    /// The pid serving the admin listener now, and the cluster weights.
    async fn routes(&self) -> (u64, Vec<u64>) {
        let r = send(
            &client(),
            request(
                "GET",
                &format!("http://{}/admin/routes", self.admin),
                &[("authorization", &format!("Bearer {TOKEN}"))],
                "",
            ),
        )
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let w = v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["weight"].as_u64().unwrap())
            .collect();
        (v["pid"].as_u64().unwrap(), w)
    }
}

fn signal(pid: u64, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        // The supervisor kills and reaps the process when it drops.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_edge_process_under_load_refuses_nothing() {
    let Some(bin) = tandem_bin() else {
        eprintln!("SKIPPED: no tandem binary; run `cargo build -p tandem-cli` or set TANDEM_BIN");
        return;
    };
    let nodes = [MockNode::start("n0").await, MockNode::start("n1").await];
    let mut p = EdgeProcess::start(&bin, "handover", |pu, ad| {
        config_text(pu, ad, &[&nodes[0], &nodes[1]], &[50, 50])
    })
    .await;
    let (first_pid, _) = p.routes().await;
    assert_eq!(u64::from(p.proc_.pid()), first_pid);
    let public = p.public;
    // A new connection per request, 300 a second, while the process is
    // replaced twice.
    let load = tokio::spawn(async move {
        paced(public, 300.0, Duration::from_secs(5), Conn::Fresh, |i| {
            (
                "POST".into(),
                "/v1/orders".into(),
                vec![],
                format!(r#"{{"market":"M","id":"o{i}","account":"a{}"}}"#, i % 50),
                None,
            )
        })
        .await
    });
    let mut pids = vec![first_pid];
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let old = *pids.last().unwrap();
        signal(old, "USR2");
        let mut new = old;
        for _ in 0..500 {
            new = p.routes().await.0;
            if new != old {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_ne!(
            new,
            old,
            "round {round}: no successor took over: {}",
            p.log()
        );
        pids.push(new);
    }
    let outcomes = load.await.unwrap();
    let last = *pids.last().unwrap();
    let log = p.log();
    signal(last, "TERM");
    assert_no_failures(
        &format!("edge replaced twice (pids {pids:?}); log:\n{log}\n"),
        &outcomes,
    );
    assert!(outcomes.len() >= 1400);
    // The first process drained and exited by itself.
    let exited = wait_until(Duration::from_secs(10), || p.proc_.try_exit().is_some()).await;
    assert!(exited, "the replaced edge did not exit: {log}");
    assert!(log.contains("handed over"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_clusters_from_the_file() {
    let Some(bin) = tandem_bin() else {
        eprintln!("SKIPPED: no tandem binary; run `cargo build -p tandem-cli` or set TANDEM_BIN");
        return;
    };
    let nodes = [MockNode::start("n0").await, MockNode::start("n1").await];
    let p = EdgeProcess::start(&bin, "sighup", |pu, ad| {
        config_text(pu, ad, &[&nodes[0], &nodes[1]], &[100, 0])
    })
    .await;
    let (pid, w) = p.routes().await;
    assert_eq!(w, vec![100, 0]);
    let path = p.dir.join("edge.toml");
    let reload_to =
        |weights: &[u32]| config_text(p.public, p.admin, &[&nodes[0], &nodes[1]], weights);
    std::fs::write(&path, reload_to(&[0, 100])).unwrap();
    signal(pid, "HUP");
    let mut got = w;
    for _ in 0..500 {
        got = p.routes().await.1;
        if got == [0, 100] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(got, vec![0, 100], "{}", p.log());
    let c = client();
    let a = send(
        &c,
        request("GET", &format!("http://{}/v1/status", p.public), &[], ""),
    )
    .await
    .unwrap();
    assert_eq!(a.cluster(), "c1");
    // A broken file is refused (logged) and the routes stay.
    std::fs::write(&path, "config_version = 1\n[[clusters]]\nname = 3\n").unwrap();
    signal(pid, "HUP");
    let refused = wait_until(Duration::from_secs(5), || p.log().contains("reload failed")).await;
    assert!(refused, "{}", p.log());
    assert_eq!(p.routes().await, (pid, vec![0, 100]));
}

/// Like `config_text`, with `top` (top-level keys, the admin token
/// included) and `tail` (more tables) of the test's choosing.
fn config_text_with(
    public: SocketAddr,
    admin: SocketAddr,
    nodes: &[&MockNode],
    weights: &[u32],
    top: &str,
    tail: &str,
) -> String {
    let mut s = format!(
        "listen = \"{public}\"\nadmin_listen = \"{admin}\"\nzone = \"z-a\"\n{top}\
         [health]\ninterval_ms = 100\ntimeout_ms = 200\n{tail}"
    );
    for (i, (n, w)) in nodes.iter().zip(weights).enumerate() {
        s.push_str(&format!(
            "[[clusters]]\nname = \"c{i}\"\nversion = \"0.1.0\"\nrole = \"stable\"\nweight = {w}\nnodes = [{{ addr = \"{}\", zone = \"z-a\" }}]\n",
            n.addr
        ));
    }
    s
}

/// An admin request with `token`.
async fn admin_call(
    admin: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Answer {
    send(
        &client(),
        request(
            method,
            &format!("http://{admin}{path}"),
            &[("authorization", &format!("Bearer {token}"))],
            body,
        ),
    )
    .await
    .unwrap()
}

/// `GET /admin/weights`: the generation, the weights in cluster order and
/// the admin-set ones.
async fn weights_of(admin: SocketAddr, token: &str) -> (u64, Vec<u64>, serde_json::Value) {
    let a = admin_call(admin, token, "GET", "/admin/weights", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let w = v["weights"]
        .as_object()
        .unwrap()
        .values()
        .map(|w| w.as_u64().unwrap())
        .collect();
    (
        v["generation"].as_u64().unwrap(),
        w,
        v["admin_weights"].clone(),
    )
}

/// The first JSON log line containing `needle`, parsed.
fn log_line(log: &str, needle: &str) -> Option<serde_json::Value> {
    log.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| serde_json::from_str(l).ok())
}

/// An admin rollback (100/0) survives a SIGHUP whose file says 0/100; the
/// same reload applies the new admin token and body limit live, and its
/// log line names what it applied, what needs a restart and the weights
/// it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_admin_weights_and_applies_the_token_and_body_limit() {
    let Some(bin) = tandem_bin() else {
        eprintln!("SKIPPED: no tandem binary; run `cargo build -p tandem-cli` or set TANDEM_BIN");
        return;
    };
    let nodes = [MockNode::start("n0").await, MockNode::start("n1").await];
    let top = format!("admin_token = \"{TOKEN}\"\ndrain_timeout_secs = 5\n");
    let p = EdgeProcess::start(&bin, "sighup-admin", |pu, ad| {
        config_text_with(pu, ad, &[&nodes[0], &nodes[1]], &[50, 50], &top, "")
    })
    .await;
    let (g0, w, _) = weights_of(p.admin, TOKEN).await;
    assert_eq!(w, vec![50, 50]);
    let r = admin_call(
        p.admin,
        TOKEN,
        "PUT",
        "/admin/weights",
        &format!(r#"{{"weights":{{"c0":100,"c1":0}},"generation":{g0}}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The file moves on: other weights, a new token, a smaller body limit,
    // and a drain timeout (which needs a restart).
    let new_token = "new-token-4567";
    std::fs::write(
        p.dir.join("edge.toml"),
        config_text_with(
            p.public,
            p.admin,
            &[&nodes[0], &nodes[1]],
            &[0, 100],
            &format!("admin_token = \"{new_token}\"\ndrain_timeout_secs = 7\n"),
            "[limits]\nmax_body_bytes = 64\n",
        ),
    )
    .unwrap();
    let (pid, _) = p.routes().await;
    signal(pid, "HUP");
    let reloaded = wait_until(Duration::from_secs(10), || {
        p.log().contains("config reloaded")
    })
    .await;
    let log = p.log();
    assert!(reloaded, "{log}");
    let line = log_line(&log, "config reloaded").unwrap();
    assert_eq!(
        line["applied"],
        serde_json::json!(["admin_token", "clusters", "limits.max_body_bytes"]),
        "{log}"
    );
    assert_eq!(
        line["needs_restart"],
        serde_json::json!(["drain_timeout_secs"]),
        "{log}"
    );
    assert_eq!(
        line["weights_kept"],
        serde_json::json!({"c0": 100, "c1": 0}),
        "{log}"
    );
    assert!(
        !log.contains(new_token),
        "the token must not be logged: {log}"
    );
    // The rollback stands; the old token is refused, the new one works.
    let old = admin_call(p.admin, TOKEN, "GET", "/admin/weights", "").await;
    assert_eq!(old.status, 401, "{}", old.body);
    let (g, w, kept) = weights_of(p.admin, new_token).await;
    assert_eq!(w, vec![100, 0], "{log}");
    assert_eq!(g, g0 + 2);
    assert_eq!(kept, serde_json::json!({"c0": 100, "c1": 0}));
    // The body limit applies at once.
    let big = format!(
        r#"{{"market":"M","id":"o1","account":"a","pad":"{}"}}"#,
        "x".repeat(100)
    );
    let a = send(
        &client(),
        request("POST", &format!("http://{}/v1/orders", p.public), &[], &big),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 413, "{}", a.body);
}

/// The successor of a SIGUSR2 hand-over serves the weights the admin API
/// set in its predecessor, at the same generation, so a write based on it
/// still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_keeps_admin_weights_and_their_generation() {
    let Some(bin) = tandem_bin() else {
        eprintln!("SKIPPED: no tandem binary; run `cargo build -p tandem-cli` or set TANDEM_BIN");
        return;
    };
    let nodes = [MockNode::start("n0").await, MockNode::start("n1").await];
    let mut p = EdgeProcess::start(&bin, "usr2-admin", |pu, ad| {
        config_text(pu, ad, &[&nodes[0], &nodes[1]], &[50, 50])
    })
    .await;
    let r = admin_call(
        p.admin,
        TOKEN,
        "PUT",
        "/admin/weights",
        r#"{"c0":100,"c1":0}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (g, w, kept) = weights_of(p.admin, TOKEN).await;
    assert_eq!(w, vec![100, 0]);
    let (old, _) = p.routes().await;
    signal(old, "USR2");
    let mut new = old;
    for _ in 0..500 {
        new = p.routes().await.0;
        if new != old {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(new, old, "no successor took over: {}", p.log());
    let (g2, w2, kept2) = weights_of(p.admin, TOKEN).await;
    assert_eq!((g2, w2, kept2), (g, vec![100, 0], kept), "{}", p.log());
    let r = admin_call(
        p.admin,
        TOKEN,
        "PUT",
        "/admin/weights",
        &format!(r#"{{"weights":{{"c1":10}},"generation":{g}}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["pid"],
        new
    );
    let exited = wait_until(Duration::from_secs(10), || p.proc_.try_exit().is_some()).await;
    let log = p.log();
    signal(new, "TERM");
    assert!(exited, "the replaced edge did not exit: {log}");
    assert!(log.contains("weights taken from the predecessor"), "{log}");
}

/// No admin token: a warning at start and a refusal that says why. Nodes
/// on different logs: a warning naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_warns_without_an_admin_token_and_about_nodes_on_different_logs() {
    let Some(bin) = tandem_bin() else {
        eprintln!("SKIPPED: no tandem binary; run `cargo build -p tandem-cli` or set TANDEM_BIN");
        return;
    };
    let nodes = [MockNode::start("n0").await, MockNode::start("n1").await];
    nodes[0].set_log("log-one");
    nodes[1].set_log("log-two");
    let p = EdgeProcess::start(&bin, "warnings", |pu, ad| {
        config_text_with(pu, ad, &[&nodes[0], &nodes[1]], &[50, 50], "", "")
    })
    .await;
    let warned = wait_until(Duration::from_secs(10), || {
        p.log().contains("different logs")
    })
    .await;
    let log = p.log();
    assert!(warned, "{log}");
    let token = log_line(&log, "admin API disabled").expect("a start-up warning");
    assert_eq!(token["level"], "warn", "{log}");
    let logs = log_line(&log, "different logs").unwrap();
    assert_eq!(logs["level"], "warn", "{log}");
    assert_eq!(logs["logs_distinct"], 2, "{log}");
    assert_eq!(logs["logs"][nodes[1].addr.to_string()], "log-two", "{log}");
    let r = admin_call(p.admin, "", "GET", "/admin/routes", "").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("no admin_token set"), "{}", r.body);
}
