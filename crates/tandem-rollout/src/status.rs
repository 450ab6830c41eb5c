//! The controller's listener (`tandem rollout run --listen ADDR`) and its
//! client (`tandem rollout status|pause|resume|promote|abort`): `GET
//! /status` is the controller's view as JSON (plan release, phase, stage,
//! weights, hold left, the last gates per cluster, the last decisions),
//! `GET /` an HTML page that polls `/status` every second and shows the
//! phase and the weights, and `POST /pause`, `/resume`, `/promote`,
//! `/abort` hand an operator's command to the controller's loop, which
//! feeds it to `decide` as `Input::Command`. Bounded: at most
//! [`MAX_CONNECTIONS`] connections at once, request bodies are not read,
//! and the status keeps the last [`MAX_DECISIONS`] decisions.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::decide::{Command, Weights};
use crate::timeline::{Entry, GateValues};

/// The default controller address of the CLI's `status`, `pause`, ...
/// (`run --listen 127.0.0.1:8090` serves there).
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:8090";
/// Connections served at once; more wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 64;
/// Decisions the status keeps.
pub const MAX_DECISIONS: usize = 32;
/// Largest answer the client reads.
const MAX_ANSWER: usize = 1 << 20;

/// What `GET /status` answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub release: String,
    /// The controller's clock (ms since the Unix epoch) at this view.
    pub t_ms: u64,
    /// The current phase's name and index, and how many there are.
    pub phase: String,
    pub phase_index: usize,
    pub phases: usize,
    /// `new`, `baseline`, `prepare`, `apply`, `hold`, `paused`,
    /// `rolled_back`, `done`.
    pub stage: String,
    /// Why paused or rolled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_reason: Option<String>,
    /// The weights the controller set last.
    pub weights: Option<Weights>,
    /// What each edge carries (`null`: did not answer), in the plan's order.
    pub edges: Vec<EdgeStatus>,
    /// Time left in the current hold (or baseline), when in one.
    pub hold_left_ms: Option<u64>,
    /// The last observation's gates per cluster.
    pub gates: BTreeMap<String, GateValues>,
    /// The last decisions, oldest first.
    pub decisions: VecDeque<Entry>,
}

/// One edge in the status.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeStatus {
    pub url: String,
    pub weights: Option<Weights>,
}

/// What the loop and the listener share.
#[derive(Debug)]
pub struct Shared {
    pub status: Mutex<Status>,
    pub commands: mpsc::Sender<Command>,
}

impl Shared {
    /// The status as JSON.
    pub fn json(&self) -> String {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_string(&*s).expect("the status is plain data")
    }
}

/// The progress view `run` redraws on a terminal: phase, stage and hold
/// left; the weights the controller set and what every edge carries; each
/// cluster's gates with their values; the last decisions.
pub fn terminal_view(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "tandem rollout: {}", s.release);
    let left = s
        .hold_left_ms
        .map_or_else(String::new, |l| format!(", {:.1} s left", l as f64 / 1e3));
    let _ = writeln!(
        out,
        "phase {} ({} of {}), {}{left}{}",
        s.phase,
        s.phase_index + 1,
        s.phases,
        s.stage,
        s.stage_reason
            .as_ref()
            .map_or_else(String::new, |r| format!(": {r}"))
    );
    let names: Vec<&String> = s.weights.iter().flat_map(|w| w.keys()).collect();
    let _ = writeln!(
        out,
        "\nweights     {}",
        names.iter().map(|n| format!("{n:>8}")).collect::<String>()
    );
    let row = |label: &str, w: Option<&Weights>| {
        let cells: String = names
            .iter()
            .map(|n| match w {
                Some(w) => format!("{:>8}", w.get(*n).copied().unwrap_or(0)),
                None => format!("{:>8}", "-"),
            })
            .collect();
        format!("{label:<12}{cells}")
    };
    let _ = writeln!(out, "{}", row("controller", s.weights.as_ref()));
    for (i, e) in s.edges.iter().enumerate() {
        let label = format!("edge {}", i + 1);
        match &e.weights {
            Some(w) => {
                let _ = writeln!(out, "{}", row(&label, Some(w)));
            }
            None => {
                let _ = writeln!(out, "{label:<12}unreachable ({})", e.url);
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{:<10}{:>10}{:>12}{:>10}{:>8}  hash",
        "gates", "p99 ms", "errors", "requests", "lag"
    );
    for (n, g) in &s.gates {
        let _ = writeln!(
            out,
            "{n:<10}{:>10}{:>12}{:>10}{:>8}  {}",
            g.p99_ms.map_or("-".into(), |p| format!("{p:.2}")),
            g.error_ratio.map_or("-".into(), |e| format!("{e:.4}")),
            g.requests,
            g.lag,
            if g.hash_agrees {
                "agrees"
            } else {
                "not verified"
            }
        );
    }
    let _ = writeln!(out, "\ndecisions");
    for d in s
        .decisions
        .iter()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let _ = writeln!(out, "  {} {}: {}", d.phase, d.action, d.reason);
    }
    out
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>tandem rollout</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{text-align:left}#err{color:#b00}
</style></head><body>
<h1>tandem rollout: <span id="release">…</span></h1>
<p>phase <b id="phase">…</b> (<span id="index"></span>), stage <b id="stage">…</b>
<span id="reason"></span>; hold left <span id="hold">-</span></p>
<h2>weights</h2><table id="weights"></table>
<h2>gates</h2><table id="gates"></table>
<h2>decisions</h2><ol id="decisions"></ol>
<p id="err"></p>
<script>
function cell(tag, text){const e=document.createElement(tag);e.textContent=text;return e;}
function row(cells, tag){const r=document.createElement('tr');cells.forEach(c=>r.appendChild(cell(tag||'td',c)));return r;}
async function poll(){
  try{
    const r=await fetch('/status',{cache:'no-store'});
    const s=await r.json();
    document.getElementById('release').textContent=s.release;
    document.getElementById('phase').textContent=s.phase;
    document.getElementById('index').textContent=(s.phase_index+1)+' of '+s.phases;
    document.getElementById('stage').textContent=s.stage;
    document.getElementById('reason').textContent=s.stage_reason?('('+s.stage_reason+')'):'';
    document.getElementById('hold').textContent=s.hold_left_ms==null?'-':(s.hold_left_ms/1000).toFixed(1)+' s';
    const w=document.getElementById('weights');w.replaceChildren();
    const names=Object.keys(s.weights||{});
    w.appendChild(row(['cluster'].concat(names),'th'));
    w.appendChild(row(['controller'].concat(names.map(n=>String(s.weights[n])))));
    s.edges.forEach(e=>w.appendChild(row([e.url].concat(names.map(n=>e.weights?String(e.weights[n]):'unreachable')))));
    const g=document.getElementById('gates');g.replaceChildren();
    g.appendChild(row(['cluster','p99 ms','error ratio','requests','lag','hash agrees'],'th'));
    Object.keys(s.gates).forEach(n=>{const v=s.gates[n];
      g.appendChild(row([n,v.p99_ms==null?'-':v.p99_ms.toFixed(2),v.error_ratio==null?'-':String(v.error_ratio),String(v.requests),String(v.lag),String(v.hash_agrees)]));});
    const d=document.getElementById('decisions');d.replaceChildren();
    s.decisions.forEach(x=>d.appendChild(cell('li',x.phase+': '+x.action+': '+x.reason)));
    document.getElementById('err').textContent='';
  }catch(e){document.getElementById('err').textContent='controller unreachable: '+e;}
}
poll();setInterval(poll,1000);
</script></body></html>
"#;

fn answer(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, ctype)
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("a static response")
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    answer(
        status,
        "application/json",
        serde_json::json!({ "error": msg }).to_string(),
    )
}

/// Answers one request.
pub async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let command = match path {
        "/pause" => Some(Command::Pause),
        "/resume" => Some(Command::Resume),
        "/promote" => Some(Command::Promote),
        "/abort" => Some(Command::Abort),
        _ => None,
    };
    match (req.method(), path, command) {
        (&Method::GET, "/status", _) => answer(StatusCode::OK, "application/json", shared.json()),
        (&Method::GET, "/", _) => answer(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
        (&Method::POST, _, Some(c)) => match shared.commands.try_send(c) {
            Ok(()) => answer(
                StatusCode::ACCEPTED,
                "application/json",
                serde_json::json!({ "accepted": path.trim_start_matches('/') }).to_string(),
            ),
            Err(_) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "command: the controller has commands queued or has stopped; try again",
            ),
        },
        (_, "/status" | "/", _) | (_, _, Some(_)) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method: not allowed here")
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "path: not found (GET /, GET /status, POST /pause|/resume|/promote|/abort)",
        ),
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors and the like: wait, then accept again.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            // A connection idle or slow past a minute is closed.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            drop(permit);
        });
    }
}

/// Why a request to a controller failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("controller url {url}: {why}")]
    Url { url: String, why: String },
    #[error("controller {url}: unreachable: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("controller {url}: {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
}

/// `GET /status` (`command: None`) or `POST /<command>` to the controller
/// at `base` (`http://host:port`); the answer's body. Bounded by
/// `timeout`.
pub async fn request(
    base: &str,
    command: Option<Command>,
    timeout: Duration,
) -> Result<String, ClientError> {
    let base = base.trim_end_matches('/');
    let (method, path) = match command {
        None => (Method::GET, "/status"),
        Some(Command::Pause) => (Method::POST, "/pause"),
        Some(Command::Resume) => (Method::POST, "/resume"),
        Some(Command::Promote) => (Method::POST, "/promote"),
        Some(Command::Abort) => (Method::POST, "/abort"),
    };
    let url = format!("{base}{path}");
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClientError::Url {
            url: base.to_owned(),
            why: e.to_string(),
        })?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(ClientError::Url {
            url: base.to_owned(),
            why: "must be http://host:port".into(),
        });
    }
    let unreachable = |cause: String| ClientError::Unreachable {
        url: url.clone(),
        cause,
    };
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .map_err(|e| ClientError::Url {
            url: url.clone(),
            why: e.to_string(),
        })?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok::<_, ClientError>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, body) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| unreachable(format!("no answer within {} ms", timeout.as_millis())))??;
    if status.is_success() {
        Ok(body)
    } else {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        Err(ClientError::Refused {
            url,
            status: status.as_u16(),
            message,
        })
    }
}
