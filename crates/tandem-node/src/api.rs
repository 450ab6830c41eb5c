//! The HTTP/JSON API of `contracts/http-api.md`: routing, decoding of
//! requests into commands, the consistency token, and the answers. Every
//! bad input is a 4xx with `{"error":"<field>: <what>"}`; overload is 429
//! or 503 with `retry-after`; nothing here can panic a connection away (the
//! server catches a panicking handler and answers 500).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tandem_codec::json::{self, Val};
use tandem_codec::Op;
use tandem_core::{Command, OrderStatus, Side};

use crate::answers::{After, Before, Outcome};
use crate::auth;
use crate::config::AuthMode;
use crate::node::Node;
use crate::partition::SubmitError;
use crate::{BoxBody, BoxError};

/// An answer before headers common to all answers are added.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// Partition whose applied position goes in `x-tandem-seq`.
    pub partition: Option<u32>,
    /// Seq the answer reflects (an order's, a book read's): the token is
    /// never below it, even while the applied position catches up with an
    /// answer built inside the same step.
    pub covers: u64,
    pub retry_after: Option<u32>,
    pub content_type: &'static str,
    /// The `allow` header of a 405: the methods the path takes.
    pub allow: Option<String>,
}

impl Answer {
    fn json(status: StatusCode, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            body: body.into(),
            partition: None,
            covers: 0,
            retry_after: None,
            content_type: "application/json",
            allow: None,
        }
    }

    /// `{"error": msg}` with `status`.
    pub fn error(status: StatusCode, msg: &str) -> Answer {
        let mut b = Vec::with_capacity(msg.len() + 12);
        b.extend_from_slice(b"{\"error\":");
        json::write_str(&mut b, msg.as_bytes());
        b.push(b'}');
        Answer::json(status, b)
    }

    fn bad(msg: &str) -> Answer {
        Answer::error(StatusCode::BAD_REQUEST, msg)
    }

    fn unavailable(msg: &str) -> Answer {
        let mut a = Answer::error(StatusCode::SERVICE_UNAVAILABLE, msg);
        a.retry_after = Some(1);
        a
    }

    fn on(mut self, partition: u32) -> Answer {
        self.partition = Some(partition);
        self
    }

    fn covering(mut self, seq: u64) -> Answer {
        self.covers = seq;
        self
    }
}

/// One route of the API: its method, its path template (`{name}` stands
/// for one path segment) and its name as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub name: &'static str,
}

const fn route(method: &'static str, path: &'static str, name: &'static str) -> Route {
    Route { method, path, name }
}

/// Every route the node answers over HTTP, the one list [`route_of`]
/// reads; `openapi.json` describes exactly these (a test keeps the two
/// equal). gRPC (`content-type: application/grpc`) is routed before this
/// table and is described by `proto/tandem/v1/tandem.proto`.
pub const ROUTES: &[Route] = &[
    route("POST", "/v1/orders", "place"),
    route("DELETE", "/v1/orders/{market}/{id}", "cancel"),
    route("PATCH", "/v1/orders/{market}/{id}", "amend"),
    route("GET", "/v1/orders/{market}/{id}", "get_order"),
    route("GET", "/v1/markets/{market}/book", "book"),
    route("GET", "/v1/markets/{market}/stream", "stream"),
    route("GET", "/v1/status", "status"),
    route("GET", "/v1/chain/{partition}", "chain"),
    route("GET", "/healthz", "healthz"),
    route("GET", "/readyz", "readyz"),
    route("GET", "/metrics", "metrics"),
    route("GET", "/openapi.json", "openapi"),
];

/// The OpenAPI 3.1 description of [`ROUTES`], served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Whether `path` fits the template: as many segments, literal ones equal.
fn fits(template: &str, path: &str) -> bool {
    let mut t = template.trim_start_matches('/').split('/');
    let mut p = path.trim_start_matches('/').split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) if ts.starts_with('{') || ts == ps => {}
            _ => return false,
        }
    }
}

/// The methods of the [`ROUTES`] entries `path` fits, comma-separated
/// (the `allow` header of a 405).
pub fn allowed_methods(path: &str) -> String {
    let mut methods: Vec<&str> = Vec::new();
    for r in ROUTES.iter().filter(|r| fits(r.path, path)) {
        if !methods.contains(&r.method) {
            methods.push(r.method);
        }
    }
    methods.join(", ")
}

/// Route names, as metrics label them: the [`ROUTES`] entry of this method
/// and path, `method_not_allowed` for a path of the table with another
/// method, else `not_found`.
pub fn route_of(method: &Method, path: &str) -> &'static str {
    let mut path_known = false;
    for r in ROUTES {
        if fits(r.path, path) {
            if r.method == method.as_str() {
                return r.name;
            }
            path_known = true;
        }
    }
    if path_known {
        "method_not_allowed"
    } else {
        "not_found"
    }
}

/// Decodes `%XX` escapes of one path segment; `None` if malformed or not
/// UTF-8 (the one decoder, `tandem_conn::percent`).
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    tandem_conn::percent::decode_utf8(s).ok()
}

/// The value of `key` in a query string, percent-decoded (`+` is a space).
fn query_param(query: Option<&str>, key: &str) -> Result<Option<String>, ()> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            let v = v.replace('+', " ");
            return percent_decode(&v).map(|v| Some(v.into_owned())).ok_or(());
        }
    }
    Ok(None)
}

/// One entry of a consistency token: `P:N@L` (partition, seq, the log's
/// short id) as the node gives it, or the older `P:N`, whose log is not
/// checked. `None` when it is neither.
fn parse_token(v: &str) -> Option<(u32, u64, Option<&str>)> {
    let v = v.trim();
    let (pn, log) = match v.split_once('@') {
        Some((pn, log)) => (pn, Some(log)),
        None => (v, None),
    };
    let (p, n) = pn.split_once(':')?;
    if log.is_some_and(|l| l.len() != 16 || !l.bytes().all(|b| b.is_ascii_hexdigit())) {
        return None;
    }
    Some((p.parse().ok()?, n.parse().ok()?, log))
}

/// Reads the whole body, at most `max` bytes.
async fn read_body<B>(body: B, max: usize) -> Result<Bytes, Answer>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body: larger than {max} bytes"),
        )),
        Err(e) => Err(Answer::bad(&format!("body: could not be read: {e}"))),
    }
}

/// Answers one API request (everything but WebSocket upgrades and gRPC).
pub async fn handle<B>(node: &Arc<Node>, req: Request<B>) -> Answer
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => Answer::json(StatusCode::OK, &b"{\"status\":\"ok\"}"[..]),
        (&Method::GET, ["readyz"]) => readyz(node),
        (&Method::GET, ["metrics"]) => Answer {
            content_type: "text/plain; version=0.0.4",
            ..Answer::json(StatusCode::OK, node.metrics.render())
        },
        (&Method::GET, ["openapi.json"]) => Answer::json(StatusCode::OK, OPENAPI_JSON),
        (&Method::GET, ["v1", "status"]) => status(node).await,
        (&Method::GET, ["v1", "chain", p]) => chain(node, p, query.as_deref()).await,
        (&Method::POST, ["v1", "orders"]) => {
            let (parts, body) = req.into_parts();
            match read_body(body, node.cfg.limits.max_body_bytes).await {
                Ok(body) => place(node, &parts.headers, &body).await,
                Err(a) => a,
            }
        }
        (&Method::DELETE, ["v1", "orders", m, id]) => {
            let (Some(m), Some(id)) = (percent_decode(m), percent_decode(id)) else {
                return Answer::bad("path: malformed percent-encoding");
            };
            let account = match query_param(query.as_deref(), "account") {
                Ok(Some(a)) => a,
                Ok(None) => return Answer::bad("account: missing query parameter"),
                Err(()) => return Answer::bad("account: malformed percent-encoding"),
            };
            let mut f: json::Fields = Default::default();
            f[1] = Some(Val::Str(m));
            f[2] = Some(Val::Str(id));
            f[3] = Some(Val::Str(Cow::Owned(account)));
            let cmd = tandem_codec::from_fields(&f, Some(Op::Cancel));
            order_entry(node, req.headers(), cmd).await
        }
        (&Method::PATCH, ["v1", "orders", m, id]) => {
            let (Some(m), Some(id)) = (percent_decode(m), percent_decode(id)) else {
                return Answer::bad("path: malformed percent-encoding");
            };
            let (m, id) = (m.into_owned(), id.into_owned());
            let headers = req.headers().clone();
            let body = match read_body(req.into_body(), node.cfg.limits.max_body_bytes).await {
                Ok(b) => b,
                Err(a) => return a,
            };
            let Ok(mut f) = json::read_object(&body) else {
                return Answer::bad("body: not a JSON object");
            };
            for (k, name) in [(0, "op"), (1, "market"), (2, "id")] {
                if f[k].is_some() {
                    return Answer::bad(&format!(
                        "{name}: not allowed in the body of PATCH /v1/orders/{{market}}/{{id}}"
                    ));
                }
            }
            f[1] = Some(Val::Str(Cow::Borrowed(&m)));
            f[2] = Some(Val::Str(Cow::Borrowed(&id)));
            let cmd = tandem_codec::from_fields(&f, Some(Op::Amend));
            order_entry(node, &headers, cmd).await
        }
        (&Method::GET, ["v1", "orders", m, id]) => {
            let (Some(m), Some(id)) = (percent_decode(m), percent_decode(id)) else {
                return Answer::bad("path: malformed percent-encoding");
            };
            let account = match query_param(query.as_deref(), "account") {
                // Key accounts are stored in lowercase hex on a signed node.
                Ok(Some(a)) if !a.is_empty() && node.auth_mode == AuthMode::Signed => {
                    auth::normalise_account(&a).unwrap_or(a)
                }
                Ok(Some(a)) if !a.is_empty() => a,
                Ok(_) => return Answer::bad("account: missing query parameter"),
                Err(()) => return Answer::bad("account: malformed percent-encoding"),
            };
            get_order(node, req.headers(), &m, &id, &account).await
        }
        (&Method::GET, ["v1", "markets", m, "book"]) => {
            let Some(m) = percent_decode(m) else {
                return Answer::bad("path: malformed percent-encoding");
            };
            let depth = match query_param(query.as_deref(), "depth") {
                Ok(None) => 50,
                Ok(Some(d)) => match d.parse::<usize>() {
                    Ok(d) if d >= 1 && d <= node.cfg.limits.max_depth => d,
                    _ => {
                        return Answer::bad(&format!(
                            "depth: must be an integer from 1 to {}",
                            node.cfg.limits.max_depth
                        ))
                    }
                },
                Err(()) => return Answer::bad("depth: malformed percent-encoding"),
            };
            book(node, req.headers(), &m, depth).await
        }
        _ => match route_of(&method, &path) {
            "method_not_allowed" => Answer {
                allow: Some(allowed_methods(&path)),
                ..Answer::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("method: {method} is not allowed on {path}"),
                )
            },
            _ => Answer::error(StatusCode::NOT_FOUND, &format!("path: no route {path}")),
        },
    }
}

pub fn readyz(node: &Node) -> Answer {
    if node.is_draining() {
        return Answer::unavailable("draining");
    }
    if let Some(t) = node.stopped_thread() {
        return Answer::unavailable(&format!(
            "thread {t} has stopped: this node cannot serve orders (see tandem_thread_up)"
        ));
    }
    if !node.is_caught_up() {
        return Answer::unavailable("catching up");
    }
    Answer::json(StatusCode::OK, &b"{\"status\":\"ready\"}"[..])
}

pub async fn status(node: &Node) -> Answer {
    let mut parts = Vec::new();
    for p in &node.partitions {
        let hash = p
            .read(node.cfg.wait(), |e| {
                (e.seq(), tandem_core::chain_hex(e.chain()))
            })
            .await;
        let (seq, hash) = hash.unwrap_or((p.applied_seq(), String::new()));
        parts.push(serde_json::json!({
            "id": p.id,
            "log": p.identity(),
            "log_id": p.log_id(),
            "applied_seq": seq,
            "output_hash": hash,
            "caught_up": p.is_caught_up(),
        }));
    }
    let c = &node.cfg;
    let v = serde_json::json!({
        "node": c.node,
        "zone": c.zone,
        "cluster": c.cluster,
        "version": c.version,
        "role": c.role.as_str(),
        "ready": node.is_caught_up() && !node.is_draining() && node.stopped_thread().is_none(),
        "draining": node.is_draining(),
        "log_id": node.log_id(),
        "partitions": parts,
    });
    Answer::json(StatusCode::OK, v.to_string())
}

/// Most checkpoints one `GET /v1/chain/{partition}` returns (`limit`), and
/// how many without `limit`.
pub const CHAIN_LIMIT_MAX: usize = 4096;
pub const CHAIN_LIMIT_DEFAULT: usize = 1000;

/// A `u64` query parameter: absent, a decimal integer, or a 400 naming it.
fn query_u64(query: Option<&str>, key: &str) -> Result<Option<u64>, Answer> {
    match query_param(query, key) {
        Ok(None) => Ok(None),
        Ok(Some(v)) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Answer::bad(&format!("{key}: must be a non-negative integer, got {v:?}"))),
        Err(()) => Err(Answer::bad(&format!("{key}: malformed percent-encoding"))),
    }
}

/// `GET /v1/chain/{partition}`: the partition's applied seq and output
/// hash and its chain checkpoints (`checkpoints` module), oldest first:
/// the newest `limit` (default 1000, at most 4096), or the oldest from
/// `from`. With `seq=N`: that checkpoint, or 404 naming `seq`.
pub async fn chain(node: &Node, p: &str, query: Option<&str>) -> Answer {
    let Some(p) = percent_decode(p) else {
        return Answer::bad("partition: malformed percent-encoding");
    };
    let Ok(id) = p.parse::<u32>() else {
        return Answer::bad(&format!("partition: must be a partition number, got {p:?}"));
    };
    let Some(part) = node.partitions.get(id as usize) else {
        return Answer::error(
            StatusCode::NOT_FOUND,
            &format!(
                "partition: {id} does not exist (this node has {})",
                node.partitions.len()
            ),
        );
    };
    let (from, limit, seq) = match (
        query_u64(query, "from"),
        query_u64(query, "limit"),
        query_u64(query, "seq"),
    ) {
        (Ok(f), Ok(l), Ok(s)) => (f, l, s),
        (Err(a), _, _) | (_, Err(a), _) | (_, _, Err(a)) => return a,
    };
    if seq.is_some() && (from.is_some() || limit.is_some()) {
        return Answer::bad("seq: cannot be combined with from or limit");
    }
    let limit = match limit {
        None => CHAIN_LIMIT_DEFAULT,
        Some(l) if l >= 1 && l <= CHAIN_LIMIT_MAX as u64 => l as usize,
        Some(_) => {
            return Answer::bad(&format!(
                "limit: must be an integer from 1 to {CHAIN_LIMIT_MAX}"
            ))
        }
    };
    let Some((applied, hash)) = part.read(node.cfg.wait(), |e| (e.seq(), e.chain())).await else {
        return Answer::unavailable("catching up: the replica is restoring; retry shortly").on(id);
    };
    let every = part.checkpoint_every();
    let log_id = part.log_id();
    if let Some(seq) = seq {
        return match part.checkpoint(seq).filter(|c| c.seq <= applied) {
            Some(c) => Answer::json(
                StatusCode::OK,
                serde_json::json!({
                    "partition": id,
                    "log_id": log_id,
                    "checkpoint_every": every,
                    "seq": c.seq,
                    "output_hash": tandem_core::chain_hex(c.chain),
                })
                .to_string(),
            ),
            None => {
                let (_, bounds) = part.checkpoints(None, applied, 1);
                let held = match bounds {
                    Some((a, b)) => format!("it keeps checkpoints {a}..={b}"),
                    None => "it keeps none yet".to_string(),
                };
                let why = if seq > applied {
                    format!("this node has applied only up to {applied}")
                } else {
                    format!(
                        "not a checkpoint this node keeps (checkpoints are the first seq at or \
                         after each multiple of {every}; {held})"
                    )
                };
                Answer::error(StatusCode::NOT_FOUND, &format!("seq: {seq}: {why}"))
            }
        }
        .on(id);
    }
    let (list, _) = part.checkpoints(from, applied, limit);
    let checkpoints: Vec<serde_json::Value> = list
        .iter()
        .map(|c| serde_json::json!({"seq": c.seq, "output_hash": tandem_core::chain_hex(c.chain)}))
        .collect();
    Answer::json(
        StatusCode::OK,
        serde_json::json!({
            "partition": id,
            "log_id": log_id,
            "applied_seq": applied,
            "output_hash": tandem_core::chain_hex(hash),
            "checkpoint_every": every,
            "checkpoints": checkpoints,
        })
        .to_string(),
    )
    .on(id)
}

/// Waits for `x-tandem-min-seq` if the request carries one: a token
/// `P:N@L` (partition, seq, short id of the partition's log), or several
/// separated by commas (as a node with several partitions gives on answers
/// that touch none in particular). An entry of another log is refused
/// (400); an entry without `@L` (the older form) is taken as this log's,
/// unchecked. `Err` is the answer to give instead.
async fn min_seq(node: &Node, headers: &HeaderMap) -> Result<(), Answer> {
    let Some(v) = headers.get("x-tandem-min-seq") else {
        return Ok(());
    };
    let bad = || {
        Answer::bad(
            "x-tandem-min-seq: expected <partition>:<seq>@<log>[,...] as given in x-tandem-seq",
        )
    };
    let Ok(text) = v.to_str() else {
        return Err(bad());
    };
    let mut tokens = Vec::new();
    for t in text.split(',') {
        let Some(tok) = parse_token(t) else {
            return Err(bad());
        };
        tokens.push(tok);
    }
    if tokens.len() > node.partitions.len().max(1) * 4 {
        return Err(bad());
    }
    // Every entry is checked before any is waited for: a token of another
    // log is refused at once, never waited on (its seqs mean nothing here).
    for &(p, n, log) in &tokens {
        let Some(part) = node.partitions.get(p as usize) else {
            return Err(Answer::bad(&format!(
                "x-tandem-min-seq: partition {p} does not exist (this node has {})",
                node.partitions.len()
            )));
        };
        if let Some(log) = log {
            if !log.eq_ignore_ascii_case(part.log_id()) {
                return Err(Answer::bad(&format!(
                    "x-tandem-min-seq: {p}:{n}@{log} is a position in another log than this \
                     node's ({p}:…@{}): the two are different exchanges, so the token cannot be \
                     met here",
                    part.log_id()
                )));
            }
        }
    }
    for (p, n, _) in tokens {
        let part = &node.partitions[p as usize];
        if !part.wait_applied(n, node.cfg.wait()).await {
            return Err(Answer::unavailable(&format!(
                "x-tandem-min-seq: this node's replica is at {p}:{}, not yet at {p}:{n}",
                part.applied_seq()
            ))
            .on(p));
        }
    }
    Ok(())
}

/// Common gate of order entry and reads: caught up, token satisfied.
/// A draining node still serves what it is sent: it drains by failing
/// `/readyz` during the grace and then closing its listener (`server`),
/// so that balancers move away without any request being refused.
async fn gate(node: &Node, headers: &HeaderMap) -> Result<(), Answer> {
    if !node.is_caught_up() {
        return Err(Answer::unavailable(
            "catching up: retry shortly or on another node",
        ));
    }
    min_seq(node, headers).await
}

fn invalid_answer(cmd: &Command) -> Option<Answer> {
    match cmd {
        Command::Invalid(i) => Some(Answer::bad(&match i.field {
            "body" => "body: not a JSON object".to_string(),
            "op" => "op: must be absent or match the route".to_string(),
            f => format!("{f}: missing or invalid"),
        })),
        _ => None,
    }
}

pub async fn place(node: &Arc<Node>, headers: &HeaderMap, body: &[u8]) -> Answer {
    let cmd = tandem_codec::decode_with_op(body, Op::Place);
    order_entry(node, headers, cmd).await
}

/// `{"partition":P,"seq":N,"events":[...]}`.
fn outcome_answer(partition: u32, o: &Outcome) -> Answer {
    let mut b = Vec::with_capacity(o.events.len() + 48);
    b.extend_from_slice(b"{\"partition\":");
    b.extend_from_slice(partition.to_string().as_bytes());
    b.extend_from_slice(b",\"seq\":");
    b.extend_from_slice(o.seq.to_string().as_bytes());
    b.extend_from_slice(b",\"events\":");
    b.extend_from_slice(&o.events);
    b.push(b'}');
    Answer::json(StatusCode::OK, b)
        .on(partition)
        .covering(o.seq)
}

/// The credentials of an order-entry request, verified (`auth` module):
/// `None` for an unsigned request where the node takes those. The account
/// of a signed command is rewritten in lowercase hex first. The wall clock
/// is read here, at admission, and goes nowhere but the expiry check.
/// Runs on the request's own task (the runtime spreads requests over its
/// workers), never on the appender thread; Ed25519 signatures of
/// concurrent requests are verified in batches (`auth::batch`).
async fn authenticate(
    node: &Node,
    headers: &HeaderMap,
    cmd: &mut Command,
) -> Result<Option<auth::Credentials>, Answer> {
    let refuse = |e: auth::AuthError| {
        node.metrics.auth_refused(e.status.as_u16());
        Answer::error(e.status, &e.to_string())
    };
    let Some(creds) = auth::credentials_from_headers(headers).map_err(refuse)? else {
        if node.auth_mode == AuthMode::Signed {
            node.metrics.auth_refused(401);
            return Err(Answer::error(
                StatusCode::UNAUTHORIZED,
                "x-tandem-signature: missing: this node takes only signed orders (auth = \"signed\"; \
                 see docs/signing.md)",
            ));
        }
        return Ok(None);
    };
    auth::normalise_command(cmd);
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    node.auth
        .check_expiry(creds.expiry, now_secs)
        .map_err(refuse)?;
    let scheme = match node.auth.prepare(cmd, &creds).map_err(refuse)? {
        auth::Checked::Done(scheme) => scheme,
        auth::Checked::Ed25519(check) => {
            node.ed25519.verify(*check).await.map_err(refuse)?;
            auth::Scheme::Ed25519
        }
    };
    node.metrics.signature_verified(scheme);
    Ok(Some(creds))
}

/// Appends a decoded place, cancel or amend and answers with its events.
/// A signed one is verified before anything else is looked at, and its
/// log record carries the signature (`auth::append_credentials`); the
/// idempotency windows compare the command's canonical bytes without it,
/// so a retry signed again (another expiry) is still a retry.
pub async fn order_entry(node: &Arc<Node>, headers: &HeaderMap, cmd: Command) -> Answer {
    match order_entry_outcome(node, headers, cmd).await {
        Ok((p, o)) => outcome_answer(p, &o),
        Err(a) => a,
    }
}

/// `order_entry` without the JSON answer: the partition and outcome of a
/// sequenced command, or the error answer (the gRPC `Submit` stream
/// builds its replies from the outcome).
pub async fn order_entry_outcome(
    node: &Arc<Node>,
    headers: &HeaderMap,
    mut cmd: Command,
) -> Result<(u32, Arc<Outcome>), Answer> {
    if let Some(a) = invalid_answer(&cmd) {
        return Err(a);
    }
    let creds = authenticate(node, headers, &mut cmd).await?;
    gate(node, headers).await?;
    let (market, id, account) = match &cmd {
        Command::Place(p) => (&p.market, &p.id, &p.account),
        Command::Cancel(c) => (&c.market, &c.id, &c.account),
        Command::Amend(a) => (&a.market, &a.id, &a.account),
        Command::Invalid(_) => unreachable!("answered above"),
    };
    let max_sym = tandem_core::Config::default().max_symbol_bytes;
    for (name, v) in [("market", market), ("id", id), ("account", account)] {
        if v.len() > max_sym {
            return Err(Answer::bad(&format!("{name}: longer than {max_sym} bytes")));
        }
    }
    let p = node.partition_of(market.as_bytes());
    if let Some(wait) = node.rate_limit(account.as_bytes()) {
        let mut a = Answer::error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "account: over {} order-entry requests per second",
                node.cfg.limits.account_rate
            ),
        );
        a.retry_after = Some(wait);
        return Err(a);
    }
    let mut payload = Vec::with_capacity(192);
    tandem_codec::write_command(&cmd, &mut payload);
    let part = &node.partitions[p as usize];
    // An amend's base (`Amend::base`): the order's count of based amends
    // as this replica has applied them, read *before* the windows are
    // asked. Then a copy of an amend that took effect is either found in
    // the window below, or carries a base from before it and is refused
    // (`stale`) by every replica: never applied twice. The base is the
    // node's, outside the signed fields and the canonical bytes.
    if let (Command::Amend(a), true) = (&mut cmd, node.cfg.log.retry_safe_amends) {
        let read = part.read(node.cfg.wait(), |e| {
            e.order_changes(a.market.as_bytes(), a.id.as_bytes(), a.account.as_bytes())
        });
        match read.await {
            Some(base) => a.base = Some(base),
            None => {
                return Err(Answer::unavailable(
                    "replica busy: could not read the order to amend; retry",
                )
                .on(p))
            }
        }
    }
    // A retry of an order (or of a cancel or amend) this replica has
    // already applied needs no append: the original answer. A cancel or
    // amend is a retry when its canonical bytes (account, market, id,
    // body) equal those of the latest change that took effect on the
    // order; a repeat appended anyway is answered the same way by the
    // replica (`answers` module doc).
    match part.before(&cmd, &payload) {
        Before::Answer(o) => return Ok((p, o)),
        Before::Conflict => return Err(conflict(p)),
        Before::Append => {}
    }
    let based = matches!(&cmd, Command::Amend(a) if a.base.is_some());
    let payload = Bytes::from(payload);
    let record = match (&creds, based) {
        // An unsigned command's record is its canonical bytes: shared.
        (None, false) => payload.clone(),
        _ => {
            let mut r = Vec::with_capacity(payload.len() + 32);
            tandem_codec::write_record(&cmd, &mut r);
            if let Some(c) = &creds {
                auth::append_credentials(&mut r, c);
            }
            Bytes::from(r)
        }
    };
    // The appender applies the command as decoded here: the record's
    // command part is `payload`, written from it just above.
    match part
        .submit_decoded(record, Some(cmd.clone()), node.cfg.wait())
        .await
    {
        Ok(o) => match part.after(&cmd, &payload, o) {
            After::Answer(o) => Ok((p, o)),
            After::Conflict => Err(conflict(p)),
        },
        Err(SubmitError::Overloaded) => Err(Answer::unavailable(
            "overloaded: too many commands waiting for the order log",
        )
        .on(p)),
        Err(e @ SubmitError::NotApplied(_)) => Err(Answer::unavailable(&format!(
            "{e}: the command is in the log; retry (it is idempotent) or read with x-tandem-min-seq"
        ))
        .on(p)),
        Err(e) => Err(Answer::unavailable(&e.to_string()).on(p)),
    }
}

fn conflict(p: u32) -> Answer {
    Answer::error(
        StatusCode::CONFLICT,
        "id: already taken in this market by another order",
    )
    .on(p)
}

pub async fn get_order(
    node: &Node,
    headers: &HeaderMap,
    m: &str,
    id: &str,
    account: &str,
) -> Answer {
    if let Err(a) = gate(node, headers).await {
        return a;
    }
    let p = node.partition_of(m.as_bytes());
    let found = node.partitions[p as usize]
        .read(node.cfg.wait(), |e| {
            e.order(m.as_bytes(), id.as_bytes(), account.as_bytes())
        })
        .await;
    let info = match found {
        None => return Answer::unavailable("replica busy: retry").on(p),
        Some(None) => {
            return Answer::error(StatusCode::NOT_FOUND, "id: no such order of this account").on(p)
        }
        Some(Some(info)) => info,
    };
    let mut b = Vec::with_capacity(256);
    let field = |b: &mut Vec<u8>, k: &str, v: &[u8]| {
        b.extend_from_slice(b"\"");
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(b"\":");
        json::write_str(b, v);
    };
    let units = |u: u64| {
        let mut s = Vec::new();
        tandem_core::write_units(u, &mut s);
        s
    };
    b.push(b'{');
    field(&mut b, "market", m.as_bytes());
    b.push(b',');
    field(&mut b, "id", id.as_bytes());
    b.push(b',');
    field(&mut b, "account", account.as_bytes());
    b.push(b',');
    field(
        &mut b,
        "side",
        match info.side {
            Side::Buy => b"buy",
            Side::Sell => b"sell",
        },
    );
    b.push(b',');
    match info.price {
        Some(pr) => {
            field(&mut b, "type", b"limit");
            b.push(b',');
            field(&mut b, "price", &units(pr.units()));
        }
        None => field(&mut b, "type", b"market"),
    }
    b.push(b',');
    field(&mut b, "qty", &units(info.qty.units()));
    b.push(b',');
    field(&mut b, "remaining", &units(info.remaining));
    b.push(b',');
    field(
        &mut b,
        "status",
        match info.status {
            OrderStatus::Open => b"open",
            OrderStatus::Filled => b"filled",
            OrderStatus::Cancelled => b"cancelled",
        },
    );
    b.extend_from_slice(b",\"post_only\":");
    b.extend_from_slice(if info.post_only { b"true" } else { b"false" });
    b.push(b'}');
    Answer::json(StatusCode::OK, b).on(p)
}

pub async fn book(node: &Node, headers: &HeaderMap, m: &str, depth: usize) -> Answer {
    if let Err(a) = gate(node, headers).await {
        return a;
    }
    let p = node.partition_of(m.as_bytes());
    let levels = node.partitions[p as usize]
        .read(node.cfg.wait(), |e| {
            let seq = e.seq();
            match e.find_market(m.as_bytes()) {
                None => (seq, Vec::new(), Vec::new()),
                Some(ix) => (
                    seq,
                    e.depth(ix, Side::Buy, depth),
                    e.depth(ix, Side::Sell, depth),
                ),
            }
        })
        .await;
    let Some((seq, bids, asks)) = levels else {
        return Answer::unavailable("replica busy: retry").on(p);
    };
    let mut b = Vec::with_capacity(64 + 48 * (bids.len() + asks.len()));
    b.extend_from_slice(format!("{{\"partition\":{p},\"seq\":{seq}").as_bytes());
    for (k, side) in [("bids", bids), ("asks", asks)] {
        b.extend_from_slice(format!(",\"{k}\":[").as_bytes());
        for (i, (price, qty)) in side.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(b"[\"");
            tandem_core::write_units(price.units(), &mut b);
            b.extend_from_slice(b"\",\"");
            tandem_core::write_units(*qty, &mut b);
            b.extend_from_slice(b"\"]");
        }
        b.push(b']');
    }
    b.push(b'}');
    Answer::json(StatusCode::OK, b).on(p).covering(seq)
}

/// The `x-tandem-seq` value: `P:N@L` for the partition an answer touched
/// (`L`: 16 hex digits naming the partition's log, see
/// `partition::short_log_id`); for answers that touch none, every
/// partition's entry, comma-separated. Opaque to clients: they send it
/// back as `x-tandem-min-seq`.
pub fn seq_token(node: &Node, partition: Option<u32>, covers: u64) -> HeaderValue {
    let text = match partition {
        Some(p) => {
            let part = &node.partitions[p as usize];
            format!("{p}:{}@{}", part.applied_seq().max(covers), part.log_id())
        }
        None => node
            .partitions
            .iter()
            .map(|p| format!("{}:{}@{}", p.id, p.applied_seq(), p.log_id()))
            .collect::<Vec<_>>()
            .join(","),
    };
    HeaderValue::from_str(&text).expect("digits, hex digits, colons, @ and commas")
}

/// The headers every node answer carries, whatever the transport (HTTP
/// answers, gRPC metadata, the connection-limit refusal): `x-dex-version`
/// (role), `x-tandem-version`, `x-tandem-log` (short id of the node's log:
/// nodes that disagree on it are different exchanges) and `x-tandem-seq`.
pub fn common_headers(node: &Node, partition: Option<u32>, covers: u64, h: &mut HeaderMap) {
    h.insert(
        "x-dex-version",
        HeaderValue::from_static(node.cfg.role.as_str()),
    );
    if let Ok(v) = HeaderValue::from_str(&node.cfg.version) {
        h.insert("x-tandem-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(node.log_id()) {
        h.insert("x-tandem-log", v);
    }
    h.insert("x-tandem-seq", seq_token(node, partition, covers));
}

/// Turns an answer into a response with the headers every answer carries.
pub fn respond(node: &Node, a: Answer, started: Instant, route: &'static str) -> Response<BoxBody> {
    node.metrics
        .request(route, a.status.as_u16(), started.elapsed());
    let mut r = Response::new(
        Full::new(a.body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = a.status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    common_headers(node, a.partition, a.covers, h);
    if let Some(s) = a.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if let Some(v) = a.allow.and_then(|m| HeaderValue::from_str(&m).ok()) {
        h.insert(header::ALLOW, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::parse_token;

    #[test]
    fn tokens_name_partition_seq_and_log() {
        assert_eq!(
            parse_token("0:569@00ff00ff00ff00ff"),
            Some((0, 569, Some("00ff00ff00ff00ff")))
        );
        assert_eq!(parse_token(" 3:7 "), Some((3, 7, None)));
        for bad in [
            "", ":", "0:", ":5", "x:1", "0:1@", "0:1@zz", "0:1@00ff", "0:-1", "0:1:2",
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        /// A header value is outside bytes: any text parses or is refused,
        /// never panics, and a token the node writes parses back.
        #[test]
        fn any_text_is_parsed_or_refused(s in "\\PC{0,40}", p: u32, n: u64, l: u64) {
            let _ = parse_token(&s);
            let log = format!("{l:016x}");
            let t = format!("{p}:{n}@{log}");
            proptest::prop_assert_eq!(parse_token(&t), Some((p, n, Some(log.as_str()))));
        }
    }
}
