//! The release with real processes on loopback, as issue 11 asks: a tansu
//! broker holding ONE Kafka log, three clusters of one `tandem node` each
//! sharing it (aws stable and gcp canary running from the start; azure
//! canary, `start: cold`, NOT running: the controller starts it through
//! `--start azure=COMMAND`), one `tandem edge` whose config names all
//! three clusters' nodes (azure's address known in advance), `tandem
//! loadgen` placing orders through the edge across the whole release, and
//! the controller itself as a process (`tandem rollout run` with
//! `--listen`, `--timeline`, `--state`, the token in its environment).
//! The plan is the seed's shape (warm-up 100/0/0, canary 95/5/0, expand
//! 70/30/0, balance 45/45/10, done 34/33/33) with holds of seconds.
//! - The release is promoted: the controller exits 0, its timeline starts
//!   azure before azure's first weight, verifies, and ends on 34/33/33;
//!   the edge carries 34/33/33; loadgen failed no request and lost or
//!   duplicated no order; every node reaches the same seq and hash.
//! - The controller killed with SIGKILL during `expand`'s hold and started
//!   again on its state file resumes `expand` (never `canary` again,
//!   never `balance` early) and finishes.
//!
//! Every process runs under `tandem_control::Supervised` (killed on drop,
//! output in a file of the test's directory; the tails are printed on a
//! failure). Waits poll with deadlines; nothing sleeps to synchronise.
//!
//! Needs the `tandem` binary (`cargo build -p tandem-cli`, as
//! scripts/test.sh does first; or `TANDEM_BIN`) and the tansu broker
//! (`tansu` on the PATH or `TANSU_BIN`; scripts/test.sh installs it).
//!
//! Both run in the suite (about 80 s together in a debug build). They were
//! ignored while about 1 run in 5 rolled back a healthy canary on the
//! canary-vs-stable latency test: requests that share one log append
//! share its fate, and counted one by one they made equal clusters look
//! different (the recorded windows: request-level U p < 0.001 in 10 of
//! 114 windows). The judge now counts them by append; since then 12 runs
//! of 12 passed here, on a host busy with other builds.
//!
//! The start command puts the node in the background and writes its pid,
//! which the test kills at its end (the controller leaves a cluster it
//! started running when it exits).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tandem_control::supervise::Supervised;
use tandem_control::{EdgeAdmin, Http, NodeClient};
use tandem_log::conformance::TempDir;

const TOKEN: &str = "release-test-admin-token";
const TOPIC: &str = "orders";
/// On Kafka a seq is `(offset + 1) << 16 | index`: one message is 65536
/// seq units. Checkpoints every 16 messages; lag allowed 200 messages.
const MESSAGE: u64 = 1 << 16;
const CHECKPOINT_EVERY: u64 = 16 * MESSAGE;
const LAG_MAX: u64 = 200 * MESSAGE;
/// Load through the edge, orders per second.
const RATE: u32 = 300;

/// One release at a time: a broker, three nodes, an edge, the load and
/// the controller are enough for 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `tandem` binary beside this test executable (target/<profile>/deps/).
fn tandem_bin() -> PathBuf {
    tandem_control::supervise::target_binary("tandem", "TANDEM_BIN")
}

/// A loopback address free a moment ago.
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// `tandem <args>` with no inherited `TANDEM_*` variable.
fn tandem(args: &[&str]) -> Command {
    let mut cmd = Command::new(tandem_bin());
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TANDEM_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The last `bytes` of a file, for failure messages.
fn tail(path: &Path, bytes: usize) -> String {
    let b = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&b[b.len().saturating_sub(bytes)..]).into_owned()
}

/// Kills (SIGKILL) the process whose pid the cold start wrote, if it is
/// still the node started from this test's directory.
struct PidFile {
    path: PathBuf,
    /// A string its command line must hold (the node's config path).
    marker: String,
}

impl PidFile {
    fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.path)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(&self.marker)
            .then_some(pid)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// One node's files and address.
struct NodeSpec {
    cluster: &'static str,
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl NodeSpec {
    fn new(dir: &Path, cluster: &'static str, canary: bool, bootstrap: &str) -> NodeSpec {
        let data = dir.join(cluster);
        std::fs::create_dir_all(&data).expect("node dir");
        let addr = free_addr();
        let (role, version) = if canary {
            ("canary", "2.0.0")
        } else {
            ("stable", "1.0.0")
        };
        let config = data.join("node.toml");
        let text = format!(
            r#"# Written by tandem-rollout's tests/release.rs.
config_version = 1
listen = "{addr}"
node = "{cluster}-1"
cluster = "{cluster}"
zone = "z"
role = "{role}"
version = "{version}"
data_dir = "{state}"

[log]
kind = "kafka"
kafka_brokers = "{bootstrap}"
kafka_topic = "{TOPIC}"
kafka_partitions = 1
kafka_create_topic = true
kafka_replication = 1
kafka_min_insync_replicas = 1
max_batch = 256

[snapshot]
every_commands = 2000
every_secs = 0
keep = 2

[limits]
account_rate = 0
wait_ms = 5000
checkpoint_every = {CHECKPOINT_EVERY}

[http]
drain_grace_ms = 200
drain_timeout_secs = 5
"#,
            state = data.join("state").display(),
        );
        std::fs::write(&config, text).expect("write node config");
        NodeSpec {
            cluster,
            addr,
            config,
            log: data.join("node.log"),
        }
    }

    /// `tandem node --config FILE` as a supervised process, ready.
    async fn start(&self) -> Supervised {
        let cmd = tandem(&["node", "--config", self.config.to_str().unwrap()]);
        let mut p = Supervised::start_logged(self.cluster, cmd, &self.log).expect("start node");
        let addr = self.addr;
        p.wait_ready_async(Duration::from_secs(60), || async move {
            tandem_control::supervise::http_status(addr, "/readyz") == Some(200)
        })
        .await
        .unwrap_or_else(|e| panic!("node {} did not get ready: {e}", self.cluster));
        p
    }

    fn client(&self) -> NodeClient {
        NodeClient::new(
            Http::new(Duration::from_secs(2)),
            &format!("http://{}", self.addr),
        )
        .expect("node client")
    }
}

/// The processes of one release and their files.
struct World {
    /// Fields drop in order: processes first, the directory last.
    controller: Option<Supervised>,
    controller_log: PathBuf,
    controller_runs: u32,
    status_base: String,
    loads: Vec<Supervised>,
    _edge: Supervised,
    edge_log: PathBuf,
    edge_admin: SocketAddr,
    edge_public: SocketAddr,
    azure_pid: PidFile,
    _nodes: Vec<Supervised>,
    specs: Vec<NodeSpec>,
    _broker: Supervised,
    broker_log: PathBuf,
    plan: PathBuf,
    dir: TempDir,
}

impl World {
    async fn start(tag: &str, expand_hold: &str) -> World {
        let dir = TempDir::new(tag);
        tandem_bin();

        // The broker.
        let broker_dir = dir.path().join("broker");
        std::fs::create_dir_all(&broker_dir).unwrap();
        let broker_log = broker_dir.join("tansu.log");
        let broker_addr = free_addr();
        let mut cmd = Command::new(std::env::var_os("TANSU_BIN").unwrap_or_else(|| "tansu".into()));
        cmd.current_dir(&broker_dir)
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://{broker_addr}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{broker_addr}"))
            .args(["--storage-engine", "sqlite://tansu.db"]);
        let mut broker = Supervised::start_logged("tansu", cmd, &broker_log).unwrap_or_else(|e| {
            panic!("{e}: install it with `cargo install tansu --version 0.6.0 --features dynostore,libsql` or set TANSU_BIN")
        });
        broker
            .wait_ready_async(Duration::from_secs(20), || async move {
                std::net::TcpStream::connect(broker_addr).is_ok()
            })
            .await
            .expect("tansu listening");
        let bootstrap = broker_addr.to_string();

        // aws (which creates the topic) then gcp; azure's files only.
        let specs = vec![
            NodeSpec::new(dir.path(), "aws", false, &bootstrap),
            NodeSpec::new(dir.path(), "gcp", true, &bootstrap),
            NodeSpec::new(dir.path(), "azure", true, &bootstrap),
        ];
        let mut nodes = Vec::new();
        for s in &specs[..2] {
            nodes.push(s.start().await);
        }

        // The edge: every cluster's node, aws alone weighted.
        let (edge_public, edge_admin) = (free_addr(), free_addr());
        let mut text = format!(
            "config_version = 1\nlisten = \"{edge_public}\"\nadmin_listen = \"{edge_admin}\"\n\
             admin_token = \"{TOKEN}\"\nzone = \"z\"\ndrain_timeout_secs = 2\n\
             [health]\ninterval_ms = 100\ntimeout_ms = 500\n"
        );
        for s in &specs {
            let (role, version, weight) = match s.cluster {
                "aws" => ("stable", "1.0.0", 100),
                _ => ("canary", "2.0.0", 0),
            };
            text.push_str(&format!(
                "[[clusters]]\nname = \"{}\"\nversion = \"{version}\"\nrole = \"{role}\"\n\
                 weight = {weight}\nnodes = [{{ addr = \"{}\", zone = \"z\" }}]\n",
                s.cluster, s.addr
            ));
        }
        let edge_config = dir.path().join("edge.toml");
        std::fs::write(&edge_config, text).unwrap();
        let edge_log = dir.path().join("edge.log");
        let mut edge = Supervised::start_logged(
            "edge",
            tandem(&["edge", "--config", edge_config.to_str().unwrap()]),
            &edge_log,
        )
        .expect("start tandem edge");
        edge.wait_ready_async(Duration::from_secs(20), || async move {
            tandem_control::supervise::http_status(edge_admin, "/healthz") == Some(200)
        })
        .await
        .expect("edge ready");

        // The plan: the seed's shape with short holds.
        let plan = dir.path().join("plan.yaml");
        std::fs::write(
            &plan,
            format!(
                "release: release-test\n\
                 clusters:\n  \
                   aws:   {{ version: stable, zones: [z] }}\n  \
                   gcp:   {{ version: canary, zones: [z] }}\n  \
                   azure: {{ version: canary, zones: [z], start: cold }}\n\
                 edges:\n  - http://{edge_admin}\n\
                 metrics: {{ source: scrape, interval: 500ms }}\n\
                 baseline: {{ window: 3s }}\n\
                 gates:\n  \
                   latency_p99_ms_max: 2000\n  \
                   latency_p99_vs_baseline_max: 10\n  \
                   error_ratio_max: 0.01\n  \
                   replica_lag_seq_max: {LAG_MAX}\n  \
                   output_hash_divergence: 0\n  \
                   min_requests: 50\n  \
                   breach_for: 2s\n\
                 phases:\n  \
                   - {{ name: warm-up, hold: 3s, weights: {{ aws: 100, gcp: 0,  azure: 0 }} }}\n  \
                   - {{ name: canary,  hold: 3s, weights: {{ aws: 95,  gcp: 5,  azure: 0 }} }}\n  \
                   - {{ name: expand,  hold: {expand_hold}, weights: {{ aws: 70,  gcp: 30, azure: 0 }} }}\n  \
                   - {{ name: balance, hold: 3s, weights: {{ aws: 45,  gcp: 45, azure: 10 }} }}\n  \
                   - {{ name: done,    hold: 0,  weights: {{ aws: 34,  gcp: 33, azure: 33 }} }}\n\
                 on_failure: rollback\n"
            ),
        )
        .unwrap();

        let azure = &specs[2];
        let azure_pid = PidFile {
            path: dir.path().join("azure.pid"),
            marker: azure.config.display().to_string(),
        };
        World {
            controller: None,
            controller_log: dir.path().join("controller.log"),
            controller_runs: 0,
            status_base: String::new(),
            loads: Vec::new(),
            _edge: edge,
            edge_log,
            edge_admin,
            edge_public,
            azure_pid,
            _nodes: nodes,
            specs,
            _broker: broker,
            broker_log,
            plan,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Panics with `msg` and the tails of every process's log.
    fn fail(&self, msg: &str) -> ! {
        let mut s = format!("{msg}\n");
        let mut logs: Vec<(String, PathBuf)> = vec![
            ("controller".into(), self.controller_log.clone()),
            ("edge".into(), self.edge_log.clone()),
            ("tansu".into(), self.broker_log.clone()),
        ];
        for n in &self.specs {
            logs.push((format!("node {}", n.cluster), n.log.clone()));
        }
        for i in 0..self.loads.len().max(1) {
            logs.push((
                format!("loadgen {i}"),
                self.path(&format!("loadgen-{i}.log")),
            ));
        }
        logs.push(("timeline".into(), self.path("timeline.jsonl")));
        logs.push(("judged windows".into(), self.path("windows.jsonl")));
        for (name, path) in logs {
            s.push_str(&format!(
                "\n----- {name} ({}) -----\n{}\n",
                path.display(),
                tail(&path, 3000)
            ));
        }
        // The test's directory goes with it: keep the evidence of a wrong
        // verdict where it can be replayed through the judge.
        for f in ["timeline.jsonl", "windows.jsonl"] {
            let keep =
                std::env::temp_dir().join(format!("tandem-release-{}-{f}", std::process::id()));
            if std::fs::copy(self.path(f), &keep).is_ok() {
                s.push_str(&format!("kept {}\n", keep.display()));
            }
        }
        panic!("{s}");
    }

    /// `tandem rollout run` on the plan, the state file and the timeline,
    /// starting azure with a command that outlives the shell.
    async fn start_controller(&mut self) {
        let listen = free_addr();
        let azure = &self.specs[2];
        let start = format!(
            "'{bin}' node --config '{config}' >> '{log}' 2>&1 & echo $! > '{pid}'",
            bin = tandem_bin().display(),
            config = azure.config.display(),
            log = azure.log.display(),
            pid = self.azure_pid.path.display(),
        );
        let mut cmd = tandem(&[
            "rollout",
            "run",
            "--plan",
            self.plan.to_str().unwrap(),
            "--listen",
            &listen.to_string(),
            "--timeline",
            self.path("timeline.jsonl").to_str().unwrap(),
            "--state",
            self.path("state.json").to_str().unwrap(),
            "--windows",
            self.path("windows.jsonl").to_str().unwrap(),
            "--start",
            &format!("azure={start}"),
        ]);
        cmd.env("TANDEM_EDGE_ADMIN_TOKEN", TOKEN);
        self.controller_runs += 1;
        let name = format!("controller {}", self.controller_runs);
        let mut p = Supervised::start_logged(&name, cmd, &self.controller_log)
            .expect("start tandem rollout run");
        let base = format!("http://{listen}");
        let b = base.clone();
        let ready = p
            .wait_ready_async(Duration::from_secs(20), move || {
                let b = b.clone();
                async move { status_of(&b).await.is_some() }
            })
            .await;
        if let Err(e) = ready {
            self.fail(&format!("the controller did not serve /status: {e}"));
        }
        self.controller = Some(p);
        self.status_base = base;
    }

    /// A loadgen round through the edge: `secs` seconds, every order read
    /// back after the run, its report as JSON.
    fn start_load(&mut self, secs: u32) {
        let i = self.loads.len();
        let json = self.path(&format!("loadgen-{i}.json"));
        let cmd = tandem(&[
            "loadgen",
            "--target",
            &format!("http://{}", self.edge_public),
            "--rate",
            &RATE.to_string(),
            "--duration",
            &secs.to_string(),
            "--warmup",
            "0",
            "--connections",
            "16",
            "--accounts",
            "1000",
            "--markets",
            "4",
            "--threads",
            "1",
            "--seed",
            &(i + 1).to_string(),
            "--id-prefix",
            &format!("round{i}"),
            "--verify",
            "--json",
            json.to_str().unwrap(),
        ]);
        let p = Supervised::start_logged(
            &format!("loadgen {i}"),
            cmd,
            &self.path(&format!("loadgen-{i}.log")),
        )
        .expect("start tandem loadgen");
        self.loads.push(p);
    }

    /// The controller's `/status`, if it answers.
    async fn status(&self) -> Option<serde_json::Value> {
        status_of(&self.status_base).await
    }

    /// Runs load rounds (`first` seconds, then `more` while the
    /// controller runs) until the controller has exited and the last
    /// round with it; `watch` sees every status on the way and may stop
    /// the wait (true: return with the controller still running).
    async fn drive(
        &mut self,
        first: u32,
        more: u32,
        within: Duration,
        mut watch: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<std::process::ExitStatus> {
        if self.loads.is_empty() {
            self.start_load(first);
        }
        let deadline = Instant::now() + within;
        let mut exited = None;
        loop {
            if exited.is_none() {
                exited = self.controller.as_mut().unwrap().try_exit();
                if exited.is_none() {
                    if let Some(s) = self.status().await {
                        if watch(&s) {
                            return None;
                        }
                    }
                }
            }
            let load_done = self.loads.last_mut().unwrap().try_exit().is_some();
            if load_done {
                if exited.is_some() {
                    return exited;
                }
                self.start_load(more);
            }
            if Instant::now() > deadline {
                let s = self.status().await;
                self.fail(&format!(
                    "the release did not end within {} s; controller status: {s:?}",
                    within.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn timeline(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("timeline.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a timeline line is JSON"))
            .collect()
    }

    fn admin(&self) -> EdgeAdmin {
        EdgeAdmin::new(
            Http::new(Duration::from_secs(2)),
            &format!("http://{}", self.edge_admin),
            TOKEN,
        )
        .expect("edge admin client")
    }

    /// Every loadgen report: no failed request, nothing lost, duplicated
    /// or inconsistent, every order read back.
    fn check_loads(&mut self) -> u64 {
        let mut ok = 0;
        for i in 0..self.loads.len() {
            let status = self.loads[i].try_exit().expect("loadgen exited");
            let json = self.path(&format!("loadgen-{i}.json"));
            let Ok(text) = std::fs::read_to_string(&json) else {
                self.fail(&format!("loadgen {i} ({status}) wrote no report"));
            };
            let r: serde_json::Value = serde_json::from_str(&text).expect("report JSON");
            let v = &r["verify"];
            let e = &r["errors"];
            let failed = e["connect"].as_u64().unwrap()
                + e["timeout"].as_u64().unwrap()
                + e["body_mismatch"].as_u64().unwrap()
                + sum(&e["http_4xx"])
                + sum(&e["http_5xx"]);
            let bad = failed != 0
                || r["ok"] != r["measured"]
                || v["lost"] != 0
                || v["duplicated"] != 0
                || v["inconsistent"] != 0
                || v["unverified"] != 0
                || r["orders"]["duplicated_in_run"] != 0
                || v["checked"] != r["orders"]["accepted"]
                || !status.success();
            if bad {
                self.fail(&format!(
                    "loadgen {i} ({status}): failed {failed}, errors {e}, verify {v}, orders {}",
                    r["orders"]
                ));
            }
            ok += r["ok"].as_u64().unwrap();
        }
        ok
    }

    /// Waits until every node applied the same seq, then checks their
    /// output hashes are equal: the seq.
    async fn check_nodes_agree(&self) -> u64 {
        let clients: Vec<NodeClient> = self.specs.iter().map(NodeSpec::client).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = Vec::new();
            for c in &clients {
                if let Ok(s) = c.status().await {
                    let p = &s.partitions[0];
                    seen.push((s.cluster.clone(), p.applied_seq, p.output_hash.clone()));
                }
            }
            let same_seq = seen.len() == clients.len()
                && seen.iter().all(|x| x.1 == seen[0].1)
                && seen[0].1 > 0;
            if same_seq {
                if !seen.iter().all(|x| x.2 == seen[0].2) {
                    self.fail(&format!("the nodes' hashes differ at one seq: {seen:?}"));
                }
                return seen[0].1;
            }
            if Instant::now() > deadline {
                self.fail(&format!("the nodes never reached one seq: {seen:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn sum(v: &serde_json::Value) -> u64 {
    v.as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0)
}

/// `GET /status` of a controller, as JSON; `None` if it does not answer.
async fn status_of(base: &str) -> Option<serde_json::Value> {
    let body = tandem_rollout::status::request(base, None, Duration::from_secs(2))
        .await
        .ok()?;
    serde_json::from_str(&body).ok()
}

fn weights(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn actions(lines: &[serde_json::Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|e| {
            (
                e["phase"].as_str().unwrap_or_default().to_owned(),
                e["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The checks both tests end with: the controller exited 0, the timeline
/// started azure before its first weight, verified and ended on the final
/// weights, the edge carries them, the load failed nothing, the nodes
/// agree.
async fn check_release(w: &mut World, exit: Option<std::process::ExitStatus>) {
    let exit = exit.expect("the controller exited");
    if !exit.success() {
        w.fail(&format!("the controller exited with {exit}"));
    }
    let final_w = weights(&[("aws", 34), ("gcp", 33), ("azure", 33)]);
    let lines = w.timeline();
    let acts = actions(&lines);
    let start = lines
        .iter()
        .position(|e| e["action"] == "start_cluster" && e["cluster"] == "azure");
    let first_azure = lines
        .iter()
        .position(|e| e["weights"]["azure"].as_u64().unwrap_or(0) > 0);
    match (start, first_azure) {
        (Some(s), Some(f)) if s < f => {}
        _ => w.fail(&format!(
            "azure must start before its first weight: start {start:?}, first weight {first_azure:?}: {acts:?}"
        )),
    }
    for want in [
        ("canary", "verify"),
        ("balance", "verify"),
        ("done", "set_weights"),
        ("done", "done"),
    ] {
        if !acts.iter().any(|(p, a)| (p.as_str(), a.as_str()) == want) {
            w.fail(&format!("{want:?} missing from the timeline: {acts:?}"));
        }
    }
    if acts.iter().any(|(_, a)| a == "rollback" || a == "pause") {
        w.fail(&format!("a pause or rollback: {acts:?}"));
    }
    // A breach that did not last `breach_for` changes nothing; on a loaded
    // two-core host a latency or lag gate can be crossed for a moment by a
    // healthy release. A breach of a correctness gate (errors, output
    // hash) fails the test however short. Every breach is printed with its
    // reason, so a run that saw them says so.
    for e in lines.iter().filter(|e| e["action"] == "breach") {
        eprintln!("breach (did not last): {e}");
        let gates: Vec<&str> = e["breaches"]
            .as_array()
            .map(|b| b.iter().filter_map(|b| b["gate"].as_str()).collect())
            .unwrap_or_default();
        if gates
            .iter()
            .any(|g| *g == "error_ratio_max" || *g == "output_hash_divergence")
        {
            w.fail(&format!("a breach of a correctness gate: {e}"));
        }
    }
    let last_set = lines
        .iter()
        .rev()
        .find(|e| e["action"] == "set_weights")
        .unwrap();
    assert_eq!(
        last_set["weights"],
        serde_json::json!(final_w),
        "{last_set}"
    );
    assert_eq!(lines.last().unwrap()["action"], "done");
    let cold = lines[start.unwrap()]["reason"].as_str().unwrap_or_default();
    assert!(cold.contains("azure"), "{cold}");

    let on_edge = w.admin().weights().await.expect("edge weights").weights;
    assert_eq!(on_edge, final_w, "the edge's weights");
    // azure serves after the controller exited (it carries a third).
    let azure_pid = w.azure_pid.pid();
    if azure_pid.is_none() {
        w.fail("the cold-started azure node is not running");
    }

    let ok = w.check_loads();
    assert!(
        ok >= u64::from(RATE) * 20,
        "load too small over the release: {ok} orders"
    );
    let seq = w.check_nodes_agree().await;
    let release_ms = lines.last().unwrap()["t_ms"].as_u64().unwrap()
        - lines.first().unwrap()["t_ms"].as_u64().unwrap();
    let cold_ms = std::fs::read_to_string(w.path("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v["state"]["cold_started_ms"]["azure"].clone());
    let p99s: Vec<String> = lines
        .iter()
        .filter(|e| e["action"] == "pass")
        .map(|e| {
            let g = &e["gates"];
            format!(
                "{}: aws {} gcp {} azure {}",
                e["phase"], g["aws"]["p99_ms"], g["gcp"]["p99_ms"], g["azure"]["p99_ms"]
            )
        })
        .collect();
    eprintln!("p99 ms at each pass: {p99s:?}");
    eprintln!(
        "release: {release_ms} ms, azure ready {cold_ms:?} ms after its start, {} loadgen round(s), \
         {ok} orders ok, every node at seq {seq}; timeline: {acts:?}",
        w.loads.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_shaped_release_is_promoted_over_one_kafka_log_with_azure_started_cold() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut w = World::start("release", "3s").await;
    w.start_controller().await;
    let exit = w.drive(30, 10, Duration::from_secs(150), |_| false).await;
    check_release(&mut w, exit).await;
    eprintln!("release test: {} s", started.elapsed().as_secs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_killed_during_expand_resumes_expand_and_finishes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut w = World::start("release-kill", "8s").await;
    w.start_controller().await;
    // Wait (on its /status) until expand holds; fail if it ended first.
    let mut seen = None;
    let r = w
        .drive(35, 10, Duration::from_secs(120), |s| {
            let hold = s["phase"] == "expand" && s["stage"] == "hold";
            if hold {
                seen = Some(s.clone());
            }
            hold
        })
        .await;
    if let Some(exit) = r {
        w.fail(&format!("the controller ended ({exit}) before expand held"));
    }
    assert_eq!(
        seen.unwrap()["weights"],
        serde_json::json!({"aws": 70, "gcp": 30, "azure": 0})
    );
    // kill -9.
    let status = w.controller.as_mut().unwrap().kill();
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let before = w.timeline().len();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("state.json")).unwrap()).unwrap();
    assert_eq!(saved["state"]["phase"], 2, "saved in expand: {saved}");

    // Started again on the same state file: expand again, never an
    // earlier phase, never balance before expand passed.
    w.start_controller().await;
    let mut phases_seen: Vec<String> = Vec::new();
    let exit = w
        .drive(35, 10, Duration::from_secs(120), |s| {
            let p = s["phase"].as_str().unwrap_or_default().to_owned();
            // Before its first decision the listener shows no phase yet.
            if !p.is_empty() && phases_seen.last() != Some(&p) {
                phases_seen.push(p);
            }
            false
        })
        .await;
    assert_eq!(
        phases_seen.first().map(String::as_str),
        Some("expand"),
        "the restarted controller's phases: {phases_seen:?}"
    );
    let after = actions(&w.timeline()[before..]);
    if after.iter().any(|(p, _)| p == "warm-up" || p == "canary") {
        w.fail(&format!("went back to an earlier phase: {after:?}"));
    }
    let expand_pass = after.iter().position(|(p, a)| p == "expand" && a == "pass");
    let balance_first = after.iter().position(|(p, _)| p == "balance");
    match (expand_pass, balance_first) {
        (Some(e), Some(b)) if e < b => {}
        _ => w.fail(&format!("balance before expand passed: {after:?}")),
    }
    // The expand hold lasted its 8 s in all, the kill notwithstanding.
    let lines = w.timeline();
    let t = |phase: &str, action: &str| {
        lines
            .iter()
            .find(|e| e["phase"] == phase && e["action"] == action)
            .and_then(|e| e["t_ms"].as_u64())
    };
    match (t("expand", "hold"), t("expand", "pass")) {
        (Some(h), Some(p)) if p >= h + 8_000 => {}
        (h, p) => w.fail(&format!("expand held from {h:?} to {p:?}: less than 8 s")),
    }
    eprintln!("after the restart: phases {phases_seen:?}, timeline {after:?}");
    check_release(&mut w, exit).await;
    eprintln!("kill -9 test: {} s", started.elapsed().as_secs());
}
