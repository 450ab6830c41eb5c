//! The admin API, on its own listener: read the routes and the split
//! achieved, change weights or whole cluster lists live, reload the config
//! file. Every change is checked before it is installed and is atomic for
//! requests (they route over one table or the next, never a mix). Changes
//! need `authorization: Bearer <token>`; `/metrics` and `/healthz` do not.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::config::{check_clusters, ClusterConfig, EdgeConfig};
use crate::proxy::{edge_error, Edge};
use crate::BoxBody;

fn json(status: StatusCode, v: serde_json::Value) -> Response<BoxBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(v.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The routes as the admin API shows them: clusters, weights, nodes and
/// their health, and the requests each cluster answered so far.
pub fn routes_json(edge: &Edge) -> serde_json::Value {
    let table = edge.routes.table();
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
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "generation": table.generation,
        "pid": std::process::id(),
        "zone": edge.cfg.zone,
        "draining": edge.draining.load(Ordering::Relaxed),
        "clusters": clusters,
        "split": edge.metrics.split(),
    })
}

/// Re-reads the clusters from the config file and installs them.
pub fn reload(edge: &Edge, path: &Option<PathBuf>) -> Result<(), String> {
    let Some(path) = path else {
        return Err("no config file was given at start".into());
    };
    let cfg = EdgeConfig::load(Some(path)).map_err(|e| e.to_string())?;
    edge.routes.replace(&cfg.clusters);
    Ok(())
}

/// Answers one admin request.
pub async fn handle(
    edge: &Arc<Edge>,
    token: &str,
    config_path: &Option<PathBuf>,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => {
            return json(StatusCode::OK, serde_json::json!({"status": "ok"}))
        }
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(
                Full::new(Bytes::from(edge.metrics.render(&format!(
                    "zone=\"{}\"",
                    tandem_metrics::escape(&edge.cfg.zone)
                ))))
                .map_err(|never| match never {})
                .boxed_unsync(),
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        _ => {}
    }
    let authorized = !token.is_empty()
        && req
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
    let method = req.method().clone();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return edge_error(StatusCode::PAYLOAD_TOO_LARGE, "body: over 1 MiB", None),
    };
    match (&method, path.as_str()) {
        (&Method::GET, "/admin/routes") => json(StatusCode::OK, routes_json(edge)),
        (&Method::PUT, "/admin/weights") => {
            let weights: BTreeMap<String, u32> = match serde_json::from_slice(&body) {
                Ok(w) => w,
                Err(e) => {
                    return edge_error(
                        StatusCode::BAD_REQUEST,
                        &format!("body: expected {{\"<cluster>\": <weight>, ...}}: {e}"),
                        None,
                    )
                }
            };
            match edge.routes.set_weights(&weights) {
                Ok(()) => json(StatusCode::OK, routes_json(edge)),
                Err(e) => edge_error(StatusCode::BAD_REQUEST, &e, None),
            }
        }
        (&Method::PUT, "/admin/clusters") => {
            let clusters: Vec<ClusterConfig> = match serde_json::from_slice(&body) {
                Ok(c) => c,
                Err(e) => {
                    return edge_error(
                        StatusCode::BAD_REQUEST,
                        &format!("body: expected a list of clusters: {e}"),
                        None,
                    )
                }
            };
            if let Err(e) = check_clusters(&clusters) {
                return edge_error(StatusCode::BAD_REQUEST, &e.to_string(), None);
            }
            edge.routes.replace(&clusters);
            json(StatusCode::OK, routes_json(edge))
        }
        (&Method::POST, "/admin/reload") => match reload(edge, config_path) {
            Ok(()) => json(StatusCode::OK, routes_json(edge)),
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
