//! Layers that follow the edges' weights. The Tandem edges are the layer
//! that gives the 5 s rollback; a mesh or a CDN in front or beside them
//! is told the same weights once the edges carry them:
//!
//! - Consul (`--consul URL`), which writes the `service-resolver` once and
//!   the `service-splitter` on every change, each with check-and-set on the
//!   entry's `ModifyIndex` read just before (a concurrent writer makes the
//!   write fail; it is read again and retried, at most a few times).
//! - Cloudflare (`--cloudflare-account`, `--cloudflare-namespace`,
//!   `--cloudflare-origin`; the API token from `CLOUDFLARE_API_TOKEN`),
//!   which writes the Worker's routes document to Workers KV over HTTPS
//!   on every change. A write that meets a rate limit (429), a 5xx or no
//!   answer is kept and sent again every interval until it lands or a
//!   newer document replaces it; a refusal (bad token, bad ids) is
//!   reported and dropped. KV takes up to 60 s to reach every Cloudflare
//!   location, so this layer follows the edges within a minute; it never
//!   gives the 5 s rollback.

use std::collections::BTreeMap;

use tandem_control::client::{ControlError, Http};

use crate::cloudflare::{self, CloudflareError, KvTarget};
use crate::consul::{self, ConsulError};
use crate::https::{Https, Roots};
use crate::plan::Plan;

/// How many times a write that lost its check-and-set is read and tried
/// again before the change is reported as failed.
pub const CAS_RETRIES: usize = 3;

/// Where the Consul layer writes (`--consul`, `--consul-service`, the ACL
/// token from `CONSUL_HTTP_TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulTarget {
    pub agent: String,
    pub token: Option<String>,
    pub service: String,
}

/// Consul as a layer: see the module doc.
#[derive(Debug, Clone)]
pub struct ConsulLayer {
    http: Http,
    agent: String,
    token: Option<String>,
    service: String,
    resolver_written: bool,
}

fn transport(e: ControlError) -> ConsulError {
    ConsulError::Unreadable(e.to_string())
}

impl ConsulLayer {
    /// The agent at `agent` (`http://host:port`), the ACL `token` if any,
    /// and the mesh service the nodes are registered as.
    pub fn new(http: Http, agent: &str, token: Option<String>, service: &str) -> ConsulLayer {
        ConsulLayer {
            http,
            agent: agent.trim_end_matches('/').to_owned(),
            token,
            service: service.to_owned(),
            resolver_written: false,
        }
    }

    /// Writes `entry` (of `kind`) with check-and-set on its current index.
    async fn write_cas(&self, kind: &str, entry: &serde_json::Value) -> Result<(), ConsulError> {
        let mut last = ConsulError::Stale(0);
        for _ in 0..CAS_RETRIES {
            let get = consul::get_request(&self.agent, self.token.as_deref(), kind, &self.service)?;
            let (status, body) = self.http.request(get).await.map_err(transport)?;
            let index = consul::read_modify_index(status.as_u16(), &body)?.unwrap_or(0);
            let put = consul::put_request(&self.agent, self.token.as_deref(), entry, Some(index))?;
            let (status, body) = self.http.request(put).await.map_err(transport)?;
            match consul::read_put_answer(status.as_u16(), &body, Some(index)) {
                Err(e @ ConsulError::Stale(_)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// Tells Consul the plan's clusters (once) and these weights.
    pub async fn apply(
        &mut self,
        plan: &Plan,
        weights: &BTreeMap<String, u32>,
    ) -> Result<(), ConsulError> {
        if !self.resolver_written {
            let resolver = consul::resolver_entry(plan, &self.service);
            self.write_cas("service-resolver", &resolver).await?;
            self.resolver_written = true;
        }
        let splitter = consul::splitter_entry(plan, &self.service, weights);
        self.write_cas("service-splitter", &splitter).await
    }
}

/// Where the Cloudflare layer writes.
#[derive(Clone, PartialEq, Eq)]
pub struct CloudflareTarget {
    pub kv: KvTarget,
    /// `CLOUDFLARE_API_TOKEN`: needs the Workers KV Storage write
    /// permission on the account.
    pub token: String,
    /// The API's base URL ([`cloudflare::API`]; the tests' server).
    pub api: String,
    /// Trusted CAs for the API (the system's by default).
    pub roots: Roots,
}

impl std::fmt::Debug for CloudflareTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("CloudflareTarget")
            .field("kv", &self.kv)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// Cloudflare Workers KV as a layer: see the module doc.
#[derive(Debug)]
pub struct CloudflareLayer {
    https: Https,
    target: CloudflareTarget,
    /// The newest routes document not yet written, with its weights.
    pending: Option<(BTreeMap<String, u32>, String)>,
}

impl CloudflareLayer {
    /// Checks the ids and the TLS settings; nothing is sent.
    pub fn new(
        target: CloudflareTarget,
        timeout: std::time::Duration,
    ) -> Result<CloudflareLayer, String> {
        cloudflare::check_ids(&target.kv).map_err(|e| e.to_string())?;
        if http::HeaderValue::from_str(&format!("Bearer {}", target.token)).is_err()
            || target.token.is_empty()
        {
            return Err(CloudflareError::BadToken.to_string());
        }
        let https =
            Https::new(&target.roots, None, "cloudflare", timeout).map_err(|e| e.to_string())?;
        Ok(CloudflareLayer {
            https,
            target,
            pending: None,
        })
    }

    /// Writes the routes document of these weights (replacing any write
    /// still pending).
    pub async fn apply(
        &mut self,
        plan: &Plan,
        weights: &BTreeMap<String, u32>,
    ) -> Result<(), CloudflareError> {
        let doc = cloudflare::routes_json(plan, weights, &self.target.kv)?;
        self.pending = Some((weights.clone(), doc));
        self.flush().await.unwrap_or(Ok(()))
    }

    /// True while a document waits to be written again.
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Sends the pending document, if any: `None` when there was none.
    /// A rate limit, a 5xx or no answer keeps it for the next call.
    pub async fn flush(&mut self) -> Option<Result<(), CloudflareError>> {
        let (_, doc) = self.pending.as_ref()?;
        let r = self.write(doc).await;
        let keep = matches!(
            &r,
            Err(CloudflareError::Unreachable(_))
                | Err(CloudflareError::Refused {
                    status: 429 | 500..=599,
                    ..
                })
                | Err(CloudflareError::Unreadable {
                    status: 429 | 500..=599
                })
        );
        if !keep {
            self.pending = None;
        }
        Some(r)
    }

    async fn write(&self, doc: &str) -> Result<(), CloudflareError> {
        let req = cloudflare::write_request_at(
            &self.target.api,
            &self.target.kv,
            &self.target.token,
            doc,
        )?;
        let (status, body) = self
            .https
            .send(req)
            .await
            .map_err(|e| CloudflareError::Unreachable(e.to_string()))?;
        cloudflare::read_answer(status.as_u16(), &body)
    }
}
