//! End-to-end tests of the load generator against a fake node: a small
//! hyper server with a trivial in-memory book that speaks the order-entry
//! API (POST/DELETE/GET order, GET book, GET /healthz) and can misbehave on
//! purpose (lose acknowledged orders, sequence a retry anew, fail after
//! applying, refuse some orders for good, answer slowly) so the tests prove
//! the verifier catches it. It can also name a cluster in its answers, as
//! the Tandem edge does, for the per-request samples file.
//! Rates are small and no assertion depends on a latency figure.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tandem_loadgen::{run, run_cli, LoadgenConfig, Report};

const UNIT: u64 = 100_000_000;

fn dec(s: &str) -> u64 {
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    let f = f.trim_end_matches('0');
    let mut frac: u64 = if f.is_empty() { 0 } else { f.parse().unwrap() };
    for _ in f.len()..8 {
        frac *= 10;
    }
    i.parse::<u64>().unwrap() * UNIT + frac
}

fn fmt(u: u64) -> String {
    let frac = format!("{:08}", u % UNIT);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        (u / UNIT).to_string()
    } else {
        format!("{}.{frac}", u / UNIT)
    }
}

/// How the fake misbehaves.
#[derive(Clone, Copy, Debug, Default)]
struct Mode {
    /// Every k-th accepted order is acknowledged, then forgotten.
    lose_every: Option<u64>,
    /// Every k-th place is applied, then answered 503 (a lost answer).
    fail_every: Option<u64>,
    /// A second place with a taken id is sequenced anew (and rejected as
    /// `duplicate_id`) instead of replaying the first answer.
    non_idempotent: bool,
    /// Every place whose order number is a multiple of k is answered 503,
    /// unapplied, on every attempt (retries cannot help).
    refuse_every: Option<u64>,
    /// Answers carry `x-tandem-cluster`: `blue` to a place, `green,west`
    /// to a cancel, none to a read.
    clusters: bool,
    /// Each answer waits this long.
    delay_ms: u64,
}

#[derive(Debug)]
struct Resting {
    id: String,
    price: u64,
    remaining: u64,
}

#[derive(Debug)]
struct OrderRec {
    account: String,
    side: &'static str,
    price: Option<u64>,
    qty: u64,
    remaining: u64,
    status: &'static str,
}

#[derive(Debug, Default)]
struct Fake {
    mode: Mode,
    seq: u64,
    places: u64,
    accepted: u64,
    lost: u64,
    /// Reads that carried `x-tandem-min-seq`, and any whose token was
    /// not one this fake handed out.
    min_seq_reads: u64,
    /// When each of those reads arrived.
    min_seq_read_at: Vec<std::time::Instant>,
    bad_tokens: u64,
    orders: HashMap<(String, String), OrderRec>,
    replies: HashMap<(String, String), (Bytes, String)>,
    /// market -> (bids, asks), each in arrival order.
    books: HashMap<String, (Vec<Resting>, Vec<Resting>)>,
}

impl Fake {
    fn answer(&self, events: Vec<Value>) -> String {
        json!({"partition": 0, "seq": self.seq, "events": events}).to_string()
    }

    /// Returns (status, body).
    fn place(&mut self, body: &Bytes) -> (u16, String) {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return (400, r#"{"error":"body"}"#.into()),
        };
        let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        let (market, id, account) = (s("market"), s("id"), s("account"));
        let key = (market.clone(), id.clone());
        self.places += 1;
        let n = id.rsplit_once('-').and_then(|(_, n)| n.parse::<u64>().ok());
        if let (Some(k), Some(n)) = (self.mode.refuse_every, n) {
            if n.is_multiple_of(k) {
                return (503, r#"{"error":"refused"}"#.into());
            }
        }
        if let Some((first_body, first_answer)) = self.replies.get(&key) {
            if !self.mode.non_idempotent {
                return if first_body == body {
                    (200, first_answer.clone())
                } else {
                    (409, r#"{"error":"id"}"#.into())
                };
            }
            self.seq += 1;
            let ev = json!({"seq": self.seq, "event": "rejected", "market": market, "id": id, "reason": "duplicate_id"});
            return (200, self.answer(vec![ev]));
        }
        self.seq += 1;
        let seq = self.seq;
        let buy = s("side") == "buy";
        let market_order = s("type") == "market";
        let price = (!market_order).then(|| dec(&s("price")));
        let qty = dec(&s("qty"));
        let gtc = s("tif") != "ioc";
        let post_only = v["post_only"].as_bool().unwrap_or(false);
        let (bids, asks) = self.books.entry(market.clone()).or_default();
        let (own, opposite) = if buy { (bids, asks) } else { (asks, bids) };
        let crosses = |p: u64| price.is_none_or(|lim| if buy { p <= lim } else { p >= lim });
        let best = |book: &Vec<Resting>| {
            (0..book.len())
                .filter(|&i| crosses(book[i].price))
                .min_by_key(|&i| {
                    (
                        if buy {
                            book[i].price
                        } else {
                            u64::MAX - book[i].price
                        },
                        i,
                    )
                })
        };
        let mut events = Vec::new();
        if post_only && best(opposite).is_some() {
            events.push(json!({"seq": seq, "event": "rejected", "market": market, "id": id, "reason": "post_only"}));
        } else {
            events.push(json!({"seq": seq, "event": "accepted", "market": market, "id": id}));
            let mut remaining = qty;
            let mut filled_makers = Vec::new();
            while remaining > 0 {
                let Some(i) = best(opposite) else { break };
                let m = &mut opposite[i];
                let q = m.remaining.min(remaining);
                events.push(json!({"seq": seq, "event": "trade", "market": market, "maker": m.id, "taker": id, "price": fmt(m.price), "qty": fmt(q)}));
                m.remaining -= q;
                remaining -= q;
                let maker = (m.id.clone(), m.remaining);
                if m.remaining == 0 {
                    opposite.remove(i);
                }
                filled_makers.push(maker);
            }
            let status = if remaining == 0 {
                "filled"
            } else if gtc && !market_order {
                own.push(Resting {
                    id: id.clone(),
                    price: price.unwrap_or(0),
                    remaining,
                });
                "open"
            } else {
                events.push(json!({"seq": seq, "event": "cancelled", "market": market, "id": id, "remaining": fmt(remaining), "reason": "ioc"}));
                "cancelled"
            };
            for (mid, left) in filled_makers {
                if let Some(o) = self.orders.get_mut(&(market.clone(), mid)) {
                    o.remaining = left;
                    if left == 0 {
                        o.status = "filled";
                    }
                }
            }
            self.accepted += 1;
            if self
                .mode
                .lose_every
                .is_some_and(|k| self.accepted.is_multiple_of(k))
            {
                // Acknowledged, then forgotten: out of the book, no record.
                self.lost += 1;
                let (bids, asks) = self.books.get_mut(&market).expect("book exists");
                bids.retain(|r| r.id != id);
                asks.retain(|r| r.id != id);
            } else {
                self.orders.insert(
                    key.clone(),
                    OrderRec {
                        account,
                        side: if buy { "buy" } else { "sell" },
                        price,
                        qty,
                        remaining,
                        status,
                    },
                );
            }
        }
        let answer = self.answer(events);
        self.replies.insert(key, (body.clone(), answer.clone()));
        if self
            .mode
            .fail_every
            .is_some_and(|k| self.places.is_multiple_of(k))
        {
            return (503, r#"{"error":"upstream"}"#.into());
        }
        (200, answer)
    }

    fn cancel(&mut self, market: &str, id: &str, account: &str) -> (u16, String) {
        self.seq += 1;
        let seq = self.seq;
        let key = (market.to_owned(), id.to_owned());
        let ev = match self.orders.get_mut(&key) {
            Some(o) if o.account == account && o.status == "open" => {
                o.status = "cancelled";
                let (bids, asks) = self.books.get_mut(market).expect("book exists");
                bids.retain(|r| r.id != id);
                asks.retain(|r| r.id != id);
                json!({"seq": seq, "event": "cancelled", "market": market, "id": id, "remaining": fmt(o.remaining), "reason": "user"})
            }
            _ => {
                json!({"seq": seq, "event": "rejected", "market": market, "id": id, "reason": "unknown_order"})
            }
        };
        (200, self.answer(vec![ev]))
    }

    fn get(&self, market: &str, id: &str, account: &str) -> (u16, String) {
        match self.orders.get(&(market.to_owned(), id.to_owned())) {
            Some(o) if o.account == account => {
                let mut v = json!({"market": market, "id": id, "account": account, "side": o.side,
                    "qty": fmt(o.qty), "remaining": if o.remaining == 0 { "0".to_owned() } else { fmt(o.remaining) },
                    "status": o.status});
                if let Some(p) = o.price {
                    v["price"] = json!(fmt(p));
                }
                (200, v.to_string())
            }
            _ => (404, r#"{"error":"order not found"}"#.into()),
        }
    }

    fn book(&self, market: &str) -> (u16, String) {
        let levels = |side: Option<&Vec<Resting>>| {
            side.map(|v| {
                v.iter()
                    .map(|r| json!([fmt(r.price), fmt(r.remaining)]))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        };
        let b = self.books.get(market);
        let body = json!({"partition": 0, "seq": self.seq,
            "bids": levels(b.map(|b| &b.0)), "asks": levels(b.map(|b| &b.1))});
        (200, body.to_string())
    }
}

async fn handle(
    fake: Arc<Mutex<Fake>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let account = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("account=")))
        .unwrap_or("")
        .to_owned();
    let min_seq = req
        .headers()
        .get("x-tandem-min-seq")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let delay = fake.lock().unwrap().mode.delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut f = fake.lock().unwrap();
    if let Some(tok) = min_seq {
        // One partition: the token must be `0:N` with N already reached.
        f.min_seq_reads += 1;
        f.min_seq_read_at.push(std::time::Instant::now());
        let ok = tok
            .strip_prefix("0:")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n <= f.seq);
        f.bad_tokens += u64::from(!ok);
    }
    let (status, text) = match (method.as_str(), parts.as_slice()) {
        ("GET", ["healthz"]) => (200, "ok".to_owned()),
        ("POST", ["v1", "orders"]) => f.place(&body),
        ("DELETE", ["v1", "orders", m, id]) => f.cancel(m, id, &account),
        ("GET", ["v1", "orders", m, id]) => f.get(m, id, &account),
        ("GET", ["v1", "markets", m, "book"]) => f.book(m),
        _ => (404, r#"{"error":"route"}"#.to_owned()),
    };
    let token = format!("0:{}", f.seq);
    let cluster = match method.as_str() {
        _ if !f.mode.clusters => None,
        "POST" => Some("blue"),
        "DELETE" => Some("green,west"),
        _ => None,
    };
    drop(f);
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-tandem-seq", token)
        .header("retry-after", "0");
    if let Some(c) = cluster {
        b = b.header("x-tandem-cluster", c);
    }
    Ok(b.body(Full::new(Bytes::from(text))).unwrap())
}

/// Starts a fake node on a loopback port; it lives until the test ends.
fn start_fake(mode: Mode) -> (SocketAddr, Arc<Mutex<Fake>>) {
    let fake = Arc::new(Mutex::new(Fake {
        mode,
        ..Fake::default()
    }));
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let f = fake.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let f = f.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(f.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    (addr, fake)
}

fn config(addr: SocketAddr) -> LoadgenConfig {
    LoadgenConfig {
        targets: vec![format!("http://{addr}")],
        rate: 500.0,
        duration_s: 1.0,
        warmup_s: 0.2,
        connections: 8,
        accounts: 20,
        markets: 3,
        threads: 2,
        seed: 7,
        timeout_ms: 3000,
        ..LoadgenConfig::default()
    }
}

fn verify(r: &Report) -> &tandem_loadgen::Verify {
    r.verify.as_ref().expect("verification ran")
}

#[test]
fn honest_node_verifies_clean() {
    let (addr, fake) = start_fake(Mode::default());
    let cfg = LoadgenConfig {
        read_ratio: 0.1,
        replay_ratio: 0.2,
        ..config(addr)
    };
    let r = run(&cfg).unwrap();
    println!("{r}");
    assert_eq!(r.scheduled, 600);
    assert_eq!(r.measured + r.warmup_requests, r.scheduled);
    assert_eq!(r.latency_us.count, r.measured);
    assert_eq!(r.errors.total(), 0, "{r}");
    assert_eq!(r.ok, r.measured, "{r}");
    assert!(
        r.orders.accepted > 0 && r.orders.cancels_confirmed > 0,
        "{r}"
    );
    let v = verify(&r);
    assert_eq!(
        (v.lost, v.duplicated, v.inconsistent, v.unverified),
        (0, 0, 0, 0),
        "{r}"
    );
    assert_eq!(v.checked, r.orders.accepted);
    assert_eq!(v.visible, v.checked);
    assert!(v.replayed > 0);
    let f = fake.lock().unwrap();
    assert_eq!(f.accepted, r.orders.accepted, "{r}");
    // Every verification read passed the latest consistency token back.
    assert_eq!((f.min_seq_reads, f.bad_tokens), (v.checked, 0));
    drop(f);
    let j: Value = serde_json::from_str(&r.to_json()).unwrap();
    for key in ["p50", "p95", "p99", "p99_9", "max"] {
        assert!(j["latency_us"][key].is_number(), "{key}");
    }
    assert_eq!(j["verify"]["lost"], 0);
    assert_eq!(j["config"]["seed"], 7);
}

#[test]
fn verify_rate_spreads_the_read_back() {
    // 200 read-backs at most 100 a second take at least 1.99 s from the
    // first to the last; unbounded, the same read-back is one burst.
    let spans: Vec<(u64, f64)> = [100.0, 0.0]
        .into_iter()
        .map(|verify_rate| {
            let (addr, fake) = start_fake(Mode::default());
            let cfg = LoadgenConfig {
                rate: 200.0,
                warmup_s: 0.0,
                cancel_ratio: 0.0,
                replay_ratio: 0.0,
                verify_rate,
                ..config(addr)
            };
            let r = run(&cfg).unwrap();
            let v = verify(&r);
            assert_eq!((v.lost, v.unverified), (0, 0), "{r}");
            let f = fake.lock().unwrap();
            assert_eq!(f.min_seq_reads, v.checked, "{r}");
            let span = match (f.min_seq_read_at.first(), f.min_seq_read_at.last()) {
                (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
                _ => 0.0,
            };
            (v.checked, span)
        })
        .collect();
    let (n, paced) = spans[0];
    assert!(n >= 100, "{spans:?}");
    assert!(paced >= (n - 1) as f64 / 100.0 * 0.99, "{spans:?}");
    assert!(spans[1].1 < paced / 2.0, "{spans:?}");
}

#[test]
fn same_seed_same_orders() {
    // The flow is a function of the seed: two runs against two fresh
    // fakes send the same places (the answers' timing may differ).
    let counts: Vec<(u64, u64)> = (0..2)
        .map(|_| {
            let (addr, _) = start_fake(Mode::default());
            let cfg = LoadgenConfig {
                verify: false,
                duration_s: 0.5,
                ..config(addr)
            };
            let r = run(&cfg).unwrap();
            (r.orders.placed, r.scheduled)
        })
        .collect();
    assert_eq!(counts[0], counts[1]);
}

#[test]
fn lost_orders_are_caught() {
    let (addr, fake) = start_fake(Mode {
        lose_every: Some(25),
        ..Mode::default()
    });
    let r = run(&config(addr)).unwrap();
    let lost = fake.lock().unwrap().lost;
    assert!(lost > 0);
    let v = verify(&r);
    assert_eq!(v.lost, lost, "{r}");
    assert_eq!(v.duplicated, 0, "{r}");
    assert!(v.examples.iter().any(|e| e.starts_with("lost ")));
    assert!(format!("{r}").contains(&format!("lost: {lost}, duplicated: 0")));
}

#[test]
fn retries_are_idempotent_on_an_honest_node() {
    let (addr, _) = start_fake(Mode {
        fail_every: Some(20),
        ..Mode::default()
    });
    let r = run(&config(addr)).unwrap();
    assert!(r.retries > 0, "{r}");
    assert_eq!(r.errors.total(), 0, "{r}");
    let v = verify(&r);
    assert_eq!((v.lost, v.duplicated, v.inconsistent), (0, 0, 0), "{r}");
    assert!(v.replayed >= r.retried_requests);
}

#[test]
fn duplicated_orders_are_caught() {
    let (addr, _) = start_fake(Mode {
        fail_every: Some(20),
        non_idempotent: true,
        ..Mode::default()
    });
    let r = run(&config(addr)).unwrap();
    assert!(r.retries > 0, "{r}");
    // Retried places come back as `duplicate_id` (sequenced twice), and
    // replays after the run get a new seq.
    assert!(r.orders.duplicated_in_run > 0, "{r}");
    let v = verify(&r);
    assert!(v.duplicated > r.orders.duplicated_in_run, "{r}");
    assert!(
        v.examples.iter().any(|e| e.starts_with("duplicated ")),
        "{r}"
    );
}

#[test]
fn floor_mode_only_hits_healthz() {
    let (addr, fake) = start_fake(Mode::default());
    let cfg = LoadgenConfig {
        floor: true,
        ..config(addr)
    };
    let r = run(&cfg).unwrap();
    assert_eq!(r.mode, "path /healthz");
    assert_eq!(r.ok, r.measured);
    assert_eq!(r.status.get("200"), Some(&r.measured));
    assert_eq!(r.orders.placed, 0);
    assert!(r.verify.is_none());
    assert_eq!(fake.lock().unwrap().places, 0);
}

#[test]
fn http2_works() {
    let (addr, _) = start_fake(Mode::default());
    let cfg = LoadgenConfig {
        http2: true,
        connections: 2,
        ..config(addr)
    };
    let r = run(&cfg).unwrap();
    assert_eq!(r.errors.total(), 0, "{r}");
    let v = verify(&r);
    assert_eq!(
        (v.lost, v.duplicated, v.inconsistent, v.unverified),
        (0, 0, 0, 0),
        "{r}"
    );
}

#[test]
fn connection_errors_retry_on_the_next_target() {
    let (addr, _) = start_fake(Mode::default());
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = LoadgenConfig {
        targets: vec![format!("http://{dead}"), format!("http://{addr}")],
        duration_s: 0.5,
        ..config(addr)
    };
    let r = run(&cfg).unwrap();
    // Half the requests start on the dead node and succeed on the next.
    assert!(r.retries > 0, "{r}");
    assert_eq!(r.errors.total(), 0, "{r}");
    let v = verify(&r);
    assert_eq!((v.lost, v.duplicated, v.inconsistent), (0, 0, 0), "{r}");
}

#[test]
fn all_targets_dead_is_counted_not_fatal() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = LoadgenConfig {
        duration_s: 0.3,
        retries: 1,
        ..config(dead)
    };
    let r = run(&cfg).unwrap();
    assert_eq!(r.errors.connect, r.measured, "{r}");
    assert_eq!(r.ok, 0);
    assert_eq!(r.orders.acknowledged, 0);
    assert_eq!(verify(&r).checked, 0);
}

#[test]
fn a_full_in_flight_bound_is_backpressure() {
    let (addr, _) = start_fake(Mode {
        delay_ms: 20,
        ..Mode::default()
    });
    let cfg = LoadgenConfig {
        max_in_flight: Some(2),
        connections: 2,
        duration_s: 0.3,
        warmup_s: 0.0,
        verify: false,
        ..config(addr)
    };
    let r = run(&cfg).unwrap();
    // 2 in flight x 20 ms cannot keep up with 500/s: the schedule holds
    // and the waiting requests are counted (and timed from their due time).
    assert!(r.backpressure > 0, "{r}");
    assert_eq!(r.ok, r.measured, "{r}");
    assert_eq!(r.latency_us.count, r.measured);
}

#[test]
fn cli_writes_json_and_fails_on_loss() {
    let (addr, _) = start_fake(Mode {
        lose_every: Some(10),
        ..Mode::default()
    });
    let path = std::env::temp_dir().join(format!("tandem-loadgen-{}.json", std::process::id()));
    let samples =
        std::env::temp_dir().join(format!("tandem-loadgen-cli-{}.csv", std::process::id()));
    let args: Vec<String> = [
        "--target",
        &format!("http://{addr}"),
        "--rate",
        "400",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--connections",
        "4",
        "--threads",
        "2",
        "--json",
        path.to_str().unwrap(),
        "--samples",
        samples.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let err = run_cli(&args).unwrap_err();
    assert!(format!("{err}").contains("lost"), "{err}");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(j["verify"]["lost"].as_u64().unwrap() > 0);
    assert_eq!(j["scheduled"], 200);
    // The samples are written after the load, before the verifier: a run
    // that fails verification still leaves them.
    let text = std::fs::read_to_string(&samples).unwrap();
    let _ = std::fs::remove_file(&samples);
    assert_eq!(text.lines().count(), 2 + 200, "{text}");
    assert_eq!(j["config"]["samples"], samples.to_str().unwrap());
}

fn csv_split(line: &str) -> Vec<String> {
    tandem_loadgen::split_sample_fields(line)
        .unwrap_or_else(|| panic!("unterminated quote in {line:?}"))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn samples_file_has_one_line_per_measured_request() {
    let (addr, _) = start_fake(Mode {
        refuse_every: Some(7),
        clusters: true,
        ..Mode::default()
    });
    let path =
        std::env::temp_dir().join(format!("tandem-loadgen-samples-{}.csv", std::process::id()));
    let cfg = LoadgenConfig {
        read_ratio: 0.2,
        retries: 2,
        verify: false,
        samples: Some(path.clone()),
        ..config(addr)
    };
    let before = unix_ms();
    let r = run(&cfg).unwrap();
    let after = unix_ms();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let mut lines = text.lines();

    let start: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("# tandem loadgen samples v1 start_unix_ms="))
        .and_then(|v| v.parse().ok())
        .expect("header line");
    assert!(
        before <= start && start <= after,
        "{before} {start} {after}"
    );
    assert_eq!(
        lines.next(),
        Some("t_ms,latency_us,op,outcome,status,cluster,attempts")
    );
    let rows: Vec<Vec<String>> = lines.map(csv_split).collect();
    assert!(rows.iter().all(|row| row.len() == 7), "{text}");

    // One line per measured request; the warmup is left out.
    assert!(r.warmup_requests > 0);
    assert_eq!(rows.len() as u64, r.measured, "{r}");

    // Intended send times: in schedule order, inside the measured span,
    // and spread as the rate says (each rounded down to a millisecond).
    let t: Vec<u64> = rows.iter().map(|row| row[0].parse().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]));
    let (warmup_ms, end_ms) = (
        (cfg.warmup_s * 1e3) as u64,
        ((cfg.warmup_s + cfg.duration_s) * 1e3) as u64,
    );
    assert!(t[0] >= start + warmup_ms && t[t.len() - 1] <= start + end_ms);
    let span = (t[t.len() - 1] - t[0]) as f64;
    let planned = (r.measured - 1) as f64 * 1e3 / cfg.rate;
    assert!((span - planned).abs() <= 1.0, "{span} vs {planned}");

    // The cluster is the final answer's header, by operation here.
    let mut ops = HashMap::new();
    for row in &rows {
        let want = match row[2].as_str() {
            "place" => "blue",
            "cancel" => "green,west",
            "read" => "",
            other => panic!("op {other}"),
        };
        assert_eq!(row[5], want, "{row:?}");
        *ops.entry(row[2].clone()).or_insert(0u64) += 1;
    }
    assert!(ops.len() == 3, "{ops:?}");

    // Refused places end 503 after every retry; all else is ok at once.
    let (mut ok, mut refused, mut retries) = (0, 0, 0);
    let mut status: HashMap<String, u64> = HashMap::new();
    for row in &rows {
        let attempts: u32 = row[6].parse().unwrap();
        let latency_us: u64 = row[1].parse().unwrap();
        retries += u64::from(attempts - 1);
        if row[4] != "0" {
            *status.entry(row[4].clone()).or_insert(0) += 1;
        }
        match row[3].as_str() {
            "5xx" => {
                refused += 1;
                assert_eq!((row[2].as_str(), row[4].as_str()), ("place", "503"));
                assert_eq!(attempts, cfg.retries + 1, "{row:?}");
                // Counted through the backoffs (5 ms, then 10 ms).
                assert!(latency_us >= 15_000, "{row:?}");
            }
            "ok" => {
                ok += 1;
                assert_eq!(attempts, 1, "{row:?}");
                // A read may come before its order's place, or after a
                // refused one: its 404 counts as ok, as in the report.
                assert!(
                    row[4] == "200" || (row[2] == "read" && row[4] == "404"),
                    "{row:?}"
                );
            }
            other => panic!("outcome {other} in {row:?}"),
        }
    }
    assert!(refused > 0);
    assert_eq!(ok, r.ok, "{r}");
    assert_eq!(Some(&refused), r.errors.http_5xx.get("503"), "{r}");
    assert_eq!(retries, r.retries, "{r}");
    assert_eq!(status, r.status.clone().into_iter().collect(), "{r}");
}
