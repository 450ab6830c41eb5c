//! The Cloudflare layer of a weight change: the routes document the
//! Worker reads (`deploy/cloudflare/src/worker.js`: KV namespace `ROUTES`,
//! key `routes`), the API request that writes it, and the reading of the
//! API's answer. Pure: the requests are values, sent by the layer
//! (`layers::CloudflareLayer`, over `https`).
//!
//! KV is eventually consistent: a write takes up to 60 s to reach every
//! Cloudflare location, so this layer cannot promise the 5 s rollback.
//! The Tandem edges behind the Worker give that; the Worker's split
//! follows within a minute (README, "Rollout").

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::plan::{Plan, Version};

/// Where the routes live in Cloudflare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvTarget {
    pub account_id: String,
    pub namespace_id: String,
    /// Origin URL of each cluster (what the Worker proxies to).
    pub origins: BTreeMap<String, String>,
}

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudflareError {
    #[error("cloudflare: no origin configured for cluster {0}")]
    NoOrigin(String),
    #[error("cloudflare: account_id and namespace_id must be 32 lowercase hex digits, got {0:?}")]
    BadId(String),
    #[error("cloudflare: the API token is not a valid header value")]
    BadToken,
    #[error("cloudflare: the API refused the write (HTTP {status}): {messages}")]
    Refused { status: u16, messages: String },
    #[error("cloudflare: the API answered HTTP {status} with a body that is not its envelope")]
    Unreadable { status: u16 },
    /// No whole answer (connection, TLS, timeout).
    #[error("cloudflare: {0}")]
    Unreachable(String),
}

/// The API's base URL.
pub const API: &str = "https://api.cloudflare.com/client/v4";

fn hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The routes document for these weights, in the plan's cluster order
/// (`{"clusters":[{"name":..,"role":..,"weight":..,"origin":..}]}`).
pub fn routes_json(
    plan: &Plan,
    weights: &BTreeMap<String, u32>,
    target: &KvTarget,
) -> Result<String, CloudflareError> {
    let mut clusters = Vec::with_capacity(plan.clusters.len());
    for c in &plan.clusters {
        let origin = target
            .origins
            .get(&c.name)
            .ok_or_else(|| CloudflareError::NoOrigin(c.name.clone()))?;
        clusters.push(serde_json::json!({
            "name": c.name,
            "role": match c.version { Version::Stable => "stable", Version::Canary => "canary" },
            "weight": weights.get(&c.name).copied().unwrap_or(0),
            "origin": origin,
        }));
    }
    Ok(serde_json::json!({ "clusters": clusters }).to_string())
}

/// Checks the account and namespace ids (32 lowercase hex digits, as
/// the dashboard shows them).
pub fn check_ids(target: &KvTarget) -> Result<(), CloudflareError> {
    for id in [&target.account_id, &target.namespace_id] {
        if !hex32(id) {
            return Err(CloudflareError::BadId(id.clone()));
        }
    }
    Ok(())
}

/// `PUT /accounts/{account}/storage/kv/namespaces/{namespace}/values/routes`
/// with the API token as a bearer token and the document as the body.
pub fn write_request(
    target: &KvTarget,
    token: &str,
    routes: &str,
) -> Result<http::Request<Vec<u8>>, CloudflareError> {
    write_request_at(API, target, token, routes)
}

/// [`write_request`] against the API at `api` (the tests' server).
pub fn write_request_at(
    api: &str,
    target: &KvTarget,
    token: &str,
    routes: &str,
) -> Result<http::Request<Vec<u8>>, CloudflareError> {
    check_ids(target)?;
    let url = format!(
        "{}/accounts/{}/storage/kv/namespaces/{}/values/routes",
        api.trim_end_matches('/'),
        target.account_id,
        target.namespace_id
    );
    http::Request::put(url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(routes.as_bytes().to_vec())
        .map_err(|_| CloudflareError::BadToken)
}

#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
}

#[derive(Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

/// Reads the API's answer to a write: `Ok` only for `"success": true`.
pub fn read_answer(status: u16, body: &[u8]) -> Result<(), CloudflareError> {
    let env: Envelope =
        serde_json::from_slice(body).map_err(|_| CloudflareError::Unreadable { status })?;
    if env.success && (200..300).contains(&status) {
        return Ok(());
    }
    let messages = env
        .errors
        .iter()
        .map(|e| format!("{} {}", e.code, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(CloudflareError::Refused { status, messages })
}
