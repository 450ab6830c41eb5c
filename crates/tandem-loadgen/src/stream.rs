//! `--grpc-stream`: closed-loop order entry over the node's gRPC `Submit`
//! stream (`tandem.v1.OrderEntry/Submit`, `proto/tandem/v1/tandem.proto`).
//!
//! Each of `connections` tasks opens one HTTP/2 connection and one
//! `Submit` call on it, sends `stream_in_flight` requests, and from then on
//! sends one new request for every reply, until `warmup + duration` has
//! passed; then it waits for the replies still due and ends the call. The
//! tag of a request is its slot (`0..stream_in_flight`): a reply names the
//! slot, whose operation and send time are looked up without a map. The
//! operations come from the same generator as the HTTP mode (places and
//! cancels; no reads), taken one at a time under a lock, so the order
//! flow and ids are those of the same seed over HTTP.
//!
//! Latency is from the moment a request is queued for the call to its
//! reply (closed loop: there is no schedule to measure against). Every
//! reply is read as the HTTP mode reads an answer (`answer::place_outcome`
//! over the proto events through `answer::EventView`, with the same digest
//! and no allocation for a good reply), recorded in a recorder of
//! the connection's own (merged at the end, no lock per reply), and the
//! acknowledged orders are verified afterwards over HTTP exactly as in the
//! HTTP mode (`run::finish`). Error replies count under their HTTP
//! status; they are not retried.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tandem_node::grpc::pb;
use tandem_node::grpc::pb::order_entry_client::OrderEntryClient;
use tokio::sync::mpsc;

use crate::answer::{self, EventView, Mismatch};
use crate::client::{Pools, Target, Token};
use crate::config::LoadgenConfig;
use crate::report::Report;
use crate::run::{self, AckRecord, Counts, Kind, Measure, Settled, Shard, Shared};
use crate::workload::{push_decimal, Generator, Op, OrderKind, Side, Workload};
use crate::LoadgenError;

type Grpc = OrderEntryClient<Client<HttpConnector, tonic::body::Body>>;

/// What one stream did.
#[derive(Debug, Default)]
struct Conn {
    shard: Shard,
    sent: u64,
    warmup: u64,
    /// Highest seq acknowledged per partition.
    top: BTreeMap<u32, u64>,
    /// The node's log id (`x-tandem-log` of the call), for the tokens the
    /// verifier reads with.
    log: Option<String>,
}

/// One request in flight: its slot is its tag.
#[derive(Clone, Copy, Debug)]
struct Slot {
    op: Op,
    sent: Instant,
    live: bool,
}

/// Runs the closed loop of `cfg` (already validated) and verifies it.
pub(crate) fn run(cfg: &LoadgenConfig) -> Result<Report, LoadgenError> {
    let (targets, rt) = crate::run::targets_and_runtime(cfg)?;
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let workload = Workload::new(cfg);
    // HTTP/1.1 pools for the verifier's read-back and replays.
    let shared = Arc::new(Shared {
        pools: Pools::new(
            targets.clone(),
            cfg.connections,
            false,
            timeout,
            cfg.retries,
            Duration::from_millis(cfg.retry_backoff_ms),
        ),
        shards: Vec::new(),
        workload,
    });
    let gen = Arc::new(Mutex::new(Generator::new(&shared.workload)));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cfg.warmup_s);
    let stop_at = measure_from + Duration::from_secs_f64(cfg.duration_s);
    let handles: Vec<_> = (0..cfg.connections)
        .map(|c| {
            rt.spawn(stream(
                Arc::clone(&shared),
                Arc::clone(&gen),
                targets[c % targets.len()].clone(),
                cfg.stream_in_flight,
                (measure_from, stop_at),
                timeout,
            ))
        })
        .collect();
    let mut merged = Shard::default();
    let (mut acks, mut cancelled) = (Vec::new(), Vec::new());
    let (mut sent, mut warmup) = (0, 0);
    for h in handles {
        let mut c = rt.block_on(h).unwrap_or_default();
        sent += c.sent;
        warmup += c.warmup;
        acks.append(&mut c.shard.acks);
        cancelled.append(&mut c.shard.cancelled);
        run::merge(&mut merged, &c.shard);
        for (p, seq) in c.top {
            let t = merged.tokens.entry(p).or_insert_with(|| Token {
                partition: p,
                seq,
                log: c.log.clone(),
            });
            t.seq = t.seq.max(seq);
        }
    }
    let elapsed = merged
        .last_done
        .map(|d| d.saturating_duration_since(measure_from).as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-3);
    let placed = gen.lock().map_or(0, |g| g.orders());
    let counts = Counts {
        placed,
        scheduled: sent,
        warmup_requests: warmup,
        elapsed_s: elapsed,
        target_rate: 0.0,
        bound: cfg.in_flight_bound(),
        lag_max: Duration::ZERO,
        mode: "grpc-stream orders".to_owned(),
    };
    Ok(run::finish(
        cfg, rt, shared, merged, acks, cancelled, counts,
    ))
}

fn next_op(gen: &Mutex<Generator>, w: &Workload) -> Op {
    gen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .next_op(w)
}

/// One `Submit` call, closed loop.
async fn stream(
    sh: Arc<Shared>,
    gen: Arc<Mutex<Generator>>,
    target: Target,
    k: usize,
    (measure_from, stop_at): (Instant, Instant),
    timeout: Duration,
) -> Conn {
    let w = &sh.workload;
    let mut conn = Conn::default();
    let (tx, rx) = mpsc::channel::<pb::SubmitRequest>(k);
    let mut slots = Vec::with_capacity(k);
    for i in 0..k {
        let op = next_op(&gen, w);
        let sent = Instant::now();
        slots.push(Slot {
            op,
            sent,
            live: true,
        });
        conn.count(sent, measure_from);
        // The channel holds `k`: never full with at most `k` in flight.
        let _ = tx.try_send(request(w, op, i as u64));
    }
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = match target.base.parse::<http::Uri>() {
        Ok(u) => u,
        Err(_) => {
            fail_all(&mut conn, &mut slots, Kind::Connect, measure_from);
            return conn;
        }
    };
    let mut grpc: Grpc = OrderEntryClient::with_origin(client, origin);
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut replies = match tokio::time::timeout(timeout, grpc.submit(requests)).await {
        Ok(Ok(r)) => {
            conn.log = r
                .metadata()
                .get("x-tandem-log")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            r.into_inner()
        }
        Ok(Err(_)) => {
            fail_all(&mut conn, &mut slots, Kind::Connect, measure_from);
            return conn;
        }
        Err(_) => {
            fail_all(&mut conn, &mut slots, Kind::Timeout, measure_from);
            return conn;
        }
    };
    let mut in_flight = k;
    let mut id_buf = String::with_capacity(32);
    while in_flight > 0 {
        let r = match tokio::time::timeout(timeout, replies.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None) | Err(_)) => {
                fail_all(&mut conn, &mut slots, Kind::Connect, measure_from);
                break;
            }
            Err(_) => {
                fail_all(&mut conn, &mut slots, Kind::Timeout, measure_from);
                break;
            }
        };
        let done = Instant::now();
        let Some(slot) = usize::try_from(r.tag)
            .ok()
            .and_then(|i| slots.get_mut(i))
            .filter(|s| s.live)
        else {
            // A tag this stream has no request for: the server's mistake.
            conn.shard.body_mismatch += 1;
            continue;
        };
        let settled = settle(w, slot.op, &r, &mut conn.top, &mut id_buf);
        let m = Measure {
            measured: slot.sent >= measure_from,
            latency_ns: done.saturating_duration_since(slot.sent).as_nanos() as u64,
            pressed: false,
            retries: 0,
            sent: slot.sent,
            done,
        };
        conn.shard.apply(settled, m);
        if done < stop_at {
            let op = next_op(&gen, w);
            slot.op = op;
            slot.sent = Instant::now();
            let sent = slot.sent;
            conn.count(sent, measure_from);
            let _ = tx.try_send(request(w, op, r.tag));
        } else {
            slot.live = false;
            in_flight -= 1;
        }
    }
    // The end of the request stream ends the call.
    drop(tx);
    conn
}

impl Conn {
    fn count(&mut self, sent: Instant, measure_from: Instant) {
        self.sent += 1;
        self.warmup += u64::from(sent < measure_from);
    }
}

/// Every request still in flight ended with `kind` (the call broke).
fn fail_all(conn: &mut Conn, slots: &mut [Slot], kind: Kind, measure_from: Instant) {
    let done = Instant::now();
    for s in slots.iter_mut().filter(|s| s.live) {
        s.live = false;
        let settled = Settled {
            kind,
            status: None,
            token: None,
            ack: None,
            rejected: None,
            cancel: None,
        };
        let m = Measure {
            measured: s.sent >= measure_from,
            latency_ns: done.saturating_duration_since(s.sent).as_nanos() as u64,
            pressed: false,
            retries: 0,
            sent: s.sent,
            done,
        };
        conn.shard.apply(settled, m);
    }
}

fn decimal(units: u64) -> String {
    let mut s = String::with_capacity(24);
    push_decimal(&mut s, units);
    s
}

/// The request of `op` with tag `tag`: the same order as the HTTP mode's
/// `POST /v1/orders` (or `DELETE`) of that op, field for field.
fn request(w: &Workload, op: Op, tag: u64) -> pb::SubmitRequest {
    use pb::submit_request::Command as C;
    let command = match op {
        Op::Place(n) => {
            let p = w.place(n);
            C::Place(pb::PlaceOrderRequest {
                market: w.market_name(p.market),
                id: w.order_id(n),
                account: w.account_name(p.account),
                side: match p.side {
                    Side::Buy => pb::Side::Buy,
                    Side::Sell => pb::Side::Sell,
                } as i32,
                r#type: match p.kind {
                    OrderKind::Market => pb::OrderType::Market,
                    _ => pb::OrderType::Limit,
                } as i32,
                price: (p.kind != OrderKind::Market).then(|| decimal(p.price)),
                qty: decimal(p.qty),
                tif: match p.kind {
                    OrderKind::Market | OrderKind::Ioc => pb::TimeInForce::Ioc,
                    OrderKind::Gtc | OrderKind::PostOnly => pb::TimeInForce::Gtc,
                } as i32,
                post_only: p.kind == OrderKind::PostOnly,
            })
        }
        Op::Cancel(n) => {
            let p = w.place(n);
            C::Cancel(pb::CancelOrderRequest {
                market: w.market_name(p.market),
                id: w.order_id(n),
                account: w.account_name(p.account),
            })
        }
        Op::GetOrder(_) | Op::GetBook(_) | Op::Path => {
            unreachable!("LoadgenConfig::validate allows no reads with --grpc-stream")
        }
    };
    let (signature, expiry) = match w.signed().then(|| w.request(op).signature).flatten() {
        Some((sig, expiry)) => (sig, expiry.parse().unwrap_or(0)),
        None => (String::new(), 0),
    };
    pb::SubmitRequest {
        tag,
        command: Some(command),
        signature,
        expiry,
    }
}

/// A proto event, read by the same code as a JSON event.
impl EventView for pb::Event {
    fn kind(&self) -> &str {
        match pb::EventKind::try_from(self.kind) {
            Ok(pb::EventKind::Accepted) => "accepted",
            Ok(pb::EventKind::Trade) => "trade",
            Ok(pb::EventKind::Cancelled) => "cancelled",
            Ok(pb::EventKind::Amended) => "amended",
            Ok(pb::EventKind::Rejected) => "rejected",
            Ok(pb::EventKind::Unspecified) | Err(_) => "unspecified",
        }
    }
    fn seq(&self) -> Option<u64> {
        Some(self.seq)
    }
    fn market(&self) -> Option<&str> {
        self.market.as_deref()
    }
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    fn maker(&self) -> Option<&str> {
        self.maker.as_deref()
    }
    fn taker(&self) -> Option<&str> {
        self.taker.as_deref()
    }
    fn price(&self) -> Option<&str> {
        self.price.as_deref()
    }
    fn qty(&self) -> Option<&str> {
        self.qty.as_deref()
    }
    fn remaining(&self) -> Option<&str> {
        self.remaining.as_deref()
    }
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// Reads one reply to `op`, as `run::settle` reads an HTTP answer.
/// `id` is a buffer for the order's id, reused from reply to reply.
fn settle(
    w: &Workload,
    op: Op,
    r: &pb::SubmitReply,
    top: &mut BTreeMap<u32, u64>,
    id: &mut String,
) -> Settled {
    let mut s = Settled {
        kind: Kind::Ok,
        status: None,
        token: None,
        ack: None,
        rejected: None,
        cancel: None,
    };
    let c = match &r.result {
        Some(pb::submit_reply::Result::Reply(c)) => c,
        Some(pb::submit_reply::Result::Error(e)) => {
            let code = u16::try_from(e.http_status).unwrap_or(500);
            s.status = Some(code);
            s.kind = Kind::Http(code);
            return s;
        }
        None => {
            s.kind = Kind::Mismatch;
            return s;
        }
    };
    s.status = Some(200);
    let t = top.entry(c.partition).or_insert(0);
    *t = (*t).max(c.seq);
    let read = match op {
        Op::Place(n) => {
            w.write_order_id(n, id);
            answer::place_outcome(&c.events, id, &w.place(n)).map(|out| {
                s.rejected = out.rejected;
                s.ack = Some(AckRecord {
                    n,
                    seq: c.seq,
                    digest: out.digest,
                    partition: c.partition,
                    expect: out.expect,
                    retried: false,
                });
            })
        }
        Op::Cancel(n) => {
            w.write_order_id(n, id);
            answer::cancel_outcome(&c.events, id).map(|done| s.cancel = Some((n, done)))
        }
        Op::GetOrder(_) | Op::GetBook(_) | Op::Path => Err(Mismatch("a read on the stream".into())),
    };
    if read.is_err() {
        s.kind = Kind::Mismatch;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::read_place;

    /// The digest of a stream reply equals the digest of the same answer
    /// over HTTP, so the verifier's HTTP replay can compare them.
    #[test]
    fn stream_events_read_as_the_json_answer_reads() {
        let cfg = LoadgenConfig::default();
        let w = Workload::new(&cfg);
        let p = w.place(3);
        let id = w.order_id(3);
        let body = format!(
            r#"{{"partition":0,"seq":9,"events":[{{"seq":9,"event":"accepted","market":"MKT{m}","id":"{id}","side":"buy","price":"1.5","qty":"2"}},{{"seq":9,"event":"trade","market":"MKT{m}","maker":"x","taker":"{id}","price":"1.50","qty":"1"}}]}}"#,
            m = p.market
        );
        let (_, json) = read_place(body.as_bytes(), &id, &p).expect("reads");
        let reply = pb::SubmitReply {
            tag: 0,
            result: Some(pb::submit_reply::Result::Reply(pb::CommandReply {
                partition: 0,
                seq: 9,
                events: vec![
                    pb::Event {
                        seq: 9,
                        kind: pb::EventKind::Accepted as i32,
                        market: Some(format!("MKT{}", p.market)),
                        id: Some(id.clone()),
                        price: Some("1.5".into()),
                        qty: Some("2".into()),
                        ..Default::default()
                    },
                    pb::Event {
                        seq: 9,
                        kind: pb::EventKind::Trade as i32,
                        market: Some(format!("MKT{}", p.market)),
                        maker: Some("x".into()),
                        taker: Some(id.clone()),
                        price: Some("1.5".into()),
                        qty: Some("1".into()),
                        ..Default::default()
                    },
                ],
            })),
        };
        let mut top = BTreeMap::new();
        let s = settle(&w, Op::Place(3), &reply, &mut top, &mut String::new());
        assert_eq!(s.kind, Kind::Ok);
        let ack = s.ack.expect("acknowledged");
        assert_eq!(
            (ack.seq, ack.digest, ack.expect),
            (9, json.digest, json.expect)
        );
        assert_eq!(top.get(&0), Some(&9));
        // An error reply counts under its HTTP status.
        let e = pb::SubmitReply {
            tag: 0,
            result: Some(pb::submit_reply::Result::Error(pb::SubmitError {
                code: 14,
                http_status: 503,
                message: "overloaded".into(),
                retry_after: 1,
            })),
        };
        assert_eq!(
            settle(&w, Op::Place(3), &e, &mut top, &mut String::new()).kind,
            Kind::Http(503)
        );
    }

    /// A node of this build on a runtime of its own, over a file log in a
    /// fresh directory (fsync off: the test is about counting, not disks).
    struct TestNode {
        url: String,
        node: Arc<tandem_node::Node>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
        dir: std::path::PathBuf,
    }

    impl TestNode {
        fn start(tag: &str) -> TestNode {
            let dir = std::env::temp_dir().join(format!("loadgen-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = tandem_node::NodeConfig {
                data_dir: dir.clone(),
                ..tandem_node::NodeConfig::default()
            };
            cfg.log.fsync = false;
            cfg.limits.account_rate = 0;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let node = tandem_node::Node::start(cfg).expect("start node");
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let n = Arc::clone(&node);
            let thread = std::thread::spawn(move || {
                rt.block_on(tandem_node::server::serve(
                    listener,
                    n,
                    async move {
                        let _ = rx.await;
                    },
                    Duration::ZERO,
                ));
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            while !node.is_caught_up() {
                assert!(Instant::now() < deadline, "node did not catch up");
                std::thread::sleep(Duration::from_millis(10));
            }
            TestNode {
                url,
                node,
                stop: Some(tx),
                thread: Some(thread),
                dir,
            }
        }
    }

    impl Drop for TestNode {
        fn drop(&mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            self.node.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A short closed loop against a real node: every reply counted, every
    /// acknowledged order read back over HTTP, every replayed place given
    /// its original seq and events (same digest as the stream's reply).
    #[test]
    fn a_stream_run_against_a_node_counts_and_verifies_every_order() {
        let n = TestNode::start("stream-run");
        let cfg = LoadgenConfig {
            targets: vec![n.url.clone()],
            grpc_stream: true,
            connections: 2,
            stream_in_flight: 64,
            warmup_s: 0.2,
            duration_s: 1.0,
            threads: 1,
            replay_ratio: 1.0,
            ..LoadgenConfig::default()
        };
        let r = crate::run(&cfg).expect("runs");
        assert_eq!(r.mode, "grpc-stream orders");
        assert_eq!(r.max_in_flight, 128);
        assert!(r.measured > 100, "{r}");
        assert_eq!(r.ok, r.measured, "{r}");
        assert_eq!(r.errors.total(), 0, "{r}");
        assert_eq!(r.orders.acknowledged, r.orders.placed, "{r}");
        assert!(r.orders.cancels_confirmed > 0, "{r}");
        let v = r.verify.as_ref().expect("verified");
        assert_eq!(v.checked, r.orders.accepted, "{r}");
        assert_eq!(v.visible, v.checked, "{r}");
        assert_eq!(v.replayed, v.checked, "{r}");
        assert_eq!(
            (v.lost, v.duplicated, v.inconsistent, v.unverified),
            (0, 0, 0, 0),
            "{r}"
        );
    }

    /// Signed orders over the stream: each request carries its own
    /// signature and expiry, and the node (which verifies any signed
    /// order, whatever its `auth`) takes every one.
    #[test]
    fn a_signed_stream_run_is_taken_and_verified() {
        let n = TestNode::start("stream-signed");
        let cfg = LoadgenConfig {
            targets: vec![n.url.clone()],
            grpc_stream: true,
            connections: 1,
            stream_in_flight: 16,
            warmup_s: 0.0,
            duration_s: 0.5,
            threads: 1,
            accounts: 20,
            sign: Some("ed25519".into()),
            sign_chain_id: n.node.cfg.signing.chain_id,
            ..LoadgenConfig::default()
        };
        let r = crate::run(&cfg).expect("runs");
        assert!(r.measured > 10, "{r}");
        assert_eq!((r.ok, r.errors.total()), (r.measured, 0), "{r}");
        let v = r.verify.as_ref().expect("verified");
        assert_eq!(v.visible, v.checked, "{r}");
        assert_eq!((v.lost, v.duplicated, v.inconsistent), (0, 0, 0), "{r}");
        // Signed with another chain id: every request refused, 401.
        let r = crate::run(&LoadgenConfig {
            sign_chain_id: cfg.sign_chain_id + 1,
            verify: false,
            ..cfg
        })
        .expect("runs");
        assert_eq!(r.ok, 0, "{r}");
        assert_eq!(r.errors.http_4xx.get("401"), Some(&r.measured), "{r}");
    }

    /// A stream place carries what the HTTP body of the same op carries.
    #[test]
    fn stream_places_are_the_http_places() {
        let cfg = LoadgenConfig::default();
        let w = Workload::new(&cfg);
        for n in 0..200 {
            let body = w.place_request(n).body;
            let http: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let Some(pb::submit_request::Command::Place(p)) = request(&w, Op::Place(n), n).command
            else {
                panic!("a place")
            };
            assert_eq!(http["market"], p.market.as_str());
            assert_eq!(http["id"], p.id.as_str());
            assert_eq!(http["account"], p.account.as_str());
            assert_eq!(http["qty"], p.qty.as_str());
            assert_eq!(http["price"].as_str(), p.price.as_deref());
            let side = if p.side == pb::Side::Buy as i32 {
                "buy"
            } else {
                "sell"
            };
            assert_eq!(http["side"], side);
            let tif = if p.tif == pb::TimeInForce::Ioc as i32 {
                "ioc"
            } else {
                "gtc"
            };
            assert_eq!(http["tif"], tif);
            let ty = if p.r#type == pb::OrderType::Market as i32 {
                "market"
            } else {
                "limit"
            };
            assert_eq!(http["type"], ty);
            assert_eq!(http["post_only"].as_bool().unwrap_or(false), p.post_only);
        }
    }
}
