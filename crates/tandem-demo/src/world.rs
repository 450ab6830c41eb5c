//! The processes of one scenario run and their files: a tansu broker
//! holding the one Kafka log, nine `tandem node` processes (three clusters
//! in three zones each, labelled as in the plan), a link proxy in front of
//! every node (the edge is outside every cloud), `tandem edge` in front of all clusters,
//! `tandem rollout run` on the seed plan, and rounds of `tandem loadgen`.
//! Everything runs from the same `tandem` binary as the demo (its own
//! executable), on loopback, under one directory per scenario.
//!
//! Every process is a [`Supervised`] child, killed on drop; the nodes of
//! a cold cluster are started by the controller (`--start`) with a shell
//! command that writes their pids, which the world kills at its end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tandem_control::supervise::{http_status, Supervised};
use tandem_control::{EdgeAdmin, Http, NodeClient};
use tandem_rollout::plan::{Plan, Start, Version};

use crate::link::Link;

/// The admin token of the demo's edges (its controller gets it through
/// `TANDEM_EDGE_ADMIN_TOKEN`, as a user's would).
pub const TOKEN: &str = "tandem-demo-admin-token";
/// The Kafka topic of the order log.
pub const TOPIC: &str = "orders";
/// On Kafka a seq is `(offset + 1) << 16 | index`.
const MESSAGE: u64 = 1 << 16;
/// Chain checkpoints every 16 Kafka messages.
pub const CHECKPOINT_EVERY: u64 = 16 * MESSAGE;

/// What differs between scenarios in the processes started.
#[derive(Debug, Clone)]
pub struct Setup {
    pub dir: PathBuf,
    /// The seed plan's text (`deploy/rollout/seed.yaml`).
    pub seed: String,
    pub time_scale: f64,
    pub link_delay: Duration,
    /// A link between the nodes and the broker with this one-way delay;
    /// `None`: the nodes reach tansu directly.
    pub broker_delay: Option<Duration>,
    /// `[limits] max_open_orders_per_account` of canary nodes, when they
    /// are to compute differently from stable.
    pub canary_open_limit: Option<u32>,
    /// Gates replaced in the plan (name → value).
    pub gates: BTreeMap<String, f64>,
    /// `LD_PRELOAD` + `FAKETIME` for one node: (node name, offset like
    /// `+10s`).
    pub skewed: Option<(String, String)>,
    pub tansu: PathBuf,
    /// tansu's `--storage-engine`: `sqlite://tansu.db` (the default) or
    /// `memory://tansu/`.
    pub broker_storage: String,
    /// The nodes' `kafka_fetch_wait_ms`.
    pub fetch_wait_ms: u64,
    /// `--worker`: the Cloudflare Worker in workerd in front of the edge.
    pub worker: Option<crate::worker::WorkerParts>,
}

/// One node's files and addresses.
#[derive(Debug)]
pub struct NodeSpec {
    pub name: String,
    pub cluster: String,
    pub zone: String,
    pub canary: bool,
    pub cold: bool,
    /// Where it listens.
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    pub data: PathBuf,
    pub pid_file: PathBuf,
}

impl NodeSpec {
    pub fn client(&self) -> NodeClient {
        NodeClient::new(
            Http::new(Duration::from_secs(2)),
            &format!("http://{}", self.addr),
        )
        .expect("a loopback URL")
    }
}

/// The processes of one run.
#[derive(Debug)]
pub struct World {
    pub setup: Setup,
    pub plan: Plan,
    pub plan_path: PathBuf,
    pub nodes: Vec<NodeSpec>,
    /// Warm nodes by name (cold ones are the controller's children).
    pub procs: BTreeMap<String, Supervised>,
    /// Per cluster, its nodes' links (edge → node).
    pub links: BTreeMap<String, Vec<Link>>,
    pub broker: Option<Supervised>,
    /// The address the nodes use: the broker's link.
    pub broker_addr: SocketAddr,
    /// The address tansu listens on, behind its link.
    pub broker_inner: SocketAddr,
    pub broker_link: Option<Link>,
    pub broker_dir: PathBuf,
    pub edge: Option<Supervised>,
    pub edge_config: PathBuf,
    pub edge_public: SocketAddr,
    pub edge_admin: SocketAddr,
    pub controller: Option<Supervised>,
    pub controller_listen: SocketAddr,
    /// The Cloudflare Worker in front of the edge, with `--worker`.
    pub worker: Option<crate::worker::Worker>,
    pub started: Instant,
    pub started_unix_ms: u64,
    /// Why the node with a skewed clock did not start, if it did not.
    pub skew_error: Option<String>,
}

/// The `tandem` binary: this executable, or `TANDEM_BIN`.
pub fn tandem_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANDEM_BIN") {
        return p.into();
    }
    std::env::current_exe().unwrap_or_else(|_| "tandem".into())
}

/// `tandem <args>` without the caller's `TANDEM_*` environment.
pub fn tandem(args: &[&str]) -> Command {
    let mut cmd = Command::new(tandem_bin());
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TANDEM_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A loopback address free a moment ago, on a port below the kernel's
/// ephemeral range. A port the kernel picks for `bind(0)` comes from that
/// range, and so does the local port of every outgoing connection: with a
/// few hundred connections open (nine nodes' Kafka clients, links, the
/// edge) one of them could take the port between this probe and the
/// process's own bind ("Address already in use", seen once in the faults
/// scenario). Below the range only another listener can take it.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000u32, low.saturating_sub(10_000));
    if span >= 1000 {
        // Start where other demos (other processes) are unlikely to be.
        let base = std::process::id().wrapping_mul(7919);
        for _ in 0..span {
            let port = first + (base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span);
            let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
            if std::net::TcpListener::bind(addr).is_ok() {
                return addr;
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The seed plan with this run's edges and gates. Text substitution on
/// the seed keeps its comments and layout; every substitution is checked.
pub fn plan_text(
    seed: &str,
    edge_admins: &[SocketAddr],
    gates: &BTreeMap<String, f64>,
) -> Result<String> {
    let mut out = String::new();
    let mut in_edges = false;
    let mut in_gates = false;
    let mut replaced = 0;
    for line in seed.lines() {
        let top = !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty();
        if top {
            in_edges = line.starts_with("edges:");
            in_gates = line.starts_with("gates:");
            out.push_str(line);
            out.push('\n');
            if in_edges {
                for a in edge_admins {
                    out.push_str(&format!("  - http://{a}\n"));
                }
            }
            continue;
        }
        if in_edges && line.trim_start().starts_with("- ") {
            continue;
        }
        if in_gates {
            let key = line.trim_start().split(':').next().unwrap_or("").trim();
            if let Some(v) = gates.get(key) {
                out.push_str(&format!("  {key}: {v}\n"));
                replaced += 1;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if replaced != gates.len() {
        bail!(
            "the seed plan lacks some of the gates {:?}",
            gates.keys().collect::<Vec<_>>()
        );
    }
    Ok(out)
}

/// The gates of the seed plan, by name.
pub fn seed_gates(plan: &Plan) -> BTreeMap<String, f64> {
    let g = &plan.gates;
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Option<f64>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    put("latency_p99_ms_max", g.latency_p99_ms_max);
    put("latency_p99_vs_baseline_max", g.latency_p99_vs_baseline_max);
    put("error_ratio_max", g.error_ratio_max);
    put(
        "replica_lag_seq_max",
        g.replica_lag_seq_max.map(|v| v as f64),
    );
    put(
        "output_hash_divergence",
        Some(g.output_hash_divergence as f64),
    );
    put("min_requests", Some(g.min_requests as f64));
    m
}

impl World {
    pub fn path(&self, name: &str) -> PathBuf {
        self.setup.dir.join(name)
    }

    pub fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Starts the broker, the warm nodes, the links and the edge, and
    /// writes the plan. The controller and the load start later.
    pub async fn start(setup: Setup) -> Result<World> {
        std::fs::create_dir_all(&setup.dir)
            .with_context(|| format!("create {}", setup.dir.display()))?;
        let started = Instant::now();
        let started_unix_ms = unix_ms();

        // The plan decides the clusters and zones.
        let seed_plan = Plan::parse(&setup.seed, "deploy/rollout/seed.yaml")
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        // The broker.
        let broker_dir = setup.dir.join("broker");
        std::fs::create_dir_all(&broker_dir)?;
        // The broker is its own service (the source's was Confluent
        // Cloud). With `broker_delay`, it is reached from every cluster
        // across a link: tansu listens on `broker_inner` and advertises
        // the link's address, so every Kafka connection after bootstrap
        // goes through the link too.
        let broker_inner = free_addr();
        let (broker_addr, broker_link) = match setup.broker_delay {
            Some(delay) => {
                let addr = free_addr();
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind the broker's link on {addr}"))?;
                let link = Link::serve(listener, broker_inner, delay)
                    .context("start the broker's link")?;
                (addr, Some(link))
            }
            None => (broker_inner, None),
        };
        let broker = start_broker(
            &setup.tansu,
            &setup.broker_storage,
            &broker_dir,
            broker_inner,
            broker_addr,
        )
        .await?;

        // Nodes: one per zone of every cluster. A cold cluster's nodes
        // start from the newest snapshot of the first stable cluster's
        // first node (`snapshot.seed_from`: snapshots are portable across
        // replicas of one log).
        let seed_source = seed_plan
            .clusters
            .iter()
            .find(|c| c.version != Version::Canary && c.start != Start::Cold)
            .map(|c| setup.dir.join(format!("{}-1", c.name)).join("state"));
        let mut nodes = Vec::new();
        for c in &seed_plan.clusters {
            for (i, zone) in c.zones.iter().enumerate() {
                let name = format!("{}-{}", c.name, i + 1);
                let data = setup.dir.join(&name);
                std::fs::create_dir_all(&data)?;
                let canary = c.version == Version::Canary;
                let spec = NodeSpec {
                    name: name.clone(),
                    cluster: c.name.clone(),
                    zone: zone.clone(),
                    canary,
                    cold: c.start == Start::Cold,
                    addr: free_addr(),
                    config: data.join("node.toml"),
                    log: data.join("node.log"),
                    data,
                    pid_file: setup.dir.join(format!("{name}.pid")),
                };
                let open_limit = if canary {
                    setup.canary_open_limit
                } else {
                    None
                };
                std::fs::write(
                    &spec.config,
                    node_config(
                        &spec,
                        broker_addr,
                        open_limit,
                        setup.fetch_wait_ms,
                        seed_source.as_deref().filter(|_| spec.cold),
                    ),
                )?;
                nodes.push(spec);
            }
        }

        // Links: the edge is outside every cloud (as Cloudflare's edge
        // is), so every node is behind one, each with the same delay; a
        // cluster reached without the proxy would look faster than the
        // others for a reason that has nothing to do with its version.
        let mut links: BTreeMap<String, Vec<Link>> = BTreeMap::new();
        for n in &nodes {
            let l = Link::start(n.addr, setup.link_delay)
                .await
                .context("start a link proxy")?;
            links.entry(n.cluster.clone()).or_default().push(l);
        }

        let edge_public = free_addr();
        let edge_admin = free_addr();
        let plan_path = setup.dir.join("plan.yaml");
        let text = plan_text(&setup.seed, &[edge_admin], &setup.gates)?;
        std::fs::write(&plan_path, &text)?;
        let plan = Plan::parse(&text, &plan_path.display().to_string())
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        let mut w = World {
            setup,
            plan,
            plan_path,
            nodes,
            procs: BTreeMap::new(),
            links,
            broker: Some(broker),
            broker_addr,
            broker_inner,
            broker_link,
            broker_dir,
            edge: None,
            edge_config: PathBuf::new(),
            edge_public,
            edge_admin,
            controller: None,
            controller_listen: free_addr(),
            worker: None,
            started,
            started_unix_ms,
            skew_error: None,
        };

        // Warm nodes, the home cluster first (it creates the topic).
        let warm: Vec<usize> = (0..w.nodes.len()).filter(|&i| !w.nodes[i].cold).collect();
        for i in warm {
            let skewed = w
                .setup
                .skewed
                .as_ref()
                .is_some_and(|(n, _)| *n == w.nodes[i].name);
            match w.start_node(i).await {
                Ok(()) => {}
                // The run goes on without a skewed node that would not
                // start; the report says why.
                Err(e) if skewed => w.skew_error = Some(format!("{e:#}")),
                Err(e) => return Err(e),
            }
        }
        w.start_edge().await?;
        if let Some(parts) = w.setup.worker.clone() {
            let dir = w.path("worker");
            w.worker = Some(crate::worker::Worker::start(&parts, &dir, w.edge_public).await?);
        }
        Ok(w)
    }

    /// Where the load goes: the Worker with `--worker`, else the edge.
    pub fn load_target(&self) -> SocketAddr {
        self.worker.as_ref().map_or(self.edge_public, |x| x.listen)
    }

    /// Starts node `i` and waits until it is ready.
    pub async fn start_node(&mut self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let mut cmd = tandem(&["node", "--config", &n.config.display().to_string()]);
        if let Some((name, offset)) = &self.setup.skewed {
            if *name == n.name {
                let fix = skewfix_lib(&self.setup.dir)?;
                cmd.env(
                    "LD_PRELOAD",
                    format!("{}:{}", fix.display(), faketime_lib()?.display()),
                );
                cmd.env("FAKETIME", offset);
                cmd.env("FAKETIME_DONT_RESET", "1");
                // A host whose clock is wrong has a wrong wall clock
                // (CLOCK_REALTIME); its monotonic clock still counts
                // seconds, so only the wall clock is shifted.
                cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
        }
        let mut p = Supervised::start_logged(&n.name, cmd, &n.log)?;
        let addr = n.addr;
        p.wait_ready_async(Duration::from_secs(120), || async move {
            http_status(addr, "/readyz") == Some(200)
        })
        .await?;
        self.procs.insert(n.name.clone(), p);
        Ok(())
    }

    /// The address the edge uses for node `n`: its link's.
    fn edge_side_addr(&self, n: &NodeSpec) -> SocketAddr {
        self.links
            .get(&n.cluster)
            .and_then(|ls| ls.iter().find(|l| l.target() == n.addr))
            .map(Link::addr)
            .unwrap_or(n.addr)
    }

    /// Writes the edge's config (all clusters; the stable ones weighted)
    /// and starts it.
    async fn start_edge(&mut self) -> Result<()> {
        let mut text = format!(
            "# Written by tandem demo.\nconfig_version = 1\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\
             admin_token = \"{TOKEN}\"\nzone = \"edge\"\ndrain_timeout_secs = 5\n\
             [health]\ninterval_ms = 200\ntimeout_ms = 1000\n",
            self.edge_public, self.edge_admin
        );
        for c in &self.plan.clusters {
            let stable = c.version == Version::Stable;
            let (role, version, weight) = if stable {
                ("stable", "1.0.0", 100)
            } else {
                ("canary", "2.0.0", 0)
            };
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.cluster == c.name)
                .map(|n| {
                    format!(
                        "{{ addr = \"{}\", zone = \"{}\" }}",
                        self.edge_side_addr(n),
                        n.zone
                    )
                })
                .collect();
            text.push_str(&format!(
                "[[clusters]]\nname = \"{}\"\nversion = \"{version}\"\nrole = \"{role}\"\n\
                 weight = {weight}\nnodes = [{}]\n",
                c.name,
                nodes.join(", ")
            ));
        }
        self.edge_config = self.path("edge.toml");
        std::fs::write(&self.edge_config, text)?;
        let mut edge = Supervised::start_logged(
            "edge",
            tandem(&["edge", "--config", &self.edge_config.display().to_string()]),
            &self.path("edge.log"),
        )?;
        let admin = self.edge_admin;
        edge.wait_ready_async(Duration::from_secs(30), || async move {
            http_status(admin, "/healthz") == Some(200)
        })
        .await?;
        self.edge = Some(edge);
        Ok(())
    }

    pub fn admin(&self) -> EdgeAdmin {
        EdgeAdmin::new(
            Http::new(Duration::from_secs(2)),
            &format!("http://{}", self.edge_admin),
            TOKEN,
        )
        .expect("a loopback URL")
    }

    /// The shell line the controller runs to start a cold cluster: each
    /// node started in the background, its pid written. Each starts from
    /// a stable node's newest snapshot (`snapshot.seed_from` in its
    /// config), with the answers window and chain checkpoints beside it.
    pub fn cold_start_command(&self, cluster: &str) -> String {
        let bin = tandem_bin();
        let mut parts = Vec::new();
        for n in self.nodes.iter().filter(|n| n.cluster == cluster) {
            parts.push(format!(
                "'{bin}' node --config '{config}' >> '{log}' 2>&1 & echo $! > '{pid}'",
                bin = bin.display(),
                config = n.config.display(),
                log = n.log.display(),
                pid = n.pid_file.display(),
            ));
        }
        parts.join("; ")
    }

    /// Starts `tandem rollout run` on the plan and waits for its status.
    pub async fn start_controller(&mut self) -> Result<()> {
        let listen = self.controller_listen.to_string();
        let mut args: Vec<String> = vec![
            "rollout".into(),
            "run".into(),
            "--plan".into(),
            self.plan_path.display().to_string(),
            "--time-scale".into(),
            self.setup.time_scale.to_string(),
            "--listen".into(),
            listen,
            "--timeline".into(),
            self.path("timeline.jsonl").display().to_string(),
            "--state".into(),
            self.path("state.json").display().to_string(),
            "--windows".into(),
            self.path("windows.jsonl").display().to_string(),
        ];
        for c in self.plan.clusters.iter().filter(|c| c.start == Start::Cold) {
            args.push("--start".into());
            args.push(format!("{}={}", c.name, self.cold_start_command(&c.name)));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = tandem(&refs);
        cmd.env("TANDEM_EDGE_ADMIN_TOKEN", TOKEN);
        let mut p = Supervised::start_logged("controller", cmd, &self.path("controller.log"))?;
        let base = format!("http://{}", self.controller_listen);
        p.wait_ready_async(Duration::from_secs(30), || {
            let b = base.clone();
            async move {
                tandem_rollout::status::request(&b, None, Duration::from_secs(2))
                    .await
                    .is_ok()
            }
        })
        .await?;
        self.controller = Some(p);
        Ok(())
    }

    /// The controller's `/status` as JSON, if it answers.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let base = format!("http://{}", self.controller_listen);
        let body = tandem_rollout::status::request(&base, None, Duration::from_secs(2))
            .await
            .ok()?;
        serde_json::from_str(&body).ok()
    }

    /// The timeline so far.
    pub fn timeline(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("timeline.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The pid a cold start wrote for `n`, if that process still runs
    /// this node's config.
    pub fn cold_pid(&self, n: &NodeSpec) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&n.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(&n.config.display().to_string())
            .then_some(pid)
    }

    /// Restarts the broker on its data: SIGTERM (a rolling restart's
    /// stop, at most 10 s, then SIGKILL), then start again on the same
    /// address and database. Its link stays up, as a network would.
    pub async fn restart_broker(&mut self) -> Result<()> {
        if let Some(mut b) = self.broker.take() {
            let _ = tokio::task::block_in_place(|| b.stop(Duration::from_secs(10)));
        }
        let b = start_broker(
            &self.setup.tansu,
            &self.setup.broker_storage,
            &self.broker_dir,
            self.broker_inner,
            self.broker_addr,
        )
        .await?;
        self.broker = Some(b);
        Ok(())
    }

    /// Hands the edge over to a new process (SIGUSR2): the old one passes
    /// its listening sockets on and drains.
    pub async fn hand_over_edge(&mut self) -> Result<()> {
        let edge = self.edge.as_mut().context("no edge")?;
        let old_pid = edge.pid();
        edge.signal(tandem_control::supervise::signal::USR2)?;
        // The successor is the edge's child; the old one exits once drained.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = edge.try_exit() {
                if !status.success() {
                    bail!("the edge exited with {status} after SIGUSR2");
                }
                break;
            }
            if Instant::now() > deadline {
                bail!("the edge (pid {old_pid}) did not hand over within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kills everything this run started, the cold nodes too.
    pub fn shutdown(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.kill();
        }
        if let Some(mut x) = self.worker.take() {
            x.stop();
        }
        for n in &self.nodes {
            if let Some(pid) = self.cold_pid(n) {
                // SAFETY-free: kill(1) by pid, checked against its cmdline.
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        // An edge successor after a hand-over is not our child: find it by
        // its config path.
        kill_matching(&self.edge_config.display().to_string());
        self.edge.take();
        self.procs.clear();
        self.broker.take();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// SIGKILL to every process whose command line holds `marker`.
fn kill_matching(marker: &str) {
    if marker.is_empty() {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(marker) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// libfaketime's preload library, if Debian's `faketime` is installed.
pub fn faketime_lib() -> Result<PathBuf> {
    for p in [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ] {
        if Path::new(p).is_file() {
            return Ok(p.into());
        }
    }
    bail!("libfaketime is not installed: apt-get install -y faketime")
}

/// The shim of `src/skewfix.c` (built by `build.rs`), written to `dir` so
/// that it can be preloaded before libfaketime.
fn skewfix_lib(dir: &Path) -> Result<PathBuf> {
    static LIB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libtandem_skewfix.so"));
    let path = dir.join("libtandem_skewfix.so");
    std::fs::write(&path, LIB).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// tansu listening on `addr`, advertising `advertised` (its link), with
/// `storage` as its engine, in `dir`.
async fn start_broker(
    tansu: &Path,
    storage: &str,
    dir: &Path,
    addr: SocketAddr,
    advertised: SocketAddr,
) -> Result<Supervised> {
    let mut cmd = Command::new(tansu);
    cmd.current_dir(dir)
        .args(["broker", "--listener-url"])
        .arg(format!("tcp://{addr}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://{advertised}"))
        .args(["--storage-engine", storage]);
    let mut b = Supervised::start_logged("tansu", cmd, &dir.join("tansu.log"))?;
    b.wait_ready_async(Duration::from_secs(30), || async move {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await?;
    Ok(b)
}

/// A node's config: on the shared Kafka log, labelled for the plan.
fn node_config(
    n: &NodeSpec,
    broker: SocketAddr,
    open_limit: Option<u32>,
    fetch_wait_ms: u64,
    seed_from: Option<&Path>,
) -> String {
    let (role, version) = if n.canary {
        ("canary", "2.0.0")
    } else {
        ("stable", "1.0.0")
    };
    let limit = open_limit
        .map(|l| format!("max_open_orders_per_account = {l}\n"))
        .unwrap_or_default();
    let seed = seed_from
        .map(|p| format!("seed_from = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        r#"# Written by tandem demo.
config_version = 1
listen = "{addr}"
node = "{name}"
cluster = "{cluster}"
zone = "{zone}"
role = "{role}"
version = "{version}"
data_dir = "{state}"

[log]
kind = "kafka"
kafka_brokers = "{broker}"
kafka_topic = "{TOPIC}"
kafka_partitions = 1
kafka_create_topic = true
kafka_replication = 1
kafka_min_insync_replicas = 1
kafka_fetch_wait_ms = {fetch_wait_ms}
max_batch = 256

[snapshot]
every_commands = 5000
every_secs = 0
keep = 2
{seed}
[limits]
account_rate = 0
wait_ms = 10000
checkpoint_every = {CHECKPOINT_EVERY}
{limit}
[http]
drain_grace_ms = 200
drain_timeout_secs = 5
"#,
        addr = n.addr,
        name = n.name,
        cluster = n.cluster,
        zone = n.zone,
        state = n.data.join("state").display(),
    )
}

/// How far `addr`'s wall clock is from this process's, in whole seconds
/// (positive: ahead), read from the `Date` header of its `/healthz`
/// answer. The header has a resolution of one second, so the result is
/// within ±1 s. `None` when the node does not answer or sends no `Date`.
pub fn wall_clock_offset_s(addr: SocketAddr) -> Option<i64> {
    use std::io::{Read, Write};
    let t = Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&addr, t).ok()?;
    s.set_read_timeout(Some(t)).ok()?;
    let req = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 << 10 {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let now = std::time::SystemTime::now();
    let head = String::from_utf8_lossy(&buf);
    let date = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("date")
            .then(|| v.trim().to_owned())
    })?;
    let theirs = httpdate::parse_http_date(&date).ok()?;
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    Some(secs(theirs) - secs(now))
}
