//! Async clients of the node's and the edge's control endpoints, over one
//! pooled hyper (HTTP/1.1) client on tokio. Every request is bounded by a
//! timeout covering connect, answer and body, and by a body limit; every
//! failure is a `ControlError` naming the URL, so a caller can tell a
//! stale write (`Stale`) from a refused token (`Unauthorized`) from an
//! edge that cannot be reached (`Unreachable`).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::prom::{Exposition, PromError};
use crate::types::{Chain, Checkpoint, NodeStatus, Routes, Weights};

/// Default bound on one request (connect, answer and body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer body read (a node's `/metrics` is the largest).
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The base URL is not `http://host:port`.
    #[error("url {url}: {why}")]
    Url { url: String, why: String },
    /// No answer: connection refused or reset, or nothing within the
    /// timeout. Retry later; the state of the target is unknown.
    #[error("{url}: unreachable: {cause}")]
    Unreachable { url: String, cause: String },
    /// A write based on a generation the edge's routes have left (409):
    /// read again and decide again.
    #[error("{url}: stale write: the routes are at generation {current} now")]
    Stale { url: String, current: u64 },
    /// The admin token was refused (401).
    #[error("{url}: unauthorized: {message}")]
    Unauthorized { url: String, message: String },
    /// The edge has no admin token configured (403): its admin API is off.
    #[error("{url}: admin API disabled: {message}")]
    Disabled { url: String, message: String },
    /// Any other refusal, with the status and the server's `error`.
    #[error("{url}: {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    /// An answer that is not the expected shape.
    #[error("{url}: unexpected answer: {why}")]
    BadAnswer { url: String, why: String },
}

/// The edge admin API's errors are the same enum.
pub type AdminError = ControlError;

/// One pooled HTTP client with a per-request timeout; cheap to clone and
/// meant to be shared by every `NodeClient` and `EdgeAdmin`.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Http {
    /// A client whose every request must complete within `timeout`. Must
    /// be called within a tokio runtime's context only when used.
    pub fn new(timeout: Duration) -> Http {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        Http { client, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request built elsewhere (the rollout's Consul layer): the
    /// status and the whole body, within the timeout.
    pub async fn request(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ControlError> {
        let (parts, body) = req.into_parts();
        let url = parts.uri.to_string();
        let headers: Vec<(header::HeaderName, String)> = parts
            .headers
            .iter()
            .filter(|(k, _)| *k != header::CONTENT_TYPE)
            .map(|(k, v)| (k.clone(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = (!body.is_empty() || parts.method != Method::GET).then_some(body);
        self.send(parts.method, &url, &headers, body).await
    }

    /// `GET url` accepting JSON: the status and the whole body (at most
    /// [`MAX_BODY_BYTES`]), within the timeout. For clients of other
    /// services (the rollout's Prometheus source).
    pub async fn get(&self, url: &str) -> Result<(StatusCode, Bytes), ControlError> {
        self.send(
            Method::GET,
            url,
            &[(header::ACCEPT, "application/json".to_owned())],
            None,
        )
        .await
    }

    /// Sends one request; the status and the whole body.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ControlError> {
        let unreachable = |cause: String| ControlError::Unreachable {
            url: url.to_owned(),
            cause,
        };
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ControlError::Url {
                url: url.to_owned(),
                why: e.to_string(),
            })?;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(format!(
                "no whole answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// An error and its sources, joined (hyper's top-level message alone is
/// often just "client error" or "connection error").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// `http://host:port` (a path prefix allowed, no query) without a
/// trailing slash, checked.
pub fn base_url(url: &str) -> Result<String, ControlError> {
    let bad = |why: &str| ControlError::Url {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let u: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    if u.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    if u.authority().is_none() {
        return Err(bad("no host"));
    }
    if u.query().is_some() {
        return Err(bad("a base URL has no query"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The `error` of a JSON error body, else the body as text (bounded).
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        error: String,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) => e.error,
        Err(_) => {
            let t = String::from_utf8_lossy(body);
            t.chars().take(300).collect()
        }
    }
}

fn json<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|e| ControlError::BadAnswer {
        url: url.to_owned(),
        why: e.to_string(),
    })
}

/// The usual reading of an answer: 200 → `Ok(body)`, 401/403/other → the
/// error variant.
fn ok_body(url: &str, status: StatusCode, body: Bytes) -> Result<Bytes, ControlError> {
    if status == StatusCode::OK {
        return Ok(body);
    }
    let message = error_message(&body);
    let url = url.to_owned();
    Err(match status {
        StatusCode::UNAUTHORIZED => ControlError::Unauthorized { url, message },
        StatusCode::FORBIDDEN => ControlError::Disabled { url, message },
        s => ControlError::Refused {
            url,
            status: s.as_u16(),
            message,
        },
    })
}

fn parse_metrics(url: &str, body: &[u8]) -> Result<Exposition, ControlError> {
    let text = std::str::from_utf8(body).map_err(|e| ControlError::BadAnswer {
        url: url.to_owned(),
        why: format!("not UTF-8: {e}"),
    })?;
    Exposition::parse(text).map_err(|e: PromError| ControlError::BadAnswer {
        url: url.to_owned(),
        why: e.to_string(),
    })
}

/// A client of one node's API (`/v1/status`, `/v1/chain`, `/readyz`,
/// `/metrics`).
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: Http,
    base: String,
}

impl NodeClient {
    /// A client of the node at `base` (`http://host:port`).
    pub fn new(http: Http, base: &str) -> Result<NodeClient, ControlError> {
        Ok(NodeClient {
            http,
            base: base_url(base)?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get(&self, path: &str) -> Result<(String, StatusCode, Bytes), ControlError> {
        let url = format!("{}{path}", self.base);
        let (s, b) = self.http.send(Method::GET, &url, &[], None).await?;
        Ok((url, s, b))
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<NodeStatus, ControlError> {
        let (url, s, b) = self.get("/v1/status").await?;
        json(&url, &ok_body(&url, s, b)?)
    }

    /// `GET /v1/chain/{partition}`: the newest checkpoints, or those from
    /// `from` on (at most 1000 per call; page with `chain_page`).
    pub async fn chain(&self, partition: u32, from: Option<u64>) -> Result<Chain, ControlError> {
        self.chain_page(partition, from, None).await
    }

    /// `GET /v1/chain/{partition}?from=F&limit=L` (`limit` at most 4096).
    pub async fn chain_page(
        &self,
        partition: u32,
        from: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Chain, ControlError> {
        let mut q = Vec::new();
        if let Some(f) = from {
            q.push(format!("from={f}"));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let query = if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        };
        let (url, s, b) = self.get(&format!("/v1/chain/{partition}{query}")).await?;
        json(&url, &ok_body(&url, s, b)?)
    }

    /// `GET /v1/chain/{partition}?seq=N`: the checkpoint at `seq`, or
    /// `None` when the node keeps none there (404 naming `seq`: not a
    /// checkpoint, not applied yet, or aged out of its ring).
    pub async fn checkpoint(
        &self,
        partition: u32,
        seq: u64,
    ) -> Result<Option<Checkpoint>, ControlError> {
        let (url, s, b) = self
            .get(&format!("/v1/chain/{partition}?seq={seq}"))
            .await?;
        if s == StatusCode::NOT_FOUND && error_message(&b).starts_with("seq:") {
            return Ok(None);
        }
        json(&url, &ok_body(&url, s, b)?).map(Some)
    }

    /// `GET /readyz`: true on 200, false on 503.
    pub async fn ready(&self) -> Result<bool, ControlError> {
        let (url, s, b) = self.get("/readyz").await?;
        match s {
            StatusCode::OK => Ok(true),
            StatusCode::SERVICE_UNAVAILABLE => Ok(false),
            _ => ok_body(&url, s, b).map(|_| false),
        }
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Result<Exposition, ControlError> {
        let (url, s, b) = self.get("/metrics").await?;
        parse_metrics(&url, &ok_body(&url, s, b)?)
    }
}

/// A client of one edge's admin API, with its bearer token.
#[derive(Clone)]
pub struct EdgeAdmin {
    http: Http,
    base: String,
    token: String,
}

impl std::fmt::Debug for EdgeAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("EdgeAdmin")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl EdgeAdmin {
    /// A client of the admin listener at `base` (`http://host:port`)
    /// sending `authorization: Bearer <token>`.
    pub fn new(http: Http, base: &str, token: &str) -> Result<EdgeAdmin, AdminError> {
        Ok(EdgeAdmin {
            http,
            base: base_url(base)?,
            token: token.to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(String, StatusCode, Bytes), AdminError> {
        let url = format!("{}{path}", self.base);
        let auth = [(header::AUTHORIZATION, format!("Bearer {}", self.token))];
        let (s, b) = self.http.send(method, &url, &auth, body).await?;
        Ok((url, s, b))
    }

    /// `GET /admin/weights`: the weights and their generation.
    pub async fn weights(&self) -> Result<Weights, AdminError> {
        let (url, s, b) = self.call(Method::GET, "/admin/weights", None).await?;
        json(&url, &ok_body(&url, s, b)?)
    }

    /// `GET /admin/routes`.
    pub async fn routes(&self) -> Result<Routes, AdminError> {
        let (url, s, b) = self.call(Method::GET, "/admin/routes", None).await?;
        json(&url, &ok_body(&url, s, b)?)
    }

    /// `PUT /admin/weights` with `{"weights":..,"generation":based_on}`:
    /// installs the weights (clusters not named keep theirs) only if the
    /// routes are still at `based_on_generation`. Returns the new
    /// generation; `Stale { current }` when the routes moved on.
    pub async fn set_weights(
        &self,
        weights: &BTreeMap<String, u32>,
        based_on_generation: u64,
    ) -> Result<u64, AdminError> {
        let body = serde_json::json!({"weights": weights, "generation": based_on_generation});
        let (url, s, b) = self
            .call(
                Method::PUT,
                "/admin/weights",
                Some(body.to_string().into_bytes()),
            )
            .await?;
        if s == StatusCode::CONFLICT {
            #[derive(serde::Deserialize)]
            struct Conflict {
                generation: u64,
            }
            let c: Conflict = json(&url, &b)?;
            return Err(ControlError::Stale {
                url,
                current: c.generation,
            });
        }
        let routes: Routes = json(&url, &ok_body(&url, s, b)?)?;
        Ok(routes.generation)
    }

    /// `GET /metrics` of the admin listener, parsed (no token needed, but
    /// sending it is harmless).
    pub async fn metrics(&self) -> Result<Exposition, AdminError> {
        let (url, s, b) = self.call(Method::GET, "/metrics", None).await?;
        parse_metrics(&url, &ok_body(&url, s, b)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            base_url("http://127.0.0.1:8001/").unwrap(),
            "http://127.0.0.1:8001"
        );
        for bad in [
            "",
            "127.0.0.1:80",
            "https://x:1",
            "http://x:1/?a=1",
            "http://",
        ] {
            assert!(
                matches!(base_url(bad), Err(ControlError::Url { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_bodies_are_read() {
        assert_eq!(error_message(br#"{"error":"seq: 5: no"}"#), "seq: 5: no");
        assert_eq!(error_message(b"plain"), "plain");
        let e = ok_body(
            "u",
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(b"{\"error\":\"x\"}"),
        );
        assert!(matches!(e, Err(ControlError::Unauthorized { .. })));
        let e = ok_body("u", StatusCode::BAD_GATEWAY, Bytes::new());
        assert!(matches!(e, Err(ControlError::Refused { status: 502, .. })));
    }
}
