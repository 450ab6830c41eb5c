//! Consistency across nodes and logs, against nodes run in this process
//! (`Node::start_with_logs` over file logs opened here, so that two nodes
//! can share one log): the consistency token names its log and is refused
//! by a node of another log; cancels and amends are idempotent like
//! places, on the node that answered and on another node of the same log;
//! a request that panics while holding the partition's state leaves the
//! node answering correctly; a dead appender makes the node unready.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{event_names, place_body, request, Resp, TempDir};
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log, LogError, Record};
use tandem_node::{Node, NodeConfig};

/// A node served in this process on its own runtime.
struct TestNode {
    addr: SocketAddr,
    node: Arc<Node>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    rt: tokio::runtime::Runtime,
}

/// Test defaults: data in `dir`, short waits, no rate limit.
fn config(dir: &TempDir, name: &str) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: dir.path().join(name),
        node: name.into(),
        ..NodeConfig::default()
    };
    c.log.fsync = false;
    c.limits.wait_ms = 1_500;
    c.limits.account_rate = 0;
    c.http.drain_timeout_secs = 5;
    c
}

/// A file log in `dir/name` without fsync.
fn file_log(dir: &TempDir, name: &str) -> Arc<dyn Log> {
    let fc = FileLogConfig {
        fsync: FsyncPolicy::Never,
        ..FileLogConfig::default()
    };
    Arc::new(FileLog::open(dir.path().join(name), fc).expect("open file log"))
}

impl TestNode {
    /// Starts a node over `log` and waits until it is caught up.
    fn start(cfg: NodeConfig, log: Arc<dyn Log>) -> TestNode {
        let (rt, listener, addr) = common::runtime_and_listener();
        let node = Node::start_with_logs(cfg, vec![log]).expect("start node");
        let tx = common::serve_node(&rt, listener, &node);
        common::wait_caught_up(&node);
        TestNode {
            addr,
            node,
            shutdown: Some(tx),
            rt,
        }
    }

    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let r = request(self.addr, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        if r.status >= 400 {
            r.error();
        }
        r
    }

    fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], b"")
    }

    fn post(&self, body: &str) -> Resp {
        self.call("POST", "/v1/orders", &[], body.as_bytes())
    }

    /// Polls `GET path` until its status is `status`; fails at `within`.
    fn wait_status(&self, path: &str, status: u16, within: Duration) -> Resp {
        let deadline = Instant::now() + within;
        loop {
            let r = self.get(path);
            if r.status == status {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{path} still {r} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let node = Arc::clone(&self.node);
        self.rt.block_on(async move {
            let _ = tokio::task::spawn_blocking(move || node.stop()).await;
        });
    }
}

// ---- the consistency token names its log -----------------------------------

/// `P:N@L`: the log's short id is 16 hex digits.
fn split_token(t: &str) -> (u32, u64, String) {
    let (pn, log) = t.split_once('@').unwrap_or_else(|| panic!("no @ in {t}"));
    let (p, n) = pn.split_once(':').unwrap_or_else(|| panic!("no : in {t}"));
    assert_eq!(log.len(), 16, "{t}");
    assert!(log.bytes().all(|b| b.is_ascii_hexdigit()), "{t}");
    (p.parse().unwrap(), n.parse().unwrap(), log.to_owned())
}

#[test]
fn every_answer_names_the_log_and_status_shows_it() {
    let dir = TempDir::new("tok-status");
    let n = TestNode::start(config(&dir, "a"), file_log(&dir, "log-a"));
    let st = n.get("/v1/status");
    assert_eq!(st.status, 200, "{st}");
    let v = st.json();
    let log = v["partitions"][0]["log"].as_str().expect("log").to_owned();
    assert!(log.starts_with("file:"), "{v}");
    let id = v["partitions"][0]["log_id"]
        .as_str()
        .expect("log_id")
        .to_owned();
    assert_eq!(v["log_id"].as_str(), Some(id.as_str()), "{v}");
    let r = n.post(&place_body("M", "o1", "acc", "buy", "10", "1"));
    assert_eq!(r.status, 200, "{r}");
    for r in [
        r,
        n.get("/healthz"),
        n.get("/readyz"),
        n.get("/v1/status"),
        n.get("/nowhere"),
    ] {
        assert_eq!(r.header("x-tandem-log"), Some(id.as_str()), "{r}");
        let (p, _, l) = split_token(r.header("x-tandem-seq").expect("token"));
        assert_eq!((p, l.as_str()), (0, id.as_str()), "{r}");
    }
}

#[test]
fn a_token_of_another_log_is_refused_and_the_old_form_still_works() {
    let dir = TempDir::new("tok-other");
    let a = TestNode::start(config(&dir, "a"), file_log(&dir, "log-a"));
    let b = TestNode::start(config(&dir, "b"), file_log(&dir, "log-b"));
    // Far ahead of b: before the fix b took it as its own and waited (503)
    // or, behind it, answered 404 for orders of a.
    for i in 0..5 {
        let r = a.post(&place_body("M", &format!("o{i}"), "acc", "buy", "10", "1"));
        assert_eq!(r.status, 200, "{r}");
    }
    let r = a.get("/v1/orders/M/o4?account=acc");
    assert_eq!(r.status, 200, "{r}");
    let token = r.header("x-tandem-seq").unwrap().to_owned();
    let started = Instant::now();
    let r = b.call(
        "GET",
        "/v1/orders/M/o4?account=acc",
        &[("x-tandem-min-seq", &token)],
        b"",
    );
    assert_eq!(r.status, 400, "{r}");
    let e = r.error();
    assert!(
        e.starts_with("x-tandem-min-seq:") && e.contains("another log"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "refused at once, not after waiting"
    );
    // The same token on its own log is met.
    let r = a.call(
        "GET",
        "/v1/orders/M/o4?account=acc",
        &[("x-tandem-min-seq", &token)],
        b"",
    );
    assert_eq!(r.status, 200, "{r}");
    // The older form without a log id is accepted, unchecked.
    let (p, n, _) = split_token(&token);
    let old = format!("{p}:{n}");
    let r = a.call(
        "GET",
        "/v1/markets/M/book",
        &[("x-tandem-min-seq", &old)],
        b"",
    );
    assert_eq!(r.status, 200, "{r}");
    // A malformed log id is a 400 naming the header.
    for bad in [format!("{p}:{n}@xyz"), format!("{p}:{n}@")] {
        let r = a.call(
            "GET",
            "/v1/markets/M/book",
            &[("x-tandem-min-seq", &bad)],
            b"",
        );
        assert_eq!(r.status, 400, "{r}");
        assert!(r.error().starts_with("x-tandem-min-seq:"), "{r}");
    }
}

// ---- cancels and amends are idempotent --------------------------------------

/// Places `id` (a resting buy of 1 at 10) for `account`.
fn rest(n: &TestNode, id: &str, account: &str) -> Resp {
    let r = n.post(&place_body("M", id, account, "buy", "10", "1"));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(event_names(&r.json()), ["accepted"], "{r}");
    r
}

#[test]
fn a_repeated_cancel_answers_the_original_and_another_account_does_not_repeat_it() {
    let dir = TempDir::new("cancel-repeat");
    let n = TestNode::start(config(&dir, "a"), file_log(&dir, "log"));
    rest(&n, "o1", "acc");
    let first = n.call("DELETE", "/v1/orders/M/o1?account=acc", &[], b"");
    assert_eq!(first.status, 200, "{first}");
    assert_eq!(event_names(&first.json()), ["cancelled"], "{first}");
    // Before the fix: 200 with `rejected` (unknown_order) at a new seq.
    let again = n.call("DELETE", "/v1/orders/M/o1?account=acc", &[], b"");
    assert_eq!(again.status, 200, "{again}");
    assert_eq!(again.body, first.body, "the original seq and events");
    // Another account's cancel is not a repeat: the engine's answer.
    let other = n.call("DELETE", "/v1/orders/M/o1?account=acc2", &[], b"");
    assert_eq!(other.status, 200, "{other}");
    assert_eq!(event_names(&other.json()), ["rejected"], "{other}");
    assert!(other.json()["seq"].as_u64() > first.json()["seq"].as_u64());
}

#[test]
fn a_repeated_amend_answers_the_original_while_it_is_the_latest_change() {
    let dir = TempDir::new("amend-repeat");
    let n = TestNode::start(config(&dir, "a"), file_log(&dir, "log"));
    rest(&n, "o1", "acc");
    let amend = |body: &str| n.call("PATCH", "/v1/orders/M/o1", &[], body.as_bytes());
    let half = r#"{"account":"acc","qty":"0.5"}"#;
    let first = amend(half);
    assert_eq!(first.status, 200, "{first}");
    assert_eq!(event_names(&first.json()), ["amended"], "{first}");
    let again = amend(half);
    assert_eq!(again.body, first.body, "a repeat answers the original");
    // Another body is another change; after it, the first body is new
    // again (not the latest change), so it is applied, at a new seq.
    let less = amend(r#"{"account":"acc","qty":"0.4"}"#);
    assert_eq!(event_names(&less.json()), ["amended"], "{less}");
    assert!(less.json()["seq"].as_u64() > first.json()["seq"].as_u64());
    let back = amend(half);
    assert_eq!(event_names(&back.json()), ["amended"], "{back}");
    assert!(back.json()["seq"].as_u64() > less.json()["seq"].as_u64());
}

/// The log record of a request, as the node appends it (an amend's
/// `"base"` included).
fn record(line: &str) -> bytes::Bytes {
    let cmd = tandem_codec::decode_record(line.as_bytes());
    let mut b = Vec::new();
    tandem_codec::write_record(&cmd, &mut b);
    b.into()
}

#[test]
fn a_cancel_appended_twice_answers_the_original_for_both() {
    let dir = TempDir::new("cancel-twice");
    let n = TestNode::start(config(&dir, "a"), file_log(&dir, "log"));
    rest(&n, "o1", "acc");
    let first = n.call("DELETE", "/v1/orders/M/o1?account=acc", &[], b"");
    assert_eq!(event_names(&first.json()), ["cancelled"], "{first}");
    // The second copy goes to the log as if both had been appended before
    // either was answered (no check against the window before it).
    let part = Arc::clone(&n.node.partitions[0]);
    let payload = record(r#"{"op":"cancel","market":"M","id":"o1","account":"acc"}"#);
    let o =
        n.rt.block_on(part.submit(payload, Duration::from_secs(5)))
            .expect("appended");
    let v: serde_json::Value = serde_json::from_slice(&o.events).unwrap();
    assert_eq!(
        (o.seq, v[0]["event"].as_str()),
        (first.json()["seq"].as_u64().unwrap(), Some("cancelled")),
        "the second copy is answered with the original"
    );
}

#[test]
fn an_amend_appended_twice_applies_once_whatever_came_between() {
    let dir = TempDir::new("amend-twice");
    let n = TestNode::start(config(&dir, "a"), file_log(&dir, "log"));
    rest(&n, "o1", "acc");
    let body = r#"{"account":"acc","qty":"0.5"}"#;
    let first = n.call("PATCH", "/v1/orders/M/o1", &[], body.as_bytes());
    assert_eq!(event_names(&first.json()), ["amended"], "{first}");
    // A sell takes 0.2 of the 0.5 that rests.
    let fill = n.post(&place_body("M", "s1", "acc2", "sell", "10", "0.2"));
    assert_eq!(event_names(&fill.json()), ["accepted", "trade"], "{fill}");
    // The amend's second copy reaches the log after the fill, as when a
    // client retried on a node that had not applied the first: it carries
    // the base that node read (0 amends). Without bases the engine set the
    // remaining back to 0.5 (and sent the order behind others).
    let part = Arc::clone(&n.node.partitions[0]);
    let copy =
        record(r#"{"op":"amend","market":"M","id":"o1","account":"acc","qty":"0.5","base":"0"}"#);
    let o =
        n.rt.block_on(part.submit(copy.clone(), Duration::from_secs(5)))
            .expect("appended");
    let events: serde_json::Value = serde_json::from_slice(&o.events).unwrap();
    assert_eq!(
        (o.seq, events),
        (
            first.json()["seq"].as_u64().unwrap(),
            first.json()["events"].clone()
        ),
        "the second copy is answered with the original"
    );
    let remaining = || n.get("/v1/orders/M/o1?account=acc").json()["remaining"].clone();
    assert_eq!(remaining(), "0.3");
    // Through the API, the same body again is the repeat.
    let again = n.call("PATCH", "/v1/orders/M/o1", &[], body.as_bytes());
    assert_eq!(again.body, first.body);
    // Another change, then the first amend's copy once more (delayed in a
    // queue): it would undo that change; it is refused, at its own seq.
    let less = n.call(
        "PATCH",
        "/v1/orders/M/o1",
        &[],
        br#"{"account":"acc","qty":"0.1"}"#,
    );
    assert_eq!(event_names(&less.json()), ["amended"], "{less}");
    let o =
        n.rt.block_on(part.submit(copy, Duration::from_secs(5)))
            .expect("appended");
    let events: serde_json::Value = serde_json::from_slice(&o.events).unwrap();
    assert!(o.seq > less.json()["seq"].as_u64().unwrap());
    assert_eq!(events[0]["event"], "rejected", "{events}");
    assert_eq!(events[0]["reason"], "stale", "{events}");
    assert_eq!(remaining(), "0.1");
    // A new amend with the first body is a new change: applied.
    let back = n.call("PATCH", "/v1/orders/M/o1", &[], body.as_bytes());
    assert_eq!(event_names(&back.json()), ["amended"], "{back}");
    assert_eq!(remaining(), "0.5");
}

#[test]
fn a_cancel_retried_on_another_node_of_the_same_log_answers_the_original() {
    let dir = TempDir::new("cancel-other-node");
    let log = file_log(&dir, "log");
    let a = TestNode::start(config(&dir, "a"), Arc::clone(&log));
    let b = TestNode::start(config(&dir, "b"), log);
    rest(&a, "o1", "acc");
    let first = a.call("DELETE", "/v1/orders/M/o1?account=acc", &[], b"");
    assert_eq!(event_names(&first.json()), ["cancelled"], "{first}");
    // Whether b has applied the original yet or not, the retry is the
    // original (window built from the log, or the appended repeat).
    let again = b.call("DELETE", "/v1/orders/M/o1?account=acc", &[], b"");
    assert_eq!(again.status, 200, "{again}");
    assert_eq!(again.body, first.body);
    let amended = {
        rest(&a, "o2", "acc");
        a.call(
            "PATCH",
            "/v1/orders/M/o2",
            &[],
            br#"{"account":"acc","qty":"0.5"}"#,
        )
    };
    let token = amended.header("x-tandem-seq").unwrap().to_owned();
    let again = b.call(
        "PATCH",
        "/v1/orders/M/o2",
        &[("x-tandem-min-seq", &token)],
        br#"{"account":"acc","qty":"0.5"}"#,
    );
    assert_eq!(again.body, amended.body);
}

#[test]
fn cancel_answers_survive_a_restart() {
    let dir = TempDir::new("cancel-restart");
    let cfg = config(&dir, "a");
    let first = {
        let n = TestNode::start(cfg.clone(), file_log(&dir, "log"));
        rest(&n, "o1", "acc");
        n.call("DELETE", "/v1/orders/M/o1?account=acc", &[], b"")
    };
    assert_eq!(event_names(&first.json()), ["cancelled"], "{first}");
    // The node stopped (final snapshot and window) and closed its log.
    let n = TestNode::start(cfg, file_log(&dir, "log"));
    let again = n.call("DELETE", "/v1/orders/M/o1?account=acc", &[], b"");
    assert_eq!(again.body, first.body);
}

// ---- snapshots while orders are entered ----------------------------------------

/// Places from 8 threads at once while the replica snapshots every 50
/// commands in the background and the window beside each snapshot is
/// taken while orders go on: every order is answered once, at its own
/// seq; each window saved holds the newest places up to its snapshot with
/// their answers; and after a restart a retry of each place the window
/// keeps gets its original answer.
#[test]
fn orders_entered_across_background_snapshots_are_answered_and_kept_for_retries() {
    let dir = TempDir::new("snapshots-under-load");
    let mut cfg = config(&dir, "a");
    cfg.snapshot.every_commands = 50;
    cfg.snapshot.keep = 100;
    // More places than the window keeps, and more than one block of its
    // queue (`answers::BLOCK`, 1024 entries).
    let window = 1200;
    cfg.limits.idempotency_window = window;
    let (threads, each) = (8usize, 200usize);
    let body = |t: usize, i: usize| place_body("M", &format!("t{t}-{i}"), "acc", "buy", "10", "1");
    let n = TestNode::start(cfg.clone(), file_log(&dir, "log"));
    let mut answers: Vec<(String, u64, serde_json::Value)> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..threads)
            .map(|t| {
                let n = &n;
                s.spawn(move || {
                    (0..each)
                        .map(|i| {
                            let b = body(t, i);
                            let r = n.post(&b);
                            assert_eq!(r.status, 200, "{r}");
                            let v = r.json();
                            assert_eq!(event_names(&v), ["accepted"], "{r}");
                            let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {r}"));
                            (b, seq, v["events"].clone())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        jobs.into_iter().flat_map(|j| j.join().unwrap()).collect()
    });
    // Each order at its own seq, none lost: seqs 1..=1600 once each.
    answers.sort_by_key(|a| a.1);
    let total = (threads * each) as u64;
    assert!(answers.iter().map(|a| a.1).eq(1..=total));
    // The windows saved beside the periodic snapshots (written in the
    // background: wait until the newest snapshot has its window). A
    // snapshot starts once 50 commands have passed and the last one is
    // written, so their seqs are not multiples of 50.
    let snaps = dir.path().join("a").join("snapshots-0");
    let seqs_of = |prefix: &str, suffix: &str| -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(&snaps)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_prefix(prefix)?
                    .strip_suffix(suffix)?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort_unstable();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let windows = loop {
        let snapshots = seqs_of("snapshot-", ".tsnap");
        let windows = seqs_of("answers-", ".bin");
        if snapshots.last().is_some() && windows.last() == snapshots.last() {
            break windows;
        }
        assert!(
            Instant::now() < deadline,
            "snapshots {snapshots:?}, windows {windows:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(windows.len() >= 3, "periodic windows: {windows:?}");
    for at in windows {
        let (entries, problem) = tandem_node::window::load(&snaps, at);
        assert_eq!(problem, None, "window at {at}");
        // The newest places at or below the snapshot, oldest first, none
        // missing between them, each with the answer its client got.
        assert!(
            !entries.is_empty() && entries.len() <= window,
            "window at {at}: {}",
            entries.len()
        );
        let first = entries[0].seq;
        assert!(
            entries.iter().map(|e| e.seq).eq(first..=at),
            "window at {at} is not the places {first}..={at}"
        );
        for e in &entries {
            let events: serde_json::Value = serde_json::from_slice(&e.events).unwrap();
            assert_eq!(events, answers[e.seq as usize - 1].2, "seq {}", e.seq);
        }
    }
    drop(n);
    // Restarted: a retry of each place the window keeps is answered from
    // it (same seq and events), not refused as a reused id.
    let n = TestNode::start(cfg, file_log(&dir, "log"));
    for (b, seq, events) in &answers[answers.len() - window..] {
        let r = n.post(b);
        assert_eq!(r.status, 200, "retry of seq {seq}: {r}");
        let v = r.json();
        assert_eq!(v["seq"].as_u64(), Some(*seq), "{r}");
        assert_eq!(&v["events"], events, "{r}");
    }
}

// ---- a panic in a request changes nothing else --------------------------------

#[test]
fn a_panic_holding_the_partition_locks_leaves_the_node_serving() {
    let dir = TempDir::new("poison");
    let n = TestNode::start(config(&dir, "a"), file_log(&dir, "log"));
    let first = rest(&n, "o1", "acc");
    let part = Arc::clone(&n.node.partitions[0]);
    let died = std::thread::spawn(move || part.panic_holding_locks()).join();
    assert!(died.is_err(), "the hook panics");
    // Before the fix every request below panicked on a poisoned lock (500).
    let again = n.post(&place_body("M", "o1", "acc", "buy", "10", "1"));
    assert_eq!(again.status, 200, "{again}");
    assert_eq!(again.body, first.body, "the replay still answers");
    rest(&n, "o2", "acc");
    let c = n.call("DELETE", "/v1/orders/M/o2?account=acc", &[], b"");
    assert_eq!(event_names(&c.json()), ["cancelled"], "{c}");
    assert_eq!(n.get("/metrics").status, 200);
    assert_eq!(n.get("/readyz").status, 200);
    let o = n.get("/v1/orders/M/o1?account=acc");
    assert_eq!(o.json()["status"], "open", "{o}");
}

// ---- readiness reflects every thread ------------------------------------------

/// A file log whose `append` panics once `fail` is set (kills the
/// appender thread).
struct PanickyLog {
    inner: Arc<dyn Log>,
    fail: Arc<AtomicBool>,
}

impl Log for PanickyLog {
    fn append(&self, records: &[&[u8]]) -> Result<u64, LogError> {
        assert!(!self.fail.load(Ordering::Relaxed), "test: append panics");
        self.inner.append(records)
    }
    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        self.inner.read_from(from, max)
    }
    fn wait_for(&self, after: u64, timeout: Duration) -> Result<u64, LogError> {
        self.inner.wait_for(after, timeout)
    }
    fn first_seq(&self) -> u64 {
        self.inner.first_seq()
    }
    fn last_seq(&self) -> u64 {
        self.inner.last_seq()
    }
    fn truncate_before(&self, seq: u64) -> Result<(), LogError> {
        self.inner.truncate_before(seq)
    }
    fn identity(&self) -> String {
        self.inner.identity()
    }
}

#[test]
fn a_dead_appender_makes_the_node_unready() {
    let dir = TempDir::new("dead-appender");
    let fail = Arc::new(AtomicBool::new(false));
    let log = Arc::new(PanickyLog {
        inner: file_log(&dir, "log"),
        fail: Arc::clone(&fail),
    });
    let n = TestNode::start(config(&dir, "a"), log);
    rest(&n, "o1", "acc");
    assert_eq!(n.get("/readyz").status, 200);
    fail.store(true, Ordering::Relaxed);
    let r = n.post(&place_body("M", "o2", "acc", "buy", "10", "1"));
    assert_eq!(r.status, 503, "{r}");
    // Before the fix /readyz stayed 200.
    let r = n.wait_status("/readyz", 503, Duration::from_secs(10));
    assert!(r.error().contains("append-0"), "{r}");
    let m = n.get("/metrics").text();
    let line = m
        .lines()
        .find(|l| l.starts_with("tandem_thread_up{") && l.contains("thread=\"append-0\""))
        .unwrap_or_else(|| panic!("no tandem_thread_up for append-0:\n{m}"));
    assert!(line.ends_with(" 0"), "{line}");
    let r = n.post(&place_body("M", "o3", "acc", "buy", "10", "1"));
    assert_eq!(r.status, 503, "{r}");
    assert!(r.error().contains("append-0"), "{r}");
    assert_eq!(n.get("/v1/status").json()["ready"], false);
}
