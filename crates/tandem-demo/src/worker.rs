//! `tandem demo --worker`: the real Cloudflare Worker
//! (`deploy/cloudflare/src/worker.js` with `build/tandem_route.wasm`) in
//! workerd, Cloudflare's runtime, as the outermost layer. The load
//! generator sends to the Worker; the Worker's routes name one origin, the
//! Tandem edge's public address. So the Worker makes the outer split
//! (Cloudflare's, whose weights live in KV and take up to 60 s to reach
//! every location) and the Tandem edge behind it the per-cluster split the
//! controller drives (its 5 s rollback). The edge names the cluster that
//! answered in `x-tandem-cluster`, which the Worker keeps.
//!
//! The requests the Worker served are counted on workerd's side by a tail
//! worker (`COUNTER_JS`, workerd's `tails` list): after every invocation of
//! the Worker, workerd hands it the invocation's trace (outcome and the
//! response's status), and it answers `GET /` on its own loopback socket
//! with the counts. The Worker's code is the one deployed, unchanged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tandem_control::supervise::{http_status, Supervised};

use crate::cli::UsageError;
use crate::report::{WorkerProbe, WorkerReport};

/// `deploy/cloudflare` of the checkout this binary was built from.
pub const CLOUDFLARE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/cloudflare");

/// The name of the Worker's one origin in its routes.
pub const ORIGIN_NAME: &str = "tandem-edge";

/// The tail worker that counts the Worker's invocations.
const COUNTER_JS: &str = r#"// Written by tandem demo: counts the invocations of the Worker it tails.
const counts = { requests: 0, outcomes: {}, statuses: {} };
function add(map, key) { map[key] = (map[key] || 0) + 1; }
export default {
  tail(events) {
    for (const e of events) {
      counts.requests++;
      add(counts.outcomes, String(e.outcome));
      const r = e.event && e.event.response;
      add(counts.statuses, r ? String(r.status) : "none");
    }
  },
  fetch() {
    return new Response(JSON.stringify(counts), { headers: { "content-type": "application/json" } });
  },
};
"#;

/// The files the Worker layer needs, found before anything starts.
#[derive(Debug, Clone)]
pub struct WorkerParts {
    pub workerd: PathBuf,
    pub worker_js: PathBuf,
    pub wasm: PathBuf,
}

/// Finds workerd (`WORKERD_BIN`, else npm's package under
/// `deploy/cloudflare`), the Worker's source and its wasm module
/// (`TANDEM_ROUTE_WASM`, else `deploy/cloudflare/build/`), and says what
/// to run for the one that is missing.
pub fn find() -> Result<WorkerParts, UsageError> {
    let dir = std::fs::canonicalize(CLOUDFLARE_DIR).unwrap_or_else(|_| CLOUDFLARE_DIR.into());
    let dir = dir.as_path();
    let workerd = match std::env::var_os("WORKERD_BIN") {
        Some(p) => PathBuf::from(p),
        None => dir.join("node_modules/@cloudflare/workerd-linux-64/bin/workerd"),
    };
    if !workerd.is_file() {
        return Err(UsageError(format!(
            "--worker: workerd is not at {}. Install it with:\n  cd {} && npm ci\n\
             or point WORKERD_BIN at a workerd binary.",
            workerd.display(),
            dir.display()
        )));
    }
    let worker_js = dir.join("src/worker.js");
    if !worker_js.is_file() {
        return Err(UsageError(format!(
            "--worker: the Worker's source {} is missing (run the demo from a Tandem checkout's build)",
            worker_js.display()
        )));
    }
    let wasm = match std::env::var_os("TANDEM_ROUTE_WASM") {
        Some(p) => PathBuf::from(p),
        None => dir.join("build/tandem_route.wasm"),
    };
    if !wasm.is_file() {
        return Err(UsageError(format!(
            "--worker: the routing module {} is missing. Build it with:\n  {}/build.sh\n\
             or point TANDEM_ROUTE_WASM at a built tandem_route.wasm.",
            wasm.display(),
            dir.display()
        )));
    }
    Ok(WorkerParts {
        workerd,
        worker_js,
        wasm,
    })
}

/// A JSON string is a valid Cap'n Proto text literal for what is written
/// here (ASCII addresses and names).
fn capnp_text(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

/// The workerd config: the Worker on `listen` with routes naming one
/// origin (`origin`, the Tandem edge), tailed by the counter on `count`.
pub fn config(listen: SocketAddr, count: SocketAddr, origin: SocketAddr) -> String {
    let routes = serde_json::json!({"clusters": [{
        "name": ORIGIN_NAME, "role": "stable", "weight": 100,
        "origin": format!("http://{origin}"),
    }]})
    .to_string();
    format!(
        r#"# Written by tandem demo: the Cloudflare Worker in front of the Tandem edge.
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "worker", worker = .worker),
    (name = "count", worker = .count),
    # The edge is on loopback: workerd's default outbound allows public
    # addresses only.
    (name = "origins", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "http", address = "{listen}", http = (), service = "worker"),
    (name = "count", address = "{count}", http = (), service = "count"),
  ],
);
const worker :Workerd.Worker = (
  modules = [
    (name = "src/worker.js", esModule = embed "worker.js"),
    (name = "build/tandem_route.wasm", wasm = embed "tandem_route.wasm"),
  ],
  compatibilityDate = "2024-09-23",
  globalOutbound = "origins",
  tails = ["count"],
  bindings = [(name = "TANDEM_ROUTES", text = {routes})],
);
const count :Workerd.Worker = (
  modules = [(name = "count.js", esModule = embed "count.js")],
  compatibilityDate = "2024-09-23",
);
"#,
        routes = capnp_text(&routes)
    )
}

/// The running workerd.
#[derive(Debug)]
pub struct Worker {
    pub listen: SocketAddr,
    pub count: SocketAddr,
    pub origin: SocketAddr,
    proc: Supervised,
}

impl Worker {
    /// Copies the Worker's files into `dir`, writes the config and starts
    /// workerd; ready once both sockets answer.
    pub async fn start(parts: &WorkerParts, dir: &Path, origin: SocketAddr) -> Result<Worker> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::copy(&parts.worker_js, dir.join("worker.js"))
            .with_context(|| format!("copy {}", parts.worker_js.display()))?;
        std::fs::copy(&parts.wasm, dir.join("tandem_route.wasm"))
            .with_context(|| format!("copy {}", parts.wasm.display()))?;
        std::fs::write(dir.join("count.js"), COUNTER_JS)?;
        let listen = crate::world::free_addr();
        let count = crate::world::free_addr();
        let file = dir.join("workerd.capnp");
        std::fs::write(&file, config(listen, count, origin))?;
        let mut cmd = Command::new(&parts.workerd);
        cmd.arg("serve").arg(&file);
        let mut proc = Supervised::start_logged("workerd", cmd, &dir.join("workerd.log"))?;
        proc.wait_ready_async(Duration::from_secs(30), || async move {
            http_status(count, "/") == Some(200) && std::net::TcpStream::connect(listen).is_ok()
        })
        .await
        .context("workerd did not start (see workerd.log)")?;
        Ok(Worker {
            listen,
            count,
            origin,
            proc,
        })
    }

    /// The counts so far, from the tail worker.
    pub async fn counts(&self) -> Result<WorkerReport> {
        let http = tandem_control::Http::new(Duration::from_secs(2));
        let (status, body) = http
            .get(&format!("http://{}/", self.count))
            .await
            .context("ask workerd's counter")?;
        let body = String::from_utf8_lossy(&body);
        if !status.is_success() {
            anyhow::bail!("workerd's counter answered {status}: {body}");
        }
        let mut r: WorkerReport =
            serde_json::from_str(&body).with_context(|| format!("workerd's counter: {body}"))?;
        r.listen = self.listen.to_string();
        r.origin = self.origin.to_string();
        Ok(r)
    }

    /// The Worker's hop: `pairs` times, `GET /readyz` to the edge directly
    /// then through the Worker (one request at a time, one client), and
    /// the percentiles of each side. A pair with a failure on either side
    /// is left out; none answered is an error.
    pub async fn probe(&self, pairs: usize) -> Result<WorkerProbe> {
        let http = tandem_control::Http::new(Duration::from_secs(2));
        let direct_url = format!("http://{}/readyz", self.origin);
        let worker_url = format!("http://{}/readyz", self.listen);
        let mut direct = Vec::with_capacity(pairs);
        let mut via = Vec::with_capacity(pairs);
        let mut last_error = None;
        for _ in 0..pairs {
            let mut took = [0u64; 2];
            let mut ok = true;
            for (i, url) in [&direct_url, &worker_url].into_iter().enumerate() {
                let t = std::time::Instant::now();
                match http.get(url).await {
                    Ok((s, _)) if s.is_success() => took[i] = t.elapsed().as_micros() as u64,
                    Ok((s, _)) => {
                        last_error = Some(format!("{url}: {s}"));
                        ok = false;
                    }
                    Err(e) => {
                        last_error = Some(format!("{url}: {e}"));
                        ok = false;
                    }
                }
            }
            if ok {
                direct.push(took[0]);
                via.push(took[1]);
            }
        }
        if direct.is_empty() {
            anyhow::bail!(
                "no probe pair answered (last: {})",
                last_error.unwrap_or_default()
            );
        }
        direct.sort_unstable();
        via.sort_unstable();
        let q = |v: &[u64], q: f64| {
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            (v[i] as f64 / 10.0).round() / 100.0
        };
        let round = |x: f64| (x * 100.0).round() / 100.0;
        let (d50, d99, w50, w99) = (
            q(&direct, 0.5),
            q(&direct, 0.99),
            q(&via, 0.5),
            q(&via, 0.99),
        );
        Ok(WorkerProbe {
            pairs: direct.len() as u64,
            direct_p50_ms: d50,
            direct_p99_ms: d99,
            worker_p50_ms: w50,
            worker_p99_ms: w99,
            added_p50_ms: round(w50 - d50),
            added_p99_ms: round(w99 - d99),
        })
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }
}
