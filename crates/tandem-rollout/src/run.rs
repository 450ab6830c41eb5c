//! `tandem rollout run`: the shell around the pure parts. Every
//! `metrics.interval` it observes (every edge's `/admin/routes` for the
//! weights it carries and the nodes of each cluster, the edges' `/metrics`
//! for per-cluster requests, 5xx and latency, every node's `/v1/status`,
//! `/readyz` and `/v1/chain/{p}`), turns the readings into an
//! [`Observation`] (`window`, `observe`, `judge`), calls
//! [`decide`](crate::decide::decide), executes the decisions (weights on
//! every edge, a cold cluster started), appends the timeline and saves the
//! state. Windows do not overlap (`window`); between two closed windows
//! a cluster's view carries the last window's verdict (`judged: None`,
//! its breaches kept), so a breach lasts as long as the windows show it
//! and `breach_for` can run out. Operators' commands from the listener (`status`) are fed to
//! `decide` as they come.
//!
//! Time is read here only: `now_ms` is milliseconds since the Unix epoch,
//! so a restarted controller continues on the same clock. The state file
//! is written after every `decide` call (temporary file, fsync, rename);
//! a controller started on an existing one feeds `Input::Restarted`
//! (same phase, never forward).
//!
//! Actuators: the edges' admin API (weight writes carry the generation
//! read just before; `Stale` is read again and retried; an unreachable
//! edge is retried every interval; a refused token stops the run), and
//! [`ClusterStarter`] for `start_cluster` ([`LocalProcesses`]: `sh -c`
//! command lines under `tandem_control::Supervised`;
//! `kube_actuator::KubeStarter`: a StatefulSet scaled from 0), and the
//! layers that follow the edges (`layers`: Consul, Cloudflare KV), told
//! each weight change after the edges.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_control::names::{edge as edge_metric, label, node as node_metric};
use tandem_control::{ControlError, EdgeAdmin, Exposition, Http, NodeClient, Routes, Supervised};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::decide::{
    decide, Act, Command, Decision, HashCheck, Input, Limits, Observation, Stage, State, Weights,
};
use crate::judge::{Appends, CanaryTest, Hist, WindowStats};
use crate::observe::{cluster_hash, cluster_view, NodeReading};
use crate::plan::{MetricsSource, Plan, Version};
use crate::status::{EdgeStatus, Shared, Status, MAX_DECISIONS};
use crate::timeline::{self, Entry};
use crate::window::Windows;

/// Tries of one weight write that meets `Stale` before waiting for the
/// next interval.
const STALE_TRIES: usize = 3;
/// Judging windows close at the latest after this many intervals.
const WINDOW_MAX_INTERVALS: u64 = 10;
/// Commands queued from the listener.
const COMMAND_QUEUE: usize = 16;
/// Most nodes observed per cluster, and clusters' nodes overall.
const MAX_NODES: usize = 256;
/// Checkpoints read per node and partition.
const CHECKPOINTS: usize = 1000;

/// Starts a cold cluster (`start_cluster`): returns once the start is
/// under way; readiness is observed like any node's.
pub trait ClusterStarter: Send {
    fn start(&mut self, cluster: &str) -> Result<(), String>;

    /// Starts that ended since the last call, for an actuator that sees
    /// readiness itself (Kubernetes: `readyReplicas`). The loop prints
    /// each, and a failed one pauses a phase waiting for the cluster.
    fn finished(&mut self) -> Vec<StartReport> {
        Vec::new()
    }
}

/// How a start ended, as its actuator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReport {
    pub cluster: String,
    /// Who started it (`kubernetes context aks, 3 replicas`).
    pub by: String,
    /// Milliseconds from the start to every replica ready, or why not.
    pub ready_ms: Result<u64, String>,
}

/// The local-process actuator: `--start CLUSTER=COMMAND`, a shell command
/// line run with `sh -c`, supervised, its output in `log_dir/start-CLUSTER.log`.
/// The processes live as long as the controller (killed with it).
#[derive(Debug)]
pub struct LocalProcesses {
    commands: BTreeMap<String, String>,
    log_dir: PathBuf,
    running: Vec<Supervised>,
}

impl LocalProcesses {
    pub fn new(commands: BTreeMap<String, String>, log_dir: PathBuf) -> LocalProcesses {
        LocalProcesses {
            commands,
            log_dir,
            running: Vec::new(),
        }
    }
}

impl Drop for LocalProcesses {
    /// A cluster the controller started serves traffic: it outlives the
    /// controller (as it does when the controller is killed); stopping it
    /// is an operator's act, not a side effect of the controller exiting.
    fn drop(&mut self) {
        for p in self.running.drain(..) {
            let _ = p.detach();
        }
    }
}

impl ClusterStarter for LocalProcesses {
    fn start(&mut self, cluster: &str) -> Result<(), String> {
        let Some(line) = self.commands.get(cluster) else {
            return Err(format!(
                "no actuator starts cluster {cluster}: give --start {cluster}=COMMAND (Kubernetes is not wired)"
            ));
        };
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(line);
        let log = self.log_dir.join(format!("start-{cluster}.log"));
        let p = Supervised::start_logged(&format!("start {cluster}"), cmd, &log)
            .map_err(|e| e.to_string())?;
        self.running.push(p);
        Ok(())
    }
}

/// What `run` needs.
pub struct RunConfig {
    /// The plan, already scaled.
    pub plan: Plan,
    /// The edges' admin token (`TANDEM_EDGE_ADMIN_TOKEN`).
    pub token: String,
    /// `--listen`: the status page, JSON and commands.
    pub listen: Option<std::net::TcpListener>,
    /// `--timeline`: JSONL, appended.
    pub timeline: Option<PathBuf>,
    /// `--state`: saved after every decision, resumed from on start.
    pub state: Option<PathBuf>,
    /// `--windows`: JSONL, appended: every judging window that closed,
    /// with each cluster's counts and histogram and what the judge said,
    /// so a decision can be replayed through the judge afterwards.
    pub windows: Option<PathBuf>,
    pub starter: Box<dyn ClusterStarter>,
    /// Print progress lines on stdout.
    pub progress: bool,
    /// Bound on every control request.
    pub request_timeout: Duration,
    /// `--consul`: a Consul agent told the same weights once the edges
    /// carry them.
    pub consul: Option<crate::layers::ConsulTarget>,
    /// `--cloudflare-*`: the Worker's routes in Workers KV, written once
    /// the edges carry the weights.
    pub cloudflare: Option<crate::layers::CloudflareTarget>,
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("RunConfig")
            .field("release", &self.plan.release)
            .field("timeline", &self.timeline)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Why the run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error("edge {url}: the admin token was refused (TANDEM_EDGE_ADMIN_TOKEN): {message}")]
    Unauthorized { url: String, message: String },
    #[error("edge {url}: the weights were refused: {message}")]
    EdgeRefused { url: String, message: String },
    #[error("state file {path}: {cause}")]
    State { path: String, cause: String },
    #[error("timeline {path}: {cause}")]
    Timeline { path: String, cause: String },
    #[error("windows record {path}: {cause}")]
    Windows { path: String, cause: String },
}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub state: State,
}

impl Finished {
    /// True when every phase passed.
    pub fn done(&self) -> bool {
        self.state.stage == Stage::Done
    }
}

/// What the state file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    release: String,
    state: State,
    /// Stable's p99 over the baseline, once measured.
    baseline_p99_s: Option<f64>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it,
/// fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Aborts the tasks it holds when dropped (the listener dies with the run).
struct Tasks(JoinSet<()>);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.abort_all();
    }
}

/// One edge as the loop knows it.
struct Edge {
    url: String,
    admin: EdgeAdmin,
    /// Weights not yet acknowledged by this edge.
    pending: Option<Weights>,
}

struct Ctl {
    plan: Plan,
    limits: Limits,
    state: State,
    edges: Vec<Edge>,
    http: Http,
    /// Layers told the weights after the edges (Consul).
    consul: Option<crate::layers::ConsulLayer>,
    /// Cloudflare KV, after the edges (and Consul).
    cloudflare: Option<crate::layers::CloudflareLayer>,
    /// With `metrics.source: prometheus`, where requests, errors and
    /// latency come from (edges and nodes are still read directly for
    /// weights, routes, readiness and checkpoints).
    prom: Option<crate::prometheus::PromClient>,
    windows: Windows,
    baseline: Option<WindowStats>,
    baseline_p99_s: Option<f64>,
    test: CanaryTest,
    /// Nodes per cluster, as the edges last listed them.
    nodes: BTreeMap<String, BTreeSet<String>>,
    last_obs: Option<Observation>,
    /// Per cluster, the last closed window's verdict: it stands until the
    /// next window closes (or the weights change), so a breach is seen
    /// on every interval it lasts, not only when a window closes.
    verdicts: BTreeMap<String, Verdict>,
    /// Weights each edge carried at the last observation.
    last_edge_weights: Vec<Option<Weights>>,
    /// A rollback's line, written once every edge took its weights.
    pending_rollback: Option<Entry>,
    timeline: Option<(PathBuf, std::fs::File)>,
    /// `--windows`: the record of closed windows.
    windows_log: Option<(PathBuf, std::fs::File)>,
    /// Each node's append counters at its last reading.
    node_appends: BTreeMap<String, (u64, u64)>,
    /// Per cluster, what its nodes appended since the open window began
    /// (the sum of each node's increase between readings; a node whose
    /// counters went down restarted and counts from its next reading).
    appends_acc: BTreeMap<String, Appends>,
    state_path: Option<PathBuf>,
    starter: Box<dyn ClusterStarter>,
    shared: Arc<Shared>,
    progress: bool,
    /// Stdout is a terminal: redraw a view instead of printing lines.
    tty: bool,
    recent: VecDeque<Entry>,
}

/// Runs the plan until every phase passed or it rolled back (or until
/// the future is dropped). Paused, it waits for `resume` or `abort`.
pub async fn run(cfg: RunConfig) -> Result<Finished, RunError> {
    let plan = cfg.plan;
    let prom = match &plan.metrics {
        MetricsSource::Prometheus { url, .. } => Some(
            crate::prometheus::PromClient::new(url, cfg.request_timeout)
                .map_err(|e| RunError::Config(format!("metrics.url: {e}")))?,
        ),
        MetricsSource::Scrape { .. } => None,
    };
    let http = Http::new(cfg.request_timeout);
    let consul = cfg.consul.as_ref().map(|c| {
        crate::layers::ConsulLayer::new(http.clone(), &c.agent, c.token.clone(), &c.service)
    });
    let cloudflare = match cfg.cloudflare {
        Some(t) => Some(
            crate::layers::CloudflareLayer::new(t, cfg.request_timeout)
                .map_err(|e| RunError::Config(format!("cloudflare: {e}")))?,
        ),
        None => None,
    };
    let mut edges = Vec::new();
    for url in &plan.edges {
        let admin = EdgeAdmin::new(http.clone(), url, &cfg.token)
            .map_err(|e| RunError::Config(format!("edges: {e}")))?;
        edges.push(Edge {
            url: url.clone(),
            admin,
            pending: None,
        });
    }
    let windows_log = match &cfg.windows {
        Some(p) => Some((
            p.clone(),
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| RunError::Windows {
                    path: p.display().to_string(),
                    cause: e.to_string(),
                })?,
        )),
        None => None,
    };
    let timeline = match &cfg.timeline {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| RunError::Timeline {
                    path: p.display().to_string(),
                    cause: e.to_string(),
                })?;
            Some((p.clone(), f))
        }
        None => None,
    };
    let saved: Option<Saved> = match &cfg.state {
        Some(p) if p.exists() => {
            let bad = |cause: String| RunError::State {
                path: p.display().to_string(),
                cause,
            };
            let text = std::fs::read(p).map_err(|e| bad(e.to_string()))?;
            let s: Saved = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
            if s.release != plan.release {
                return Err(bad(format!(
                    "release: it is {:?}'s state, the plan is {:?}",
                    s.release, plan.release
                )));
            }
            if s.state.phase >= plan.phases.len() {
                return Err(bad(format!(
                    "phase: {} is not a phase of the plan ({} phases)",
                    s.state.phase,
                    plan.phases.len()
                )));
            }
            Some(s)
        }
        _ => None,
    };
    let (tx, mut rx) = mpsc::channel(COMMAND_QUEUE);
    let shared = Arc::new(Shared {
        status: Mutex::new(Status {
            release: plan.release.clone(),
            phases: plan.phases.len(),
            ..Status::default()
        }),
        commands: tx,
    });
    let mut tasks = Tasks(JoinSet::new());
    if let Some(l) = cfg.listen {
        l.set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(l))
            .map(|l| {
                tasks.0.spawn(crate::status::serve(l, Arc::clone(&shared)));
            })
            .map_err(|e| RunError::Config(format!("listen: {e}")))?;
    }
    let interval = plan.metrics.interval();
    let interval_ms = interval.as_millis() as u64;
    let mut ctl = Ctl {
        limits: Limits::for_plan(&plan),
        state: saved.as_ref().map_or_else(State::new, |s| s.state.clone()),
        edges,
        http,
        consul,
        cloudflare,
        prom,
        windows: Windows::new(plan.gates.min_requests, WINDOW_MAX_INTERVALS * interval_ms),
        baseline: None,
        baseline_p99_s: saved.as_ref().and_then(|s| s.baseline_p99_s),
        test: CanaryTest::default(),
        nodes: BTreeMap::new(),
        last_obs: None,
        verdicts: BTreeMap::new(),
        last_edge_weights: Vec::new(),
        pending_rollback: None,
        timeline,
        windows_log,
        node_appends: BTreeMap::new(),
        appends_acc: BTreeMap::new(),
        state_path: cfg.state,
        starter: cfg.starter,
        shared,
        progress: cfg.progress,
        tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        recent: VecDeque::new(),
        plan,
    };
    if saved.is_some() {
        ctl.step(Input::Restarted).await?;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                ctl.retry_pending().await?;
                ctl.starts_finished().await?;
                let obs = ctl.observe().await;
                ctl.step(Input::Tick(obs)).await?;
            }
            Some(c) = rx.recv() => ctl.step(Input::Command(c)).await?,
        }
        let terminal = matches!(ctl.state.stage, Stage::Done | Stage::RolledBack { .. });
        if terminal && ctl.edges.iter().all(|e| e.pending.is_none()) {
            ctl.flush_rollback(None)?;
            return Ok(Finished { state: ctl.state });
        }
    }
}

/// How one edge took a weight write.
enum Took {
    Yes,
    /// Not now (unreachable, or stale too often): retry next interval.
    Later(String),
}

async fn set_on_edge(admin: EdgeAdmin, weights: Weights) -> Result<Took, RunError> {
    let fatal = |e: ControlError| match e {
        ControlError::Unauthorized { url, message } => RunError::Unauthorized { url, message },
        ControlError::Disabled { url, message } | ControlError::Refused { url, message, .. } => {
            RunError::EdgeRefused { url, message }
        }
        ControlError::Url { url, why } => RunError::Config(format!("edges: {url}: {why}")),
        other => RunError::Config(other.to_string()),
    };
    let mut last = String::new();
    for _ in 0..STALE_TRIES {
        let generation = match admin.weights().await {
            Ok(w) => w.generation,
            Err(e @ (ControlError::Unreachable { .. } | ControlError::BadAnswer { .. })) => {
                return Ok(Took::Later(e.to_string()))
            }
            Err(e) => return Err(fatal(e)),
        };
        match admin.set_weights(&weights, generation).await {
            Ok(_) => return Ok(Took::Yes),
            Err(e @ ControlError::Stale { .. }) => last = e.to_string(),
            Err(e @ (ControlError::Unreachable { .. } | ControlError::BadAnswer { .. })) => {
                return Ok(Took::Later(e.to_string()))
            }
            Err(e) => return Err(fatal(e)),
        }
    }
    Ok(Took::Later(last))
}

/// A node as read in one interval.
struct NodeRaw {
    cluster: String,
    addr: String,
    answered: bool,
    ready: bool,
    /// The log's identity (`file:…`, `kafka:…`), which says what a seq
    /// counts.
    log: String,
    /// Per partition: applied seq and checkpoints.
    partitions: BTreeMap<u32, (u64, Vec<(u64, String)>)>,
    /// The node's append counters (commands, batches), cumulative.
    appends: Option<(u64, u64)>,
}

async fn read_node(http: Http, cluster: String, addr: String) -> NodeRaw {
    let mut raw = NodeRaw {
        cluster,
        addr: addr.clone(),
        answered: false,
        ready: false,
        log: String::new(),
        partitions: BTreeMap::new(),
        appends: None,
    };
    let Ok(c) = NodeClient::new(http, &format!("http://{addr}")) else {
        return raw;
    };
    let (status, ready, metrics) = tokio::join!(c.status(), c.ready(), c.metrics());
    raw.appends = metrics.ok().and_then(|m| {
        let commands = m.total(node_metric::LOG_APPEND_COMMANDS_TOTAL, &[])?;
        let batches = m.total(node_metric::LOG_APPEND_BATCHES_TOTAL, &[])?;
        (commands >= 0.0 && batches >= 0.0).then_some((commands as u64, batches as u64))
    });
    let Ok(status) = status else {
        return raw;
    };
    raw.ready = ready.unwrap_or(false);
    raw.log = status
        .partitions
        .first()
        .map(|p| p.log.clone())
        .unwrap_or_default();
    for p in status.partitions.iter().take(64) {
        let Ok(chain) = c.chain_page(p.id, None, Some(CHECKPOINTS)).await else {
            return raw;
        };
        let cps = chain
            .checkpoints
            .into_iter()
            .map(|c| (c.seq, c.output_hash))
            .collect();
        raw.partitions.insert(p.id, (chain.applied_seq, cps));
    }
    raw.answered = true;
    raw
}

/// Per cluster: cumulative requests, 5xx and latency from one edge's
/// `/metrics`.
fn edge_stats(m: &Exposition) -> BTreeMap<String, WindowStats> {
    let mut names = BTreeSet::new();
    for s in m.series(edge_metric::REQUESTS_TOTAL, &[]) {
        if let Some(c) = s.labels.get(label::CLUSTER) {
            names.insert(c.clone());
        }
    }
    let mut out = BTreeMap::new();
    for name in names {
        let only = [(label::CLUSTER, name.as_str())];
        let mut requests = 0.0;
        let mut errors = 0.0;
        for s in m.series(edge_metric::REQUESTS_TOTAL, &only) {
            requests += s.value;
            if s.labels
                .get(label::STATUS)
                .is_some_and(|v| v.starts_with('5'))
            {
                errors += s.value;
            }
        }
        let buckets: Vec<(f64, u64)> = m
            .buckets(edge_metric::REQUEST_DURATION_SECONDS, &only)
            .into_iter()
            .map(|(le, c)| (le, c as u64))
            .collect();
        let Ok(latency) = Hist::from_cumulative(&buckets) else {
            continue;
        };
        out.insert(
            name,
            WindowStats {
                requests: requests as u64,
                errors: errors as u64,
                latency,
                appends: None,
            },
        );
    }
    out
}

/// A closed window's verdict on one cluster.
#[derive(Debug, Clone)]
struct Verdict {
    breaches: Vec<crate::decide::Breach>,
    p99_ms: Option<f64>,
    error_ratio: Option<f64>,
    /// Closed windows in a row in which the canary was slower than stable.
    slower_streak: u32,
}

/// Closed windows in a row a canary must be slower than stable (the
/// judge's relative test) before that counts as a breach. The test's
/// alpha holds for independent windows; real latencies come in bursts,
/// and on one Kafka log a small share is somewhat slower by design, so
/// one window alone flagged healthy canaries (tests/release.rs). Two
/// windows in a row; the absolute and baseline gates still count at
/// once.
const SLOWER_WINDOWS: u32 = 2;

impl Ctl {
    /// Another split of traffic: the open window and the verdicts go.
    fn reset_windows(&mut self) {
        self.windows.reset();
        self.verdicts.clear();
        self.appends_acc.clear();
    }

    fn io_err(&self, path: &Path, e: std::io::Error, state: bool) -> RunError {
        let (path, cause) = (path.display().to_string(), e.to_string());
        if state {
            RunError::State { path, cause }
        } else {
            RunError::Timeline { path, cause }
        }
    }

    /// Sends `weights` to every edge at once; marks those that did not
    /// take them for the next interval. True when all took them.
    async fn send_weights(&mut self, weights: &Weights) -> Result<bool, RunError> {
        let mut set = JoinSet::new();
        for (i, e) in self.edges.iter().enumerate() {
            let (admin, w) = (e.admin.clone(), weights.clone());
            set.spawn(async move { (i, set_on_edge(admin, w).await) });
        }
        let mut all = true;
        while let Some(r) = set.join_next().await {
            let Ok((i, r)) = r else { continue };
            match r? {
                Took::Yes => self.edges[i].pending = None,
                Took::Later(why) => {
                    all = false;
                    self.say(&format!(
                        "edge {}: weights not taken yet: {why}",
                        self.edges[i].url
                    ));
                    self.edges[i].pending = Some(weights.clone());
                }
            }
        }
        Ok(all)
    }

    /// Sends pending weights again; writes a waiting rollback line once
    /// every edge took its weights.
    async fn retry_pending(&mut self) -> Result<(), RunError> {
        let pending: BTreeSet<Weights> = self
            .edges
            .iter()
            .filter_map(|e| e.pending.clone())
            .collect();
        for w in pending {
            // Only to the edges still missing them.
            let mut set = JoinSet::new();
            for (i, e) in self.edges.iter().enumerate() {
                if e.pending.as_ref() == Some(&w) {
                    let (admin, w) = (e.admin.clone(), w.clone());
                    set.spawn(async move { (i, set_on_edge(admin, w).await) });
                }
            }
            while let Some(r) = set.join_next().await {
                let Ok((i, r)) = r else { continue };
                if let Took::Yes = r? {
                    self.edges[i].pending = None;
                }
            }
        }
        if self.edges.iter().all(|e| e.pending.is_none()) {
            self.flush_rollback(Some(now_ms()))?;
        }
        if let Some(c) = &mut self.cloudflare {
            let line = match c.flush().await {
                None => None,
                Some(Ok(())) => Some("cloudflare: routes written to KV (again)".to_owned()),
                Some(Err(e)) => Some(format!("cloudflare: the routes were not written: {e}")),
            };
            if let Some(l) = line {
                self.say(&l);
            }
        }
        Ok(())
    }

    /// `decide`'s decisions for a pause the shell asks for, with `reason`
    /// in the pause (and in the paused stage).
    fn pause_for(&mut self, now: u64, why: String) -> Vec<Decision> {
        let (state, mut more) = decide(
            &self.plan,
            self.limits,
            &self.state,
            &Input::Command(Command::Pause),
            now,
        );
        self.state = state;
        for m in &mut more {
            if m.act == Act::Pause {
                m.reason = why.clone();
                if let Stage::Paused { reason, .. } = &mut self.state.stage {
                    *reason = why.clone();
                }
            }
        }
        more
    }

    /// Starts the actuator saw end: a progress line each; a failed one
    /// pauses a phase still preparing (waiting for its clusters).
    async fn starts_finished(&mut self) -> Result<(), RunError> {
        for r in self.starter.finished() {
            match &r.ready_ms {
                Ok(ms) => self.say(&format!(
                    "start {}: every replica ready {ms} ms after the start ({})",
                    r.cluster, r.by
                )),
                Err(why) => {
                    self.say(&format!("start {} ({}) failed: {why}", r.cluster, r.by));
                    if matches!(self.state.stage, Stage::Prepare { .. }) {
                        let now = now_ms();
                        for d in self.pause_for(now, format!("cannot start {}: {why}", r.cluster)) {
                            let e = timeline::entry(now, &d, self.last_obs.as_ref());
                            self.write_entry(e)?;
                        }
                        self.save()?;
                        self.publish(now);
                    }
                }
            }
        }
        Ok(())
    }

    fn flush_rollback(&mut self, applied: Option<u64>) -> Result<(), RunError> {
        if let Some(mut e) = self.pending_rollback.take() {
            e.weights_applied_ms = applied;
            self.write_entry(e)?;
        }
        Ok(())
    }

    /// A plain progress line (on a terminal, the redrawn view shows the
    /// decisions instead).
    fn say(&self, line: &str) {
        if self.progress && !self.tty {
            println!("{line}");
        }
    }

    fn write_entry(&mut self, e: Entry) -> Result<(), RunError> {
        let line = timeline::line(&e);
        if let Some((path, f)) = &mut self.timeline {
            let r = writeln!(f, "{line}").and_then(|()| f.flush());
            if let Err(err) = r {
                let p = path.clone();
                return Err(self.io_err(&p, err, false));
            }
        }
        self.say(&format!("decision: {line}"));
        if self.recent.len() == MAX_DECISIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(e);
        Ok(())
    }

    /// Calls `decide` with `input`, executes its decisions, writes the
    /// timeline and saves the state.
    async fn step(&mut self, input: Input) -> Result<(), RunError> {
        let now = now_ms();
        let (state, decisions) = decide(&self.plan, self.limits, &self.state, &input, now);
        self.state = state;
        // Stable's baseline p99: measured while stable alone is observed,
        // fixed once the baseline passes.
        if self.baseline_p99_s.is_none()
            && !matches!(
                self.state.stage,
                Stage::Baseline { .. } | Stage::New | Stage::Apply { .. }
            )
        {
            self.baseline_p99_s = self
                .baseline
                .as_ref()
                .and_then(|b| b.latency.quantile(0.99));
        }
        let mut queue: VecDeque<Decision> = decisions.into();
        while let Some(d) = queue.pop_front() {
            let mut entry = timeline::entry(now, &d, self.last_obs.as_ref());
            match (&d.act, &d.weights) {
                (Act::StartCluster(c), _) => {
                    if let Err(why) = self.starter.start(c) {
                        entry.reason = format!("{}: {why}", entry.reason);
                        self.write_entry(entry)?;
                        queue.extend(self.pause_for(now, format!("cannot start {c}: {why}")));
                        continue;
                    }
                }
                (Act::SetWeights | Act::Rollback, Some(w)) => {
                    self.reset_windows();
                    let all = self.send_weights(w).await?;
                    // The edges first (they give the 5 s rollback), then
                    // the layers that follow them.
                    if let Some(c) = &mut self.consul {
                        let r = c.apply(&self.plan, w).await;
                        let line = match r {
                            Ok(()) => "consul: service-splitter written".to_owned(),
                            Err(e) => format!("consul: the weights were not written: {e}"),
                        };
                        self.say(&line);
                    }
                    if let Some(c) = &mut self.cloudflare {
                        let line = match c.apply(&self.plan, w).await {
                            Ok(()) => "cloudflare: routes written to KV".to_owned(),
                            Err(e) => format!("cloudflare: the routes were not written: {e}"),
                        };
                        self.say(&line);
                    }
                    if d.act == Act::Rollback {
                        if all {
                            entry.weights_applied_ms = Some(now_ms());
                        } else {
                            self.flush_rollback(None)?;
                            self.pending_rollback = Some(entry);
                            continue;
                        }
                    }
                }
                _ => {}
            }
            self.write_entry(entry)?;
        }
        self.save()?;
        self.publish(now);
        Ok(())
    }

    fn save(&self) -> Result<(), RunError> {
        let Some(path) = &self.state_path else {
            return Ok(());
        };
        let saved = Saved {
            release: self.plan.release.clone(),
            state: self.state.clone(),
            baseline_p99_s: self.baseline_p99_s,
        };
        let bytes = serde_json::to_vec_pretty(&saved).expect("the state is plain data");
        write_atomic(path, &bytes).map_err(|e| self.io_err(path, e, true))
    }

    /// Updates the listener's status and prints the progress line.
    fn publish(&self, now: u64) {
        let s = &self.state;
        let (stage, reason) = match &s.stage {
            Stage::New => ("new", None),
            Stage::Baseline { .. } => ("baseline", None),
            Stage::Prepare { .. } => ("prepare", None),
            Stage::Apply { .. } => ("apply", None),
            Stage::Hold { .. } => ("hold", None),
            Stage::Paused { reason, .. } => ("paused", Some(reason.clone())),
            Stage::RolledBack { reason } => ("rolled_back", Some(reason.clone())),
            Stage::Done => ("done", None),
        };
        let hold_left_ms = match s.stage {
            Stage::Hold { since_ms } => Some(
                (self.plan.phases[s.phase].hold.as_millis() as u64)
                    .saturating_sub(now.saturating_sub(since_ms)),
            ),
            Stage::Baseline { since_ms } => Some(
                (self.plan.baseline_window.as_millis() as u64)
                    .saturating_sub(now.saturating_sub(since_ms)),
            ),
            _ => None,
        };
        let phase = self.plan.phases[s.phase].name.clone();
        let gates = timeline::gates(self.last_obs.as_ref());
        let edges: Vec<EdgeStatus> = self
            .edges
            .iter()
            .enumerate()
            .map(|(i, e)| EdgeStatus {
                url: e.url.clone(),
                weights: self.last_edge_weights.get(i).cloned().flatten(),
            })
            .collect();
        if self.progress && !self.tty {
            let w = s.target.as_ref().map_or_else(
                || "-".to_owned(),
                |w| {
                    w.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                },
            );
            let left = hold_left_ms
                .map_or_else(String::new, |l| format!(", {:.1} s left", l as f64 / 1e3));
            let g: Vec<String> = gates
                .iter()
                .map(|(n, v)| {
                    format!(
                        "{n}: p99 {} ms, errors {}, requests {}, lag {}, hash {}",
                        v.p99_ms.map_or("-".into(), |p| format!("{p:.2}")),
                        v.error_ratio.map_or("-".into(), |e| format!("{e:.4}")),
                        v.requests,
                        v.lag,
                        if v.hash_agrees {
                            "agrees"
                        } else {
                            "not verified"
                        }
                    )
                })
                .collect();
            println!(
                "phase {phase} ({}/{}) {stage}{left}; weights {w}; {}",
                s.phase + 1,
                self.plan.phases.len(),
                g.join("; ")
            );
        }
        let mut st = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        *st = Status {
            release: self.plan.release.clone(),
            t_ms: now,
            phase,
            phase_index: s.phase,
            phases: self.plan.phases.len(),
            stage: stage.into(),
            stage_reason: reason,
            weights: s.target.clone(),
            edges,
            hold_left_ms,
            gates,
            decisions: self.recent.clone(),
        };
        if self.progress && self.tty {
            // Clear the screen, home the cursor, draw the view.
            print!("\x1b[2J\x1b[H{}", crate::status::terminal_view(&st));
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    }

    /// One interval's readings as an `Observation`; `None` when nothing
    /// answered.
    async fn observe(&mut self) -> Option<Observation> {
        let now = now_ms();
        // Edges: routes (weights and nodes) and metrics, all at once.
        let mut set = JoinSet::new();
        for (i, e) in self.edges.iter().enumerate() {
            let admin = e.admin.clone();
            set.spawn(async move {
                let (r, m) = tokio::join!(admin.routes(), admin.metrics());
                (i, r.ok(), m.ok())
            });
        }
        let mut routes: Vec<Option<Routes>> = vec![None; self.edges.len()];
        let mut metrics: Vec<Option<Exposition>> = vec![None; self.edges.len()];
        while let Some(r) = set.join_next().await {
            if let Ok((i, r, m)) = r {
                routes[i] = r;
                metrics[i] = m;
            }
        }
        let plan_clusters: BTreeSet<&str> =
            self.plan.clusters.iter().map(|c| c.name.as_str()).collect();
        let edge_weights: Vec<Option<Weights>> = routes
            .iter()
            .map(|r| {
                r.as_ref().map(|r| {
                    r.weights
                        .iter()
                        .filter(|(n, w)| plan_clusters.contains(n.as_str()) || **w > 0)
                        .map(|(n, w)| (n.clone(), *w))
                        .collect()
                })
            })
            .collect();
        if routes.iter().any(Option::is_some) {
            let mut nodes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for r in routes.iter().flatten() {
                for c in &r.clusters {
                    if !plan_clusters.contains(c.name.as_str()) {
                        continue;
                    }
                    let set = nodes.entry(c.name.clone()).or_default();
                    for n in c.nodes.iter().take(MAX_NODES) {
                        set.insert(n.addr.clone());
                    }
                }
            }
            self.nodes = nodes;
        }
        if edge_weights != self.last_edge_weights {
            // Another split of traffic: what follows is another window.
            self.reset_windows();
        }
        self.last_edge_weights = edge_weights.clone();

        // Nodes.
        let mut set = JoinSet::new();
        for (cluster, addrs) in &self.nodes {
            for addr in addrs {
                let (http, c, a) = (self.http.clone(), cluster.clone(), addr.clone());
                set.spawn(read_node(http, c, a));
            }
        }
        // Node reads get most of one interval, not the request timeout: a
        // slow node must not stretch the interval (it counts as not
        // answering, so not ready).
        let budget = self
            .plan
            .metrics
            .interval()
            .mul_f64(0.8)
            .max(Duration::from_millis(50));
        let deadline = tokio::time::Instant::now() + budget;
        let mut raws = Vec::new();
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, set.join_next()).await {
            if let Ok(r) = r {
                raws.push(r);
            }
        }
        set.abort_all();
        for (cluster, addrs) in &self.nodes {
            for addr in addrs {
                if !raws
                    .iter()
                    .any(|r| &r.cluster == cluster && &r.addr == addr)
                {
                    raws.push(NodeRaw {
                        cluster: cluster.clone(),
                        addr: addr.clone(),
                        answered: false,
                        ready: false,
                        log: String::new(),
                        partitions: BTreeMap::new(),
                        appends: None,
                    });
                }
            }
        }
        raws.sort_by(|a, b| (&a.cluster, &a.addr).cmp(&(&b.cluster, &b.addr)));
        for r in &raws {
            let Some((commands, batches)) = r.appends else {
                continue;
            };
            if let Some(&(c0, b0)) = self.node_appends.get(&r.addr) {
                if commands >= c0 && batches >= b0 {
                    let a = self
                        .appends_acc
                        .entry(r.cluster.clone())
                        .or_insert(Appends {
                            commands: 0,
                            batches: 0,
                        });
                    a.commands = a.commands.saturating_add(commands - c0);
                    a.batches = a.batches.saturating_add(batches - b0);
                }
            }
            self.node_appends
                .insert(r.addr.clone(), (commands, batches));
        }
        let anything = routes.iter().any(Option::is_some) || raws.iter().any(|r| r.answered);
        if !anything {
            self.last_obs = None;
            return None;
        }

        // Metrics: only a complete reading of every edge is judged, from
        // the edges' own /metrics or from Prometheus at the same instant.
        let summed: Option<(BTreeMap<String, WindowStats>, bool)> = match &self.prom {
            Some(prom) => match prom.read(now).await {
                Ok(reading)
                    if self.edges.iter().all(|e| {
                        reading
                            .edges
                            .iter()
                            .any(|i| e.url.trim_end_matches('/').ends_with(&format!("//{i}")))
                    }) =>
                {
                    Some((reading.clusters, true))
                }
                _ => None,
            },
            None if metrics.iter().all(Option::is_some) && !metrics.is_empty() => {
                let mut sum: BTreeMap<String, WindowStats> = BTreeMap::new();
                let mut ok = true;
                for m in metrics.iter().flatten() {
                    for (name, w) in edge_stats(m) {
                        match sum.get_mut(&name) {
                            Some(s) => ok &= s.merge(&w).is_ok(),
                            None => {
                                sum.insert(name, w);
                            }
                        }
                    }
                }
                Some((sum, ok))
            }
            None => None,
        };
        let closed = if let Some((mut sum, ok)) = summed {
            // A cluster no request went to yet counts from zero.
            if let Some(bounds) = sum.values().next().map(|w| w.latency.bounds_s().to_vec()) {
                for c in &self.plan.clusters {
                    if !sum.contains_key(&c.name) {
                        if let Ok(latency) = Hist::from_counts(&bounds, &vec![0; bounds.len() + 1])
                        {
                            sum.insert(
                                c.name.clone(),
                                WindowStats {
                                    requests: 0,
                                    errors: 0,
                                    latency,
                                    appends: None,
                                },
                            );
                        }
                    }
                }
            }
            let weighted: Vec<String> = self
                .state
                .target
                .iter()
                .flatten()
                .filter(|(_, w)| **w > 0)
                .map(|(n, _)| n.clone())
                .collect();
            let must: Vec<&str> = weighted.iter().map(String::as_str).collect();
            if ok {
                self.windows.feed(now, sum, &must)
            } else {
                self.reset_windows();
                None
            }
        } else {
            None
        };
        // What each cluster's nodes appended over the closed window: the
        // judge counts requests that shared an append as one observation.
        let closed = closed.map(|mut c| {
            let acc = std::mem::take(&mut self.appends_acc);
            for (name, w) in c.clusters.iter_mut() {
                w.appends = acc.get(name).copied();
            }
            c
        });
        let weight_of = |name: &str| {
            self.state
                .target
                .as_ref()
                .and_then(|t| t.get(name).copied())
                .unwrap_or(0)
        };
        // Stable's window: every stable cluster with weight, merged.
        let stable_window = closed.as_ref().and_then(|c| {
            let mut acc: Option<WindowStats> = None;
            for cl in &self.plan.clusters {
                if cl.version != Version::Stable || weight_of(&cl.name) == 0 {
                    continue;
                }
                if let Some(w) = c.clusters.get(&cl.name) {
                    match &mut acc {
                        Some(a) => {
                            let _ = a.merge(w);
                        }
                        None => acc = Some(w.clone()),
                    }
                }
            }
            acc
        });
        if matches!(self.state.stage, Stage::Baseline { .. }) {
            if let Some(w) = &stable_window {
                match &mut self.baseline {
                    Some(b) => {
                        let _ = b.merge(w);
                    }
                    None => self.baseline = Some(w.clone()),
                }
            }
        }

        // Lag: the newest applied seq of each partition over every node.
        let mut newest: BTreeMap<u32, u64> = BTreeMap::new();
        for r in raws.iter().filter(|r| r.answered) {
            for (p, (applied, _)) in &r.partitions {
                let e = newest.entry(*p).or_default();
                *e = (*e).max(*applied);
            }
        }
        // Stable's checkpoints: the first stable node that answered.
        let stable_names: BTreeSet<&str> = self
            .plan
            .clusters
            .iter()
            .filter(|c| c.version == Version::Stable)
            .map(|c| c.name.as_str())
            .collect();
        let reference = self.plan.clusters.iter().find_map(|c| {
            stable_names
                .contains(c.name.as_str())
                .then(|| raws.iter().find(|r| r.cluster == c.name && r.answered))
                .flatten()
        });
        let mut clusters = BTreeMap::new();
        for c in &self.plan.clusters {
            let mine: Vec<&NodeRaw> = raws.iter().filter(|r| r.cluster == c.name).collect();
            if mine.is_empty() {
                continue;
            }
            let partitions: BTreeSet<u32> = newest.keys().copied().collect();
            let reading = |r: &NodeRaw, p: u32| NodeReading {
                addr: r.addr.clone(),
                ready: r.ready,
                lag: if r.answered {
                    r.partitions
                        .iter()
                        .map(|(q, (a, _))| {
                            let ahead = newest.get(q).copied().unwrap_or(0);
                            tandem_control::types::commands_behind(&r.log, ahead, *a)
                        })
                        .max()
                        .unwrap_or(0)
                } else {
                    0
                },
                checkpoints: r
                    .partitions
                    .get(&p)
                    .map(|x| x.1.clone())
                    .unwrap_or_default(),
            };
            // The hash per partition, joined as `cluster_hash` joins nodes.
            let mut hash = HashCheck::Unknown;
            let mut agreed: Vec<u64> = Vec::new();
            let mut differs: Option<(u64, String)> = None;
            for &p in &partitions {
                let stable_cps: Vec<(u64, String)> = reference
                    .and_then(|r| r.partitions.get(&p))
                    .map(|x| x.1.clone())
                    .unwrap_or_default();
                let readings: Vec<NodeReading> = mine.iter().map(|r| reading(r, p)).collect();
                match cluster_hash(&stable_cps, &readings) {
                    HashCheck::Differs { seq, detail } => {
                        let detail = format!("partition {p}: {detail}");
                        if differs.as_ref().is_none_or(|(s, _)| seq < *s) {
                            differs = Some((seq, detail));
                        }
                    }
                    HashCheck::Agrees { seq } => agreed.push(seq),
                    HashCheck::Unknown => {}
                }
            }
            if let Some((seq, detail)) = differs {
                hash = HashCheck::Differs { seq, detail };
            } else if !partitions.is_empty() && agreed.len() == partitions.len() {
                hash = HashCheck::Agrees {
                    seq: agreed.iter().copied().min().unwrap_or(0),
                };
            }
            let first = partitions.iter().next().copied().unwrap_or(0);
            let readings: Vec<NodeReading> = mine.iter().map(|r| reading(r, first)).collect();
            let window = closed.as_ref().and_then(|w| w.clusters.get(&c.name));
            let canary = c.version == Version::Canary;
            let baseline = if matches!(self.state.stage, Stage::Baseline { .. }) {
                None
            } else {
                self.baseline_p99_s
            };
            let view = cluster_view(
                &c.name,
                &self.plan.gates,
                &readings,
                &[],
                window,
                baseline,
                if canary { stable_window.as_ref() } else { None },
                &self.test,
            )
            .or_else(|_| {
                cluster_view(
                    &c.name,
                    &self.plan.gates,
                    &readings,
                    &[],
                    None,
                    None,
                    None,
                    &self.test,
                )
            });
            if let Ok(mut view) = view {
                view.hash = hash;
                if window.is_some() {
                    let relative = crate::judge::Gate::CanaryVsStable.name();
                    let slower = view.breaches.iter().any(|b| b.gate == relative);
                    let streak = if slower {
                        self.verdicts.get(&c.name).map_or(0, |v| v.slower_streak) + 1
                    } else {
                        0
                    };
                    if slower && streak < SLOWER_WINDOWS {
                        view.breaches.retain(|b| b.gate != relative);
                    }
                    self.verdicts.insert(
                        c.name.clone(),
                        Verdict {
                            breaches: view.breaches.clone(),
                            p99_ms: view.p99_ms,
                            error_ratio: view.error_ratio,
                            slower_streak: streak,
                        },
                    );
                } else if let Some(v) = self.verdicts.get(&c.name) {
                    view.breaches = v.breaches.clone();
                    view.p99_ms = v.p99_ms;
                    view.error_ratio = v.error_ratio;
                }
                if let Some(b) = unavailable_on_edges(&c.name, &routes) {
                    view.breaches.push(b);
                }
                clusters.insert(c.name.clone(), view);
            }
        }
        if let Some(c) = &closed {
            let line = self.window_record(c, stable_window.as_ref(), &clusters);
            if let Some((path, f)) = &mut self.windows_log {
                if let Err(e) = writeln!(f, "{line}") {
                    // The record is evidence, not control: the release goes
                    // on, the record stops (said once, on stderr).
                    eprintln!(
                        "tandem rollout: windows record {}: {e}; no more windows are recorded",
                        path.display()
                    );
                    self.windows_log = None;
                }
            }
        }
        let obs = Observation {
            clusters,
            edges: edge_weights,
        };
        self.last_obs = Some(obs.clone());
        Some(obs)
    }
}

impl Ctl {
    /// One line of `--windows`: a closed window, every cluster's counts
    /// and latency histogram in it, what the gates said (the breaches
    /// before `SLOWER_WINDOWS` filtered the relative one) and, for a
    /// canary with stable traffic beside it, the judge's comparison with
    /// its p-values. Enough to replay the window through `judge`.
    fn window_record(
        &self,
        closed: &crate::window::Closed,
        stable: Option<&WindowStats>,
        views: &BTreeMap<String, crate::decide::ClusterView>,
    ) -> String {
        let mut clusters = serde_json::Map::new();
        let mut bounds: Option<&[f64]> = None;
        for (name, w) in &closed.clusters {
            bounds.get_or_insert(w.latency.bounds_s());
            let canary = self
                .plan
                .clusters
                .iter()
                .any(|c| &c.name == name && c.version == Version::Canary);
            let comparison = match stable {
                Some(s) if canary && w.requests > 0 => crate::judge::compare_batched(
                    &w.latency,
                    &s.latency,
                    &self.test,
                    (
                        w.appends.map_or(1.0, |a| a.per_batch()),
                        s.appends.map_or(1.0, |a| a.per_batch()),
                    ),
                )
                .ok(),
                _ => None,
            };
            let view = views.get(name);
            clusters.insert(
                name.clone(),
                serde_json::json!({
                    "requests": w.requests,
                    "errors": w.errors,
                    "counts": w.latency.counts(),
                    "p99_ms": w.latency.quantile(0.99).map(|s| s * 1e3),
                    "appends": w.appends,
                    "breaches": view.map(|v| v.breaches.iter().map(|b| b.gate.clone()).collect::<Vec<_>>()),
                    "vs_stable": comparison,
                    "slower_streak": self.verdicts.get(name).map(|v| v.slower_streak),
                }),
            );
        }
        serde_json::json!({
            "from_ms": closed.from_ms,
            "to_ms": closed.to_ms,
            "phase": self.plan.phases.get(self.state.phase).map(|p| p.name.as_str()),
            "weights": self.state.target,
            "bounds_s": bounds.unwrap_or(&[]),
            "clusters": clusters,
        })
        .to_string()
    }
}

/// A breach when `cluster` has weight on an edge where none of its nodes
/// is available (not ready, or ejected after failed requests): its share
/// is not being served there, whatever its latency says, and it gets no
/// requests to judge, so without this a canary the edge has ejected would
/// hold its weight unjudged. Gate `nodes_available`: value the fewest
/// available nodes on such an edge, limit 1.
pub fn unavailable_on_edges(
    cluster: &str,
    routes: &[Option<Routes>],
) -> Option<crate::decide::Breach> {
    routes.iter().flatten().find_map(|r| {
        let weighted = r.weights.get(cluster).copied().unwrap_or(0) > 0;
        let c = r.clusters.iter().find(|c| c.name == cluster)?;
        let none = !c.nodes.is_empty() && c.nodes.iter().all(|n| !n.available);
        (weighted && none).then(|| crate::decide::Breach {
            cluster: cluster.to_owned(),
            gate: "nodes_available".into(),
            value: 0.0,
            limit: 1.0,
        })
    })
}

/// Runs `run` on a new multi-threaded runtime (for the CLI).
pub fn run_blocking(cfg: RunConfig) -> Result<Finished, RunError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| RunError::Config(format!("runtime: {e}")))?;
    rt.block_on(run(cfg))
}

/// `tandem rollout status|pause|...` on a new runtime: the answer's body.
pub fn control_blocking(
    base: &str,
    command: Option<Command>,
) -> Result<String, crate::status::ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::status::ClientError::Unreachable {
            url: base.to_owned(),
            cause: format!("runtime: {e}"),
        })?;
    rt.block_on(crate::status::request(
        base,
        command,
        Duration::from_secs(5),
    ))
}

#[cfg(test)]
mod tests {
    use super::unavailable_on_edges;
    use tandem_control::Routes;

    fn routes(gcp_weight: u32, gcp_available: [bool; 2]) -> Routes {
        let node = |addr: &str, available: bool| {
            serde_json::json!({"addr": addr, "zone": "z", "ready": available, "ejected": false,
                               "available": available, "in_flight": 0, "log": null})
        };
        serde_json::from_value(serde_json::json!({
            "generation": 3, "pid": 1, "zone": "edge", "draining": false,
            "weights": {"aws": 100 - gcp_weight, "gcp": gcp_weight},
            "admin_weights": {},
            "clusters": [
                {"name": "aws", "version": "1", "role": "stable", "weight": 100 - gcp_weight,
                 "nodes": [node("a:1", true)]},
                {"name": "gcp", "version": "2", "role": "canary", "weight": gcp_weight,
                 "nodes": [node("g:1", gcp_available[0]), node("g:2", gcp_available[1])]}
            ],
            "split": {}
        }))
        .expect("routes shape")
    }

    #[test]
    fn a_weighted_cluster_with_no_available_node_on_an_edge_breaches() {
        let b = unavailable_on_edges(
            "gcp",
            &[
                Some(routes(5, [true, true])),
                Some(routes(5, [false, false])),
            ],
        )
        .expect("a breach");
        assert_eq!(
            (b.cluster.as_str(), b.gate.as_str()),
            ("gcp", "nodes_available")
        );
        // One node left is enough; no weight, no breach; an edge that did
        // not answer says nothing.
        assert!(unavailable_on_edges("gcp", &[Some(routes(5, [false, true]))]).is_none());
        assert!(unavailable_on_edges("gcp", &[Some(routes(0, [false, false]))]).is_none());
        assert!(unavailable_on_edges("gcp", &[None]).is_none());
        assert!(unavailable_on_edges("aws", &[Some(routes(5, [false, false]))]).is_none());
    }
}
