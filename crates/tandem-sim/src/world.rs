//! One simulated exchange: clients, an edge, nodes and one log, driven by
//! the scheduler from one seed. What runs is Tandem's own code wherever a
//! decision is made: the replica and engine apply the log, the node's
//! answer rules (`tandem_node::answers`) decide what a request is answered,
//! the edge's routing table (`tandem_edge::table::Routes`) holds the
//! weights and their generations, and the edge's attempt rules
//! (`tandem_edge::attempt`) choose each node, judge each outcome, eject
//! failing nodes and decide what is sent again. The simulation owns only
//! what is outside: time, the network, the disk's faults, crashes, and the
//! node's threads (batching and waiting are modelled here).
//!
//! Invariants are checked after every event (`check_step`) and at the end
//! (`check_end`); the first violation stops the run and is reported with
//! the seed, the virtual time and the event trail.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tandem_core::Command;
use tandem_edge::attempt::{self, Plan, Routed, Tried, Verdict};
use tandem_edge::config::EdgeConfig;
use tandem_edge::table::NodeState;
use tandem_log::Log;
use tandem_node::answers::{After, Answers, Before, Outcome};
use tandem_node::window;
use tandem_replica::{Replica, ReplicaConfig, SnapshotPolicy};

use crate::rng::Rng;
use crate::sched::{Micros, Scheduler};
use crate::simlog::SimLog;

/// Fault rates, per mille of the chances to strike.
#[derive(Debug, Clone)]
pub struct Faults {
    /// An append fails before anything is written.
    pub append_fails: u32,
    /// An append is written but its acknowledgement is lost (the appender
    /// sees an error: a Kafka timeout after the broker committed).
    pub ack_lost: u32,
    /// An append takes 20–200 ms instead of 0.1–2 ms.
    pub slow_append: u32,
    /// A request from the edge never reaches the node.
    pub request_lost: u32,
    /// A node's answer never reaches the edge.
    pub response_lost: u32,
    /// A node crashes after handling an event (restarts later from its
    /// newest snapshot plus the log tail).
    pub crash: u32,
}

impl Faults {
    /// Rates drawn from the seed: some runs are calm, some are stormy.
    pub fn draw(rng: &mut Rng) -> Faults {
        let mut rate = |max: u64| rng.below(max + 1) as u32;
        Faults {
            append_fails: rate(60),
            ack_lost: rate(60),
            slow_append: rate(80),
            request_lost: rate(80),
            response_lost: rate(120),
            crash: rate(8),
        }
    }
}

/// What one run is made of.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub nodes: usize,
    pub clients: usize,
    pub requests_per_client: usize,
    pub faults: Faults,
    /// Snapshot every this many applied commands.
    pub snapshot_every: u64,
    /// Where the nodes keep their snapshots (a fresh directory per run).
    pub dir: PathBuf,
    /// The nodes' windows of places and of changed orders
    /// (`limits.idempotency_window`, `limits.change_window`); a window of
    /// 0 turns that deduplication off (how the simulation shows it finds
    /// the bug the window fixes).
    pub place_window: usize,
    pub change_window: usize,
    /// Admin writers of the edge's weights (read, then write based on the
    /// generation read), each owning one cluster.
    pub weight_writers: usize,
    /// SIGHUP reloads of the edge's file meanwhile.
    pub reloads: usize,
    /// A reload takes the file's weights (the behaviour before admin
    /// weights survived a reload; `POST /admin/reload?weights=file`).
    pub reload_takes_file_weights: bool,
    /// Weight writers send no generation (last writer wins).
    pub writes_without_generation: bool,
    /// The nodes give the amends they append a base
    /// (`log.retry_safe_amends`), so the clients may repeat an amend like
    /// a cancel, and the edge passes one on after a node's 502–504. Off: a
    /// repeated amend whose first copy also reached the log applies twice
    /// (what the simulation found before bases existed, when the edge
    /// repeated amends after timeouts too).
    pub retry_safe_amends: bool,
    /// The edge's upstream timeout (`upstream.request_timeout_ms`).
    pub edge_timeout_ms: u64,
}

impl Options {
    /// The shape of a run, drawn from its seed.
    pub fn from_seed(seed: u64, dir: PathBuf) -> Options {
        let mut rng = Rng::new(seed ^ 0x0005_EED0_F5E7_5EED);
        Options {
            seed,
            nodes: rng.range(2, 4) as usize,
            clients: rng.range(2, 5) as usize,
            requests_per_client: rng.range(5, 25) as usize,
            faults: Faults::draw(&mut rng),
            snapshot_every: rng.range(4, 40),
            dir,
            place_window: 200_000,
            change_window: 200_000,
            weight_writers: rng.range(0, 2) as usize,
            reloads: rng.range(0, 2) as usize,
            reload_takes_file_weights: false,
            writes_without_generation: false,
            retry_safe_amends: true,
            edge_timeout_ms: rng.range(20, 2_000),
        }
    }
}

/// A violated invariant, with where and when.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub at: Micros,
    pub what: String,
    /// The last events before the violation, oldest first.
    pub trail: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} at {} us: {}", self.seed, self.at, self.what)?;
        for t in &self.trail {
            writeln!(f, "  {t}")?;
        }
        write!(
            f,
            "replay: cargo run -p tandem-sim --bin tandem-sim -- --seed {}",
            self.seed
        )
    }
}

/// What a run did, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub requests: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub attempts: u64,
    pub crashes: u64,
    pub log_records: u64,
    pub weight_writes_acknowledged: u64,
    pub weight_writes_refused: u64,
    /// The output hash chain every replica ended with.
    pub chain: u128,
}

/// A client's request, identified by (client, number).
#[derive(Debug, Clone)]
struct Request {
    client: usize,
    /// The method and path the edge sees (for `repeatable`).
    method: http::Method,
    path: String,
    /// The command as the node receives it, and its canonical bytes.
    cmd: Command,
    payload: Bytes,
    /// Client-side sends so far (a client repeats a failed request).
    sends: u32,
    /// The answers the client was given (seq and events), every one.
    answers: Vec<(u64, Bytes)>,
    done: bool,
}

/// One attempt of the edge at a request.
#[derive(Debug, Clone)]
struct Attempt {
    req: usize,
    /// Which client send this attempt belongs to.
    send: u32,
    /// The edge's health record of the node tried.
    state: Arc<NodeState>,
    answered: bool,
}

/// What a node tells the edge.
#[derive(Debug, Clone)]
enum Reply {
    Ok(Arc<Outcome>),
    /// 409: the id was taken by another request.
    Conflict,
    /// 503: not ready, overloaded, or the log failed.
    Unavailable,
}

#[derive(Debug)]
struct Node {
    up: bool,
    /// Bumped at each crash: events of an older life are ignored.
    life: u32,
    replica: Option<Replica>,
    answers: Answers,
    /// Commands waiting for the appender: (attempt, payload).
    queue: VecDeque<(usize, Bytes)>,
    appending: bool,
    /// Attempts appended at a seq and waiting for the replica: seq -> attempt.
    waiting: BTreeMap<u64, usize>,
    snap_dir: PathBuf,
}

#[derive(Debug)]
enum Ev {
    ClientSend {
        req: usize,
    },
    NodeRecv {
        node: usize,
        life: u32,
        attempt: usize,
    },
    AppendDone {
        node: usize,
        life: u32,
    },
    Follow {
        node: usize,
        life: u32,
    },
    EdgeRecv {
        attempt: usize,
        reply: Reply,
    },
    AttemptTimeout {
        attempt: usize,
    },
    /// The edge's next attempt at a client's send (after its backoff).
    EdgeNext {
        req: usize,
        send: u32,
    },
    /// The edge's active check of every node (`GET /readyz`).
    Probe,
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    /// An admin writer reads the weights and their generation...
    WeightRead {
        writer: usize,
    },
    /// ...and later writes its cluster's new weight based on what it read.
    WeightWrite {
        writer: usize,
        based_on: u64,
        weights: BTreeMap<String, u32>,
        value: u32,
    },
    /// SIGHUP: the edge reloads its file.
    Reload,
}

/// An admin client of the edge's weights (a controller, an operator).
#[derive(Debug)]
struct Writer {
    cluster: String,
    writes_left: usize,
    /// The value of its last acknowledged write.
    acked: Option<u32>,
}

/// Timeout of one attempt at the edge.
/// Most sends a client makes for one request (it repeats failures).
const MAX_SENDS: u32 = 6;

pub struct World {
    opts: Options,
    rng: Rng,
    sched: Scheduler<Ev>,
    log: Arc<SimLog>,
    nodes: Vec<Node>,
    reqs: Vec<Request>,
    attempts: Vec<Attempt>,
    /// Next request number per client, and the orders each has placed
    /// (market, id) with acknowledgements, to cancel and amend.
    next: Vec<usize>,
    placed: Vec<Vec<String>>,
    /// Chain of the first replica to apply each seq, and whether the
    /// command took effect (was not rejected).
    chains: BTreeMap<u64, u128>,
    effects: BTreeMap<u64, bool>,
    /// The request each log record was appended for.
    origin: BTreeMap<u64, usize>,
    trail: VecDeque<String>,
    summary: Summary,
    /// The edge's live routing table (real code) and its file's clusters.
    routes: tandem_edge::table::Routes,
    file_clusters: Vec<tandem_edge::config::ClusterConfig>,
    writers: Vec<Writer>,
    /// The edge's settings (its defaults, with the upstream timeout drawn
    /// from the seed) and its attempt plan per client send.
    edge_cfg: EdgeConfig,
    plans: BTreeMap<(usize, u32), Plan<'static>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.opts.seed)
            .finish()
    }
}

const MARKETS: [&str; 2] = ["BTC-USD", "ETH-USD"];
const TRAIL: usize = 40;

impl World {
    pub fn new(opts: Options) -> World {
        let _ = std::fs::remove_dir_all(&opts.dir);
        let rng = Rng::new(opts.seed);
        let log = Arc::new(SimLog::new(&format!("sim:{}", opts.seed)));
        let nodes = (0..opts.nodes)
            .map(|i| Node {
                up: false,
                life: 0,
                replica: None,
                answers: Answers::new(opts.place_window, opts.change_window),
                queue: VecDeque::new(),
                appending: false,
                waiting: BTreeMap::new(),
                snap_dir: opts.dir.join(format!("node-{i}")),
            })
            .collect();
        let file_clusters: Vec<_> = (0..opts.nodes)
            .map(|i| tandem_edge::config::ClusterConfig {
                name: format!("c{i}"),
                version: "v1".into(),
                role: tandem_edge::config::Role::Stable,
                weight: 100,
                nodes: vec![tandem_edge::config::NodeAddr {
                    addr: format!("node-{i}:8080"),
                    zone: "z".into(),
                }],
            })
            .collect();
        let routes = tandem_edge::table::Routes::new(&file_clusters);
        let writers = (0..opts.weight_writers.min(opts.nodes))
            .map(|i| Writer {
                cluster: format!("c{i}"),
                writes_left: 3,
                acked: None,
            })
            .collect();
        let mut edge_cfg = EdgeConfig::default();
        edge_cfg.upstream.request_timeout_ms = opts.edge_timeout_ms;
        let mut w = World {
            edge_cfg,
            plans: BTreeMap::new(),
            routes,
            file_clusters,
            writers,
            rng,
            sched: Scheduler::default(),
            log,
            nodes,
            reqs: Vec::new(),
            attempts: Vec::new(),
            next: vec![0; opts.clients],
            placed: vec![Vec::new(); opts.clients],
            chains: BTreeMap::new(),
            effects: BTreeMap::new(),
            origin: BTreeMap::new(),
            trail: VecDeque::new(),
            summary: Summary::default(),
            opts,
        };
        for n in 0..w.nodes.len() {
            w.start_node(n);
        }
        for c in 0..w.opts.clients {
            let d = w.rng.range(0, 2_000);
            w.new_request(c, d);
        }
        for writer in 0..w.writers.len() {
            let d = w.rng.range(0, 50_000);
            w.sched.after(d, Ev::WeightRead { writer });
        }
        w.sched.after(0, Ev::Probe);
        for _ in 0..w.opts.reloads {
            let d = w.rng.range(0, 200_000);
            w.sched.after(d, Ev::Reload);
        }
        w
    }

    /// Runs to the end; the first violated invariant, if any.
    pub fn run(mut self) -> Result<Summary, Violation> {
        while let Some(ev) = self.sched.pop() {
            self.summary.events += 1;
            let line = format!("{:>9} us {ev:?}", self.sched.now());
            if self.trail.len() == TRAIL {
                self.trail.pop_front();
            }
            self.trail.push_back(line);
            self.handle(ev)?;
            self.check_step()?;
            if self.summary.events > 2_000_000 {
                return Err(self.violation("the run did not end (livelock)".into()));
            }
        }
        self.check_end()?;
        self.summary.log_records = self.log.last_seq();
        self.summary.chain = self.nodes[0]
            .replica
            .as_ref()
            .map_or(0, |r| r.engine().chain());
        let _ = std::fs::remove_dir_all(&self.opts.dir);
        Ok(self.summary)
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.opts.seed,
            at: self.sched.now(),
            what,
            trail: self.trail.iter().cloned().collect(),
        }
    }

    // ---- clients ---------------------------------------------------------

    /// Client `c` makes its next request after `delay`.
    fn new_request(&mut self, c: usize, delay: Micros) {
        if self.next[c] >= self.opts.requests_per_client {
            return;
        }
        self.next[c] += 1;
        let account = format!("acct-{c}");
        let mine = self.placed[c].clone();
        let roll = self.rng.below(10);
        let (method, path, line) = if mine.is_empty() || roll < 6 {
            let market = *self.rng.pick(&MARKETS);
            let id = format!("c{c}-{}", self.next[c]);
            let side = if self.rng.below(2) == 0 {
                "buy"
            } else {
                "sell"
            };
            let price = 100 + self.rng.below(5);
            let qty = 1 + self.rng.below(4);
            (
                http::Method::POST,
                "/v1/orders".to_owned(),
                format!(
                    r#"{{"op":"place","market":"{market}","id":"{id}","account":"{account}","side":"{side}","price":"{price}","qty":"{qty}"}}"#
                ),
            )
        } else {
            let key = self.rng.pick(&mine).clone();
            let (market, id) = key.split_once('/').expect("market/id");
            if roll < 8 {
                (
                    http::Method::DELETE,
                    format!("/v1/orders/{market}/{id}"),
                    format!(
                        r#"{{"op":"cancel","market":"{market}","id":"{id}","account":"{account}"}}"#
                    ),
                )
            } else {
                let qty = 1 + self.rng.below(3);
                let price = 100 + self.rng.below(5);
                (
                    http::Method::PATCH,
                    format!("/v1/orders/{market}/{id}"),
                    format!(
                        r#"{{"op":"amend","market":"{market}","id":"{id}","account":"{account}","price":"{price}","qty":"{qty}"}}"#
                    ),
                )
            }
        };
        let cmd = tandem_codec::decode_command(line.as_bytes());
        let mut canon = Vec::new();
        tandem_codec::write_command(&cmd, &mut canon);
        let req = self.reqs.len();
        self.reqs.push(Request {
            client: c,
            method,
            path,
            cmd,
            payload: Bytes::from(canon),
            sends: 0,
            answers: Vec::new(),
            done: false,
        });
        self.summary.requests += 1;
        self.sched.after(delay, Ev::ClientSend { req });
    }

    /// The client's send ended with `reply` (or with a failure: `None`).
    fn client_result(&mut self, req: usize, reply: Option<Reply>) {
        let r = &mut self.reqs[req];
        match reply {
            Some(Reply::Ok(o)) => {
                r.answers.push((o.seq, o.events.clone()));
                r.done = true;
                self.summary.acknowledged += 1;
                if let Command::Place(p) = &r.cmd {
                    let key = format!("{}/{}", p.market.as_str(), p.id.as_str());
                    let c = r.client;
                    if !self.placed[c].contains(&key) {
                        self.placed[c].push(key);
                    }
                }
            }
            Some(Reply::Conflict) => {
                // A client's own retry never conflicts (same bytes); a
                // conflict ends the request as refused.
                r.done = true;
                self.summary.failed += 1;
            }
            Some(Reply::Unavailable) | None => {
                // A client repeats a failed place, cancel or amend: their
                // second copy cannot take effect (a taken id, a cancelled
                // order, an amend equal to the order's latest change).
                if r.sends < MAX_SENDS {
                    let backoff = 5_000 * u64::from(r.sends);
                    self.sched.after(backoff, Ev::ClientSend { req });
                    return;
                }
                r.done = true;
                self.summary.failed += 1;
            }
        }
        let c = self.reqs[req].client;
        let think = self.rng.range(0, 3_000);
        self.new_request(c, think);
    }

    // ---- edge ------------------------------------------------------------

    fn now_ms(&self) -> u64 {
        self.sched.now() / 1_000
    }

    /// A client's send reaches the edge: the edge plans its attempts over
    /// the table as it is now (the real `attempt::Plan`).
    fn edge_start(&mut self, req: usize, send: u32) {
        let r = &self.reqs[req];
        let method = r.method.clone();
        let who = Routed {
            pin: None,
            account: Some(format!("acct-{}", r.client).into_bytes()),
            key: req as u64,
        };
        let plan = Plan::new(
            self.routes.table(),
            who,
            (&method, &r.path),
            "z",
            self.now_ms(),
            self.edge_cfg.retry.max_attempts,
        );
        self.plans.insert((req, send), plan);
        self.edge_next(req, send);
    }

    /// The edge's next attempt, or its 503 to the client when the plan
    /// has no node left.
    fn edge_next(&mut self, req: usize, send: u32) {
        let Some(plan) = self.plans.get_mut(&(req, send)) else {
            return;
        };
        let Some((ci, state)) = plan.next_node() else {
            self.plans.remove(&(req, send));
            self.client_result(req, Some(Reply::Unavailable));
            return;
        };
        plan.sent(&state);
        let name = &plan.table().clusters[ci].name;
        let node = name[1..].parse::<usize>().expect("cluster cN");
        let attempt = self.attempts.len();
        self.attempts.push(Attempt {
            req,
            send,
            state,
            answered: false,
        });
        self.summary.attempts += 1;
        if !self.rng.chance(self.opts.faults.request_lost) {
            let d = self.net_delay();
            let life = self.nodes[node].life;
            self.sched.after(
                d,
                Ev::NodeRecv {
                    node,
                    life,
                    attempt,
                },
            );
        }
        let timeout = self.edge_cfg.upstream.request_timeout_ms * 1_000;
        self.sched.after(timeout, Ev::AttemptTimeout { attempt });
    }

    /// How an attempt ended, judged by the edge's rules: the node's
    /// health record, then the answer, another node, or a 502/504.
    fn edge_outcome(&mut self, attempt: usize, tried: Tried, reply: Option<Reply>) {
        let a = &self.attempts[attempt];
        let (req, send) = (a.req, a.send);
        let h = &self.edge_cfg.health;
        if attempt::is_failure(tried) {
            attempt::record_failure(&a.state, h.eject_after_failures, h.eject_ms, self.now_ms());
        } else {
            attempt::record_success(&a.state);
        }
        let Some(plan) = self.plans.get(&(req, send)) else {
            return;
        };
        match plan.judge(tried) {
            Verdict::Answer => {
                self.plans.remove(&(req, send));
                self.client_result(req, reply);
            }
            Verdict::NotRepeated => {
                self.plans.remove(&(req, send));
                self.client_result(req, None);
            }
            Verdict::TryAnother => {
                let backoff = self.edge_cfg.retry.backoff_ms * 1_000;
                self.sched.after(backoff, Ev::EdgeNext { req, send });
            }
        }
    }

    fn net_delay(&mut self) -> Micros {
        self.rng.range(50, 3_000)
    }

    // ---- nodes -----------------------------------------------------------

    fn replica_config(&self, node: usize) -> ReplicaConfig {
        let mut cfg = ReplicaConfig::new(self.nodes[node].snap_dir.clone());
        cfg.policy = SnapshotPolicy {
            every_commands: self.opts.snapshot_every,
            every: None,
            keep: 2,
            background: false,
        };
        cfg.read_batch = 64;
        cfg
    }

    /// Opens the node's replica from its newest snapshot (and the answers
    /// saved with it) and applies the log tail.
    fn start_node(&mut self, n: usize) {
        let cfg = self.replica_config(n);
        let log: Arc<dyn Log> = Arc::clone(&self.log) as Arc<dyn Log>;
        let (replica, _) = Replica::open(log, cfg).expect("sim replica opens");
        let node = &mut self.nodes[n];
        let mut answers = Answers::new(self.opts.place_window, self.opts.change_window);
        let (entries, _problem) = window::load(&node.snap_dir, replica.applied_seq());
        answers.restore(entries);
        node.answers = answers;
        node.replica = Some(replica);
        node.up = true;
        self.follow(n);
    }

    /// Applies what the log holds beyond the node's replica, feeding the
    /// node's answers, and answers attempts waiting for those seqs.
    fn follow(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        let answers = &mut node.answers;
        let mut applied = Vec::new();
        let before = replica.last_snapshot_seq();
        loop {
            let k = replica
                .step(|seq, cmd, eng, evs| {
                    let took_effect = !evs
                        .iter()
                        .any(|e| matches!(e, tandem_core::Event::Rejected { .. }));
                    let o = answers.applied(seq, cmd, eng, evs);
                    applied.push((seq, eng.chain(), took_effect, o));
                })
                .expect("sim log reads");
            if k == 0 {
                break;
            }
        }
        let snap = replica.last_snapshot_seq();
        if snap != before {
            // The window goes beside the snapshot, as the node saves it.
            let bytes = window::encode(answers.window().entries(snap).iter());
            window::save(&node.snap_dir, snap, &bytes).expect("sim window saves");
        }
        for (seq, chain, took_effect, outcome) in applied {
            self.effects.entry(seq).or_insert(took_effect);
            match self.chains.get(&seq) {
                None => {
                    self.chains.insert(seq, chain);
                }
                Some(&c) if c != chain => {
                    // Reported by check_step through `diverged`.
                    self.trail.push_back(format!(
                        "node {n} chain {chain:x} at seq {seq}, first {c:x}"
                    ));
                    self.chains.insert(u64::MAX, 0);
                }
                Some(_) => {}
            }
            if let Some(attempt) = self.nodes[n].waiting.remove(&seq) {
                let req = self.attempts[attempt].req;
                let r = &self.reqs[req];
                let reply = match self.nodes[n].answers.after(&r.cmd, &r.payload, outcome) {
                    After::Answer(o) => Reply::Ok(o),
                    After::Conflict => Reply::Conflict,
                };
                self.reply(n, attempt, reply);
            }
        }
    }

    fn reply(&mut self, _node: usize, attempt: usize, reply: Reply) {
        if self.rng.chance(self.opts.faults.response_lost) {
            return;
        }
        let d = self.net_delay();
        self.sched.after(d, Ev::EdgeRecv { attempt, reply });
    }

    fn node_recv(&mut self, n: usize, attempt: usize) {
        let req = self.attempts[attempt].req;
        let r = &self.reqs[req];
        // As the node's API: an amend's base is read from this node's
        // replica before the windows are asked (`Amend::base`).
        let mut cmd = r.cmd.clone();
        if let (Command::Amend(a), true) = (&mut cmd, self.opts.retry_safe_amends) {
            let replica = self.nodes[n].replica.as_ref().expect("up");
            a.base = Some(replica.engine().order_changes(
                a.market.as_bytes(),
                a.id.as_bytes(),
                a.account.as_bytes(),
            ));
        }
        let before = self.nodes[n].answers.before(&r.cmd, &r.payload);
        match before {
            Before::Answer(o) => self.reply(n, attempt, Reply::Ok(o)),
            Before::Conflict => self.reply(n, attempt, Reply::Conflict),
            Before::Append => {
                let mut record = Vec::with_capacity(r.payload.len() + 16);
                tandem_codec::write_record(&cmd, &mut record);
                let payload = Bytes::from(record);
                let node = &mut self.nodes[n];
                node.queue.push_back((attempt, payload));
                if !node.appending {
                    node.appending = true;
                    let slow = self.rng.chance(self.opts.faults.slow_append);
                    let d = if slow {
                        self.rng.range(20_000, 200_000)
                    } else {
                        self.rng.range(100, 2_000)
                    };
                    let life = self.nodes[n].life;
                    self.sched.after(d, Ev::AppendDone { node: n, life });
                }
            }
        }
    }

    /// The appender's batch: everything queued, as one append.
    fn append_done(&mut self, n: usize) {
        let batch: Vec<(usize, Bytes)> = self.nodes[n].queue.drain(..).collect();
        self.nodes[n].appending = false;
        let fails = self.rng.chance(self.opts.faults.append_fails);
        let ack_lost = !fails && self.rng.chance(self.opts.faults.ack_lost);
        if !fails {
            let refs: Vec<&[u8]> = batch.iter().map(|(_, p)| &p[..]).collect();
            let first = self.log.append(&refs).expect("sim log appends");
            for (k, (attempt, _)) in batch.iter().enumerate() {
                self.origin
                    .insert(first + k as u64, self.attempts[*attempt].req);
            }
            if !ack_lost {
                for (k, (attempt, _)) in batch.iter().enumerate() {
                    self.nodes[n].waiting.insert(first + k as u64, *attempt);
                }
            }
        }
        if fails || ack_lost {
            for (attempt, _) in batch {
                self.reply(n, attempt, Reply::Unavailable);
            }
        }
        self.follow(n);
    }

    fn crash(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if !node.up {
            return;
        }
        node.up = false;
        node.life += 1;
        node.replica = None;
        node.answers = Answers::new(self.opts.place_window, self.opts.change_window);
        node.queue.clear();
        node.appending = false;
        node.waiting.clear();
        self.summary.crashes += 1;
        let d = self.rng.range(1_000, 300_000);
        self.sched.after(d, Ev::Restart { node: n });
    }

    // ---- the loop --------------------------------------------------------

    fn handle(&mut self, ev: Ev) -> Result<(), Violation> {
        match ev {
            Ev::ClientSend { req } => {
                self.reqs[req].sends += 1;
                let send = self.reqs[req].sends;
                self.edge_start(req, send);
            }
            Ev::EdgeNext { req, send } => self.edge_next(req, send),
            Ev::Probe => {
                // `/readyz` is 200 when the node is up (and caught up:
                // a node here applies the tail as it starts).
                let table = self.routes.table();
                for (i, c) in table.clusters.iter().enumerate() {
                    let up = self.nodes.get(i).is_some_and(|n| n.up);
                    for n in &c.nodes {
                        n.state
                            .ready
                            .store(up, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if self.reqs.iter().any(|r| !r.done) || self.sched.pending() > 0 {
                    let every = self.edge_cfg.health.interval_ms * 1_000;
                    self.sched.after(every, Ev::Probe);
                }
            }
            Ev::NodeRecv {
                node,
                life,
                attempt,
            } => {
                if self.nodes[node].up && self.nodes[node].life == life {
                    self.node_recv(node, attempt);
                    self.maybe_crash(node);
                }
            }
            Ev::AppendDone { node, life } => {
                if self.nodes[node].up && self.nodes[node].life == life {
                    self.append_done(node);
                    self.maybe_crash(node);
                }
            }
            Ev::Follow { node, life } => {
                if self.nodes[node].up && self.nodes[node].life == life {
                    self.follow(node);
                }
            }
            Ev::EdgeRecv { attempt, reply } => {
                let a = &mut self.attempts[attempt];
                let (req, send) = (a.req, a.send);
                // Late (the attempt timed out, or the client moved on).
                if a.answered || self.reqs[req].done || self.reqs[req].sends != send {
                    return Ok(());
                }
                a.answered = true;
                let status = match reply {
                    Reply::Ok(_) => 200,
                    Reply::Conflict => 409,
                    Reply::Unavailable => 503,
                };
                self.edge_outcome(attempt, Tried::Answered(status), Some(reply));
            }
            Ev::AttemptTimeout { attempt } => {
                let a = &mut self.attempts[attempt];
                let (req, send) = (a.req, a.send);
                if a.answered || self.reqs[req].done || self.reqs[req].sends != send {
                    return Ok(());
                }
                a.answered = true;
                self.edge_outcome(attempt, Tried::TimedOut, None);
            }
            Ev::Crash { node } => self.crash(node),
            Ev::Restart { node } => self.start_node(node),
            Ev::WeightRead { writer } => {
                let (generation, _) = self.routes.admin_state();
                let table = self.routes.table();
                let weights: BTreeMap<String, u32> = table
                    .clusters
                    .iter()
                    .map(|c| (c.name.clone(), c.weight))
                    .collect();
                let value = self.rng.range(1, 100) as u32;
                // The write comes later: other writers and reloads may
                // land in between (that is the race the generation closes).
                let d = self.rng.range(0, 30_000);
                self.sched.after(
                    d,
                    Ev::WeightWrite {
                        writer,
                        based_on: generation,
                        weights,
                        value,
                    },
                );
            }
            Ev::WeightWrite {
                writer,
                based_on,
                mut weights,
                value,
            } => {
                let cluster = self.writers[writer].cluster.clone();
                weights.insert(cluster, value);
                let based_on = (!self.opts.writes_without_generation).then_some(based_on);
                match self.routes.set_weights(&weights, based_on) {
                    Ok(_) => {
                        self.summary.weight_writes_acknowledged += 1;
                        let w = &mut self.writers[writer];
                        w.acked = Some(value);
                        w.writes_left -= 1;
                        if w.writes_left > 0 {
                            let d = self.rng.range(0, 40_000);
                            self.sched.after(d, Ev::WeightRead { writer });
                        }
                    }
                    Err(tandem_edge::table::WriteError::Stale { .. }) => {
                        // 409: read again and redo the change.
                        self.summary.weight_writes_refused += 1;
                        let d = self.rng.range(0, 5_000);
                        self.sched.after(d, Ev::WeightRead { writer });
                    }
                    Err(e) => return Err(self.violation(format!("weight write refused: {e}"))),
                }
            }
            Ev::Reload => {
                let file = self.file_clusters.clone();
                if let Err(e) = self
                    .routes
                    .reload(&file, self.opts.reload_takes_file_weights)
                {
                    return Err(self.violation(format!("reload refused: {e}")));
                }
            }
        }
        // Every node follows the log now and then (others' appends).
        if self.rng.chance(200) {
            let n = self.rng.below(self.nodes.len() as u64) as usize;
            let life = self.nodes[n].life;
            let d = self.rng.range(100, 5_000);
            self.sched.after(d, Ev::Follow { node: n, life });
        }
        Ok(())
    }

    fn maybe_crash(&mut self, n: usize) {
        if self.rng.chance(self.opts.faults.crash) {
            self.sched.after(0, Ev::Crash { node: n });
        }
    }

    // ---- invariants ------------------------------------------------------

    fn check_step(&self) -> Result<(), Violation> {
        if self.chains.contains_key(&u64::MAX) {
            return Err(self.violation("replicas disagree: two chains at one seq".into()));
        }
        // No acknowledged weight change is lost or undone: each writer
        // owns its cluster, so the table must show its last acknowledged
        // value.
        let table = self.routes.table();
        for w in &self.writers {
            let Some(v) = w.acked else { continue };
            let now = table
                .clusters
                .iter()
                .find(|c| c.name == w.cluster)
                .map(|c| c.weight);
            if now != Some(v) {
                return Err(self.violation(format!(
                    "weight of {} is {now:?}, but the last acknowledged write set {v} (lost or undone)",
                    w.cluster
                )));
            }
        }
        Ok(())
    }

    fn check_end(&mut self) -> Result<(), Violation> {
        // Bring every node up and to the end of the log.
        for n in 0..self.nodes.len() {
            if !self.nodes[n].up {
                self.start_node(n);
            }
            self.follow(n);
        }
        self.check_step()?;
        let last = self.log.last_seq();
        let chains: BTreeSet<u128> = self
            .nodes
            .iter()
            .map(|n| {
                let r = n.replica.as_ref().expect("up");
                assert_eq!(r.applied_seq(), last);
                r.engine().chain()
            })
            .collect();
        if chains.len() != 1 {
            return Err(self.violation(format!("replicas end with {} chains", chains.len())));
        }
        // Every request ended with an answer or an error.
        if let Some((i, _)) = self.reqs.iter().enumerate().find(|(_, r)| !r.done) {
            return Err(self.violation(format!("request {i} never got an answer or an error")));
        }
        // None applied twice: a request took effect at most once, however
        // many copies of it reached the log.
        let mut effective: BTreeMap<usize, u64> = BTreeMap::new();
        for (&seq, &took_effect) in &self.effects {
            let Some(&req) = self.origin.get(&seq) else {
                continue;
            };
            if took_effect {
                if let Some(first) = effective.insert(req, seq) {
                    let r = &self.reqs[req];
                    return Err(self.violation(format!(
                        "request {req} took effect twice: seq {first} and seq {seq}: {}",
                        String::from_utf8_lossy(&r.payload)
                    )));
                }
            }
        }
        let engine = self.nodes[0].replica.as_ref().expect("up").engine();
        for (i, r) in self.reqs.iter().enumerate() {
            // Every acknowledgement names a seq that holds this request
            // (its canonical bytes: the record's, less an amend's base).
            for (seq, _) in &r.answers {
                let held = self.log.get(*seq).map(|rec| {
                    let mut canon = Vec::new();
                    tandem_codec::write_command(&tandem_codec::decode_record(&rec), &mut canon);
                    canon
                });
                if held.as_deref() != Some(&r.payload[..]) {
                    return Err(self.violation(format!(
                        "request {i} was acknowledged at seq {seq}, which holds another command"
                    )));
                }
            }
            // A retried request gets the original answer: the answer of
            // the copy that took effect, whichever copy it was answered for.
            if let (Some(&took), Some((seq, _))) = (effective.get(&i), r.answers.first()) {
                if *seq != took {
                    return Err(self.violation(format!(
                        "request {i} ({} {}) took effect at seq {took} but was answered with seq {seq}: {}",
                        r.method,
                        r.path,
                        String::from_utf8_lossy(&r.answers[0].1)
                    )));
                }
            }
            // A repeated request gets the same answer every time.
            if let Some(first) = r.answers.first() {
                if r.answers.iter().any(|a| a != first) {
                    return Err(self.violation(format!(
                        "request {i} ({} {}) got different answers: {:?}",
                        r.method,
                        r.path,
                        r.answers
                            .iter()
                            .map(|(s, e)| format!("seq {s} {}", String::from_utf8_lossy(e)))
                            .collect::<Vec<_>>()
                    )));
                }
            }
            // No acknowledged order is lost: an acknowledged place is known
            // to the engine (resting, filled or cancelled).
            let accepted = r
                .answers
                .first()
                .is_some_and(|(_, e)| e.windows(10).any(|w| w == b"\"accepted\""));
            if let (Command::Place(p), true) = (&r.cmd, accepted) {
                let known = engine
                    .order(
                        p.market.as_str().as_bytes(),
                        p.id.as_str().as_bytes(),
                        p.account.as_str().as_bytes(),
                    )
                    .is_some();
                if !known {
                    return Err(self.violation(format!(
                        "request {i}: acknowledged order {}/{} is not in the book's history",
                        p.market.as_str(),
                        p.id.as_str()
                    )));
                }
            }
        }
        Ok(())
    }
}
