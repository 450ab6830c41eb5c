//! The admin API, on its own listener: read the routes and the split
//! achieved, change weights or whole cluster lists live, reload the config
//! file. Every change is checked before it is installed and is atomic for
//! requests (they route over one table or the next, never a mix). Changes
//! need `authorization: Bearer <token>`; `/metrics`, `/healthz` and the
//! description (`GET /openapi.json`, `admin-openapi.json`) do not.
//! With no token configured the admin API is disabled and says so.
//!
//! Weight writes carry a generation: every read shows it (`generation` in
//! the body, `etag` header), a write may name the one it is based on
//! (`"generation": N` in the body or an `if-match: N` header) and is refused
//! with 409 when the routes have changed since. Weights set here survive a
//! reload of the file (which says which it kept) unless the reload asks for
//! the file's (`POST /admin/reload?weights=file`), and survive a hand-over.
//!
//! With `[admin_tls]` and its `client_ca`, a change needs a client
//! certificate of that CA as well as the token. Every change that is
//! installed is logged (JSON, stderr) with who made it (the token's id, a
//! short SHA3-256 of it, never the token; and the client certificate's
//! subject and serial when there is one) and what changed (generation and
//! weights from → to, clusters added or removed, node lists from → to).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::config::{ClusterConfig, EdgeConfig};
use crate::proxy::{edge_error, Edge};
use crate::table::WriteError;
use crate::BoxBody;

/// The admin API's OpenAPI 3.1 description (`crates/tandem-edge/admin-openapi.json`),
/// served at `GET /openapi.json` on the admin listener, without a token.
pub const ADMIN_OPENAPI_JSON: &str = include_str!("../admin-openapi.json");

/// The admin API's refusal while no token is configured.
pub const DISABLED: &str =
    "admin API disabled: no admin_token set (config admin_token or TANDEM_EDGE_ADMIN_TOKEN)";

/// A 200 answer of `body` with its content type.
fn typed(body: Bytes, content_type: &'static str) -> Response<BoxBody> {
    let mut r = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<BoxBody> {
    let mut r = typed(Bytes::from(v.to_string()), "application/json");
    *r.status_mut() = status;
    if let Some(g) = v.get("generation").and_then(serde_json::Value::as_u64) {
        if let Ok(e) = HeaderValue::from_str(&format!("\"{g}\"")) {
            r.headers_mut().insert(header::ETAG, e);
        }
    }
    r
}

/// The routes as the admin API shows them: clusters, weights, nodes and
/// their health, and the requests each cluster answered so far.
pub fn routes_json(edge: &Edge) -> serde_json::Value {
    let (table, admin) = edge.routes.view();
    let now = edge.routes.now_ms();
    let clusters: Vec<serde_json::Value> = table
        .clusters
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "version": c.version,
                "role": c.role.as_str(),
                "weight": c.weight,
                "nodes": c.nodes.iter().map(|n| serde_json::json!({
                    "addr": n.state.addr,
                    "zone": n.zone,
                    "ready": n.state.ready.load(Ordering::Relaxed),
                    "ejected": n.state.ejected_until_ms.load(Ordering::Relaxed) > now,
                    "available": n.state.available(now),
                    "in_flight": n.state.in_flight.load(Ordering::Relaxed),
                    "log": n.state.log(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let weights: BTreeMap<&str, u32> = table
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    serde_json::json!({
        "generation": table.generation,
        "pid": std::process::id(),
        "zone": edge.cfg.zone,
        "draining": edge.draining.load(Ordering::Relaxed),
        "weights": weights,
        "admin_weights": admin,
        "clusters": clusters,
        "split": edge.metrics.split(),
    })
}

/// The weights alone: `{"generation":N,"weights":{..},"admin_weights":{..}}`
/// (`admin_weights`: those set through this API, which a reload keeps).
pub fn weights_json(edge: &Edge) -> serde_json::Value {
    let (table, admin) = edge.routes.view();
    let weights: BTreeMap<&str, u32> = table
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    serde_json::json!({
        "generation": table.generation,
        "weights": weights,
        "admin_weights": admin,
    })
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The generation installed.
    pub generation: u64,
    /// Changed settings applied live (dotted names).
    pub applied: Vec<String>,
    /// Changed settings that take effect only at the next start or
    /// hand-over.
    pub needs_restart: Vec<String>,
    /// Weights set through the admin API kept instead of the file's.
    pub weights_kept: BTreeMap<String, u32>,
    /// The admin token is empty now (the admin API refuses everything).
    pub admin_disabled: bool,
}

impl ReloadReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "generation": self.generation,
            "applied": self.applied,
            "needs_restart": self.needs_restart,
            "weights_kept": self.weights_kept,
        })
    }

    /// The JSON log line of this reload (and a warning when the reload
    /// left the admin API disabled).
    pub fn log_lines(&self) -> Vec<String> {
        let mut v = self.to_json();
        v["msg"] = "config reloaded".into();
        v["level"] = if self.needs_restart.is_empty() {
            "info"
        } else {
            "warn"
        }
        .into();
        let mut out = vec![v.to_string()];
        if self.admin_disabled {
            out.push(disabled_warning());
        }
        out
    }
}

/// The start-up (and reload) warning for an edge without an admin token.
pub fn disabled_warning() -> String {
    serde_json::json!({
        "level": "warn",
        "msg": format!("{DISABLED}: every admin request but /healthz and /metrics is refused, so weights cannot be changed without a restart"),
    })
    .to_string()
}

/// Re-reads the config file and applies it: the clusters' node sets (and
/// their weights, except those set through the admin API, unless
/// `file_weights`), the admin token and the body limit; other changed
/// settings are reported as needing a restart. Nothing is applied when
/// the file is unreadable or invalid.
pub fn reload(
    edge: &Edge,
    path: &Option<PathBuf>,
    file_weights: bool,
) -> Result<ReloadReport, String> {
    let Some(path) = path else {
        return Err("no config file was given at start".into());
    };
    let cfg = EdgeConfig::load(Some(path))
        .map_err(|e| e.to_string())?
        .with_env(|k| std::env::var(k).ok());
    let before = edge.routes.table().configs();
    let routes = edge
        .routes
        .reload(&cfg.clusters, file_weights)
        .map_err(|e| e.to_string())?;
    let (mut applied, needs_restart) = edge.apply_live(&cfg);
    if !applied.iter().any(|a| a == "clusters") && edge.routes.table().configs() != before {
        applied.insert(0, "clusters".into());
    }
    Ok(ReloadReport {
        generation: routes.generation,
        applied,
        needs_restart,
        weights_kept: routes.weights_kept,
        admin_disabled: cfg.admin_token.is_empty(),
    })
}

/// The generation an `if-match` header names (`N` or `"N"`), if any.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    s.parse()
        .map(Some)
        .map_err(|_| format!("if-match: expected a generation (a number), got {s:?}"))
}

/// The generation a write is based on: from the body or `if-match`, which
/// must agree when both are given.
fn based_on(body: Option<u64>, header: Option<u64>) -> Result<Option<u64>, String> {
    match (body, header) {
        (Some(b), Some(h)) if b != h => Err(format!(
            "generation: the body says {b} and if-match says {h}"
        )),
        (b, h) => Ok(b.or(h)),
    }
}

/// `PUT /admin/weights` bodies: `{"weights":{..},"generation":N}` (the
/// generation optional), or the bare map `{"<cluster>": <weight>, ...}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsWrite {
    weights: BTreeMap<String, u32>,
    generation: Option<u64>,
}

fn parse_weights(body: &[u8]) -> Result<(BTreeMap<String, u32>, Option<u64>), String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "body: expected {{\"weights\":{{\"<cluster>\": <weight>, ...}},\"generation\":N}}: {e}"
        )
    })?;
    if v.get("weights").is_some_and(serde_json::Value::is_object) {
        let w: WeightsWrite = serde_json::from_value(v).map_err(|e| {
            format!("body: expected {{\"weights\":{{\"<cluster>\": <weight>, ...}},\"generation\":N}}: {e}")
        })?;
        return Ok((w.weights, w.generation));
    }
    let w: BTreeMap<String, u32> = serde_json::from_value(v)
        .map_err(|e| format!("body: expected {{\"<cluster>\": <weight>, ...}}: {e}"))?;
    Ok((w, None))
}

/// `PUT /admin/clusters` bodies: `{"clusters":[..],"generation":N}` or the
/// bare list.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ClustersWrite {
    List(Vec<ClusterConfig>),
    Versioned {
        clusters: Vec<ClusterConfig>,
        generation: Option<u64>,
    },
}

/// Answers a refused write: 409 with the current generation when it was
/// stale, 400 naming the field otherwise.
fn write_error(e: &WriteError) -> Response<BoxBody> {
    match e {
        WriteError::Stale { current, .. } => json(
            StatusCode::CONFLICT,
            serde_json::json!({"error": e.to_string(), "generation": current}),
        ),
        WriteError::Invalid(msg) => edge_error(StatusCode::BAD_REQUEST, msg, None),
        WriteError::HandingOver => {
            edge_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), Some(1))
        }
    }
}

/// The variable a hand-over passes the admin-set weights and the
/// generation in, to the successor.
pub const HANDOVER_ENV: &str = "TANDEM_EDGE_WEIGHTS";

/// What a hand-over passes on: `{"generation":N,"admin_weights":{..}}`.
/// Writes are refused from now on (a successor takes this state); call
/// `edge.routes.thaw()` if the hand-over fails.
pub fn handover_state(edge: &Edge) -> String {
    let (generation, admin) = edge.routes.freeze();
    serde_json::json!({"generation": generation, "admin_weights": admin}).to_string()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Handed {
    generation: u64,
    admin_weights: BTreeMap<String, u32>,
}

/// Takes over what a predecessor passed (`handover_state`): its admin-set
/// weights and its generation. Returns the generation installed.
pub fn take_handover_state(edge: &Edge, text: &str) -> Result<u64, String> {
    let h: Handed = serde_json::from_str(text).map_err(|e| format!("{HANDOVER_ENV}: {e}"))?;
    edge.routes
        .restore(h.generation, &h.admin_weights)
        .map_err(|e| format!("{HANDOVER_ENV}: {e}"))?;
    Ok(edge.routes.table().generation)
}

/// Who made an admin request: the token's id and the client certificate.
pub fn who(token: &str, peer: Option<&tandem_conn::tls::PeerCert>) -> serde_json::Value {
    use sha3::Digest;
    let digest = sha3::Sha3_256::digest(token.as_bytes());
    let id: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let mut v = serde_json::json!({ "token_id": format!("sha3:{id}") });
    if let Some(p) = peer {
        v["cert_subject"] = p.subject.clone().into();
        v["cert_serial"] = p.serial.clone().into();
    }
    v
}

/// What differs between two cluster lists: weights and node lists from →
/// to, clusters added and removed (each part only when not empty).
pub fn cluster_changes(before: &[ClusterConfig], after: &[ClusterConfig]) -> serde_json::Value {
    let mut weights = serde_json::Map::new();
    let mut nodes = serde_json::Map::new();
    let mut v = serde_json::Map::new();
    let addrs = |c: &ClusterConfig| {
        c.nodes
            .iter()
            .map(|n| n.addr.clone())
            .collect::<Vec<String>>()
    };
    for a in after {
        let Some(b) = before.iter().find(|b| b.name == a.name) else {
            continue;
        };
        if a.weight != b.weight {
            weights.insert(
                a.name.clone(),
                serde_json::json!({"from": b.weight, "to": a.weight}),
            );
        }
        if a.nodes != b.nodes {
            nodes.insert(
                a.name.clone(),
                serde_json::json!({"from": addrs(b), "to": addrs(a)}),
            );
        }
    }
    let names = |l: &[ClusterConfig], other: &[ClusterConfig]| -> Vec<String> {
        l.iter()
            .filter(|c| !other.iter().any(|o| o.name == c.name))
            .map(|c| c.name.clone())
            .collect()
    };
    let (added, removed) = (names(after, before), names(before, after));
    if !weights.is_empty() {
        v.insert("weights".into(), weights.into());
    }
    if !nodes.is_empty() {
        v.insert("nodes".into(), nodes.into());
    }
    if !added.is_empty() {
        v.insert("added".into(), added.into());
    }
    if !removed.is_empty() {
        v.insert("removed".into(), removed.into());
    }
    v.into()
}

/// The log line of an installed admin change.
fn log_change(
    change: &str,
    by: &serde_json::Value,
    (from_generation, before): (u64, &[ClusterConfig]),
    edge: &Edge,
) {
    let table = edge.routes.table();
    eprintln!(
        "{}",
        serde_json::json!({
            "msg": "admin change",
            "change": change,
            "by": by,
            "generation": {"from": from_generation, "to": table.generation},
            "changed": cluster_changes(before, &table.configs()),
        })
    );
}

/// Answers one admin request.
pub async fn handle(
    edge: &Arc<Edge>,
    config_path: &Option<PathBuf>,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => {
            return json(StatusCode::OK, serde_json::json!({"status": "ok"}))
        }
        (&Method::GET, "/openapi.json") => {
            return typed(
                Bytes::from_static(ADMIN_OPENAPI_JSON.as_bytes()),
                "application/json",
            )
        }
        (&Method::GET, "/metrics") => {
            let edge_labels = format!("zone=\"{}\"", tandem_metrics::escape(&edge.cfg.zone));
            let mut text = edge.metrics.render(&edge_labels);
            let (per_node, distinct) = edge.logs();
            crate::metrics::render_logs(&mut text, &edge_labels, &per_node, distinct);
            return typed(Bytes::from(text), "text/plain; version=0.0.4");
        }
        _ => {}
    }
    let token = edge.admin_token();
    if token.is_empty() {
        return edge_error(StatusCode::FORBIDDEN, DISABLED, None);
    }
    let peer = req
        .extensions()
        .get::<tandem_conn::tls::PeerCert>()
        .cloned();
    let cert_required = edge
        .cfg
        .admin_tls
        .as_ref()
        .is_some_and(|t| t.client_ca.is_some());
    if cert_required && peer.is_none() {
        // The TLS handshake already requires one; this holds if the
        // listener is ever served otherwise.
        return edge_error(
            StatusCode::UNAUTHORIZED,
            "client certificate: the admin API requires one (admin_tls.client_ca)",
            None,
        );
    }
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
    if !authorized {
        return edge_error(
            StatusCode::UNAUTHORIZED,
            "authorization: a valid bearer token is required",
            None,
        );
    }
    let header_generation = match if_match(req.headers()) {
        Ok(g) => g,
        Err(e) => return edge_error(StatusCode::BAD_REQUEST, &e, None),
    };
    let file_weights = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "weights=file"));
    let method = req.method().clone();
    let by = who(&token, peer.as_ref());
    let before = {
        let t = edge.routes.table();
        (t.generation, t.configs())
    };
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return edge_error(StatusCode::PAYLOAD_TOO_LARGE, "body: over 1 MiB", None),
    };
    match (&method, path.as_str()) {
        (&Method::GET, "/admin/routes") => json(StatusCode::OK, routes_json(edge)),
        (&Method::GET, "/admin/weights") => json(StatusCode::OK, weights_json(edge)),
        (&Method::PUT, "/admin/weights") => {
            let (weights, body_generation) = match parse_weights(&body) {
                Ok(w) => w,
                Err(e) => return edge_error(StatusCode::BAD_REQUEST, &e, None),
            };
            let base = match based_on(body_generation, header_generation) {
                Ok(b) => b,
                Err(e) => return edge_error(StatusCode::BAD_REQUEST, &e, None),
            };
            match edge.routes.set_weights(&weights, base) {
                Ok(_) => {
                    log_change("weights", &by, (before.0, &before.1), edge);
                    json(StatusCode::OK, routes_json(edge))
                }
                Err(e) => write_error(&e),
            }
        }
        (&Method::PUT, "/admin/clusters") => {
            let (clusters, body_generation) = match serde_json::from_slice(&body) {
                Ok(ClustersWrite::List(c)) => (c, None),
                Ok(ClustersWrite::Versioned {
                    clusters,
                    generation,
                }) => (clusters, generation),
                Err(e) => {
                    return edge_error(
                        StatusCode::BAD_REQUEST,
                        &format!("body: expected a list of clusters, or {{\"clusters\":[..],\"generation\":N}}: {e}"),
                        None,
                    )
                }
            };
            let base = match based_on(body_generation, header_generation) {
                Ok(b) => b,
                Err(e) => return edge_error(StatusCode::BAD_REQUEST, &e, None),
            };
            match edge.routes.set_clusters(&clusters, base) {
                Ok(_) => {
                    log_change("clusters", &by, (before.0, &before.1), edge);
                    json(StatusCode::OK, routes_json(edge))
                }
                Err(e) => write_error(&e),
            }
        }
        (&Method::POST, "/admin/reload") => match reload(edge, config_path, file_weights) {
            Ok(report) => {
                for line in report.log_lines() {
                    eprintln!("{line}");
                }
                log_change("reload", &by, (before.0, &before.1), edge);
                let mut v = routes_json(edge);
                v["reload"] = report.to_json();
                json(StatusCode::OK, v)
            }
            Err(e) => edge_error(StatusCode::BAD_REQUEST, &e, None),
        },
        _ => edge_error(
            StatusCode::NOT_FOUND,
            &format!("path: no admin route {path}"),
            None,
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_bodies_in_both_shapes() {
        let (w, g) = parse_weights(br#"{"a":1,"b":0}"#).unwrap();
        assert_eq!((w.len(), g), (2, None));
        let (w, g) = parse_weights(br#"{"weights":{"a":1},"generation":7}"#).unwrap();
        assert_eq!((w.get("a"), g), (Some(&1), Some(7)));
        let (w, g) = parse_weights(br#"{"weights":{"a":1}}"#).unwrap();
        assert_eq!((w.len(), g), (1, None));
        // A cluster named "weights" in the bare shape is still a weight.
        let (w, _) = parse_weights(br#"{"weights":3}"#).unwrap();
        assert_eq!(w.get("weights"), Some(&3));
        for bad in [
            &br#"{"weights":{"a":1},"generation":-1}"#[..],
            br#"{"weights":{"a":1},"other":1}"#,
            br#"{"a":"x"}"#,
            b"[1]",
        ] {
            assert!(parse_weights(bad).unwrap_err().starts_with("body:"));
        }
    }

    #[test]
    fn who_names_the_token_by_a_hash_and_the_certificate_by_its_subject() {
        let a = who("s3cret-token", None);
        let id = a["token_id"].as_str().unwrap();
        assert!(id.starts_with("sha3:") && id.len() == 17, "{id}");
        assert!(!a.to_string().contains("s3cret"));
        assert_ne!(who("other-token", None)["token_id"], a["token_id"]);
        assert_eq!(who("s3cret-token", None), a);
        let p = tandem_conn::tls::PeerCert {
            subject: "CN=operator-1,O=ops".into(),
            serial: "2a".into(),
        };
        let b = who("s3cret-token", Some(&p));
        assert_eq!(b["cert_subject"], "CN=operator-1,O=ops");
        assert_eq!(
            (b["cert_serial"].as_str(), &b["token_id"]),
            (Some("2a"), &a["token_id"])
        );
    }

    #[test]
    fn cluster_changes_say_what_went_from_what_to_what() {
        let c = |name: &str, weight: u32, addrs: &[&str]| ClusterConfig {
            name: name.into(),
            version: "v".into(),
            role: crate::config::Role::Stable,
            weight,
            nodes: addrs
                .iter()
                .map(|a| crate::config::NodeAddr {
                    addr: (*a).into(),
                    zone: "z".into(),
                })
                .collect(),
        };
        let before = [
            c("a", 90, &["n1:1"]),
            c("b", 10, &["n2:1"]),
            c("old", 0, &[]),
        ];
        let after = [
            c("a", 50, &["n1:1"]),
            c("b", 10, &["n3:1"]),
            c("new", 1, &[]),
        ];
        let v = cluster_changes(&before, &after);
        assert_eq!(
            v,
            serde_json::json!({
                "weights": {"a": {"from": 90, "to": 50}},
                "nodes": {"b": {"from": ["n2:1"], "to": ["n3:1"]}},
                "added": ["new"],
                "removed": ["old"],
            })
        );
        assert_eq!(cluster_changes(&before, &before), serde_json::json!({}));
    }

    #[test]
    fn the_generation_from_body_and_header_must_agree() {
        assert_eq!(based_on(None, None), Ok(None));
        assert_eq!(based_on(Some(3), None), Ok(Some(3)));
        assert_eq!(based_on(None, Some(3)), Ok(Some(3)));
        assert_eq!(based_on(Some(3), Some(3)), Ok(Some(3)));
        assert!(based_on(Some(3), Some(4))
            .unwrap_err()
            .starts_with("generation:"));
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h), Ok(None));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"12\""));
        assert_eq!(if_match(&h), Ok(Some(12)));
        h.insert(header::IF_MATCH, HeaderValue::from_static("12"));
        assert_eq!(if_match(&h), Ok(Some(12)));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert!(if_match(&h).unwrap_err().starts_with("if-match:"));
    }
}
