//! Layers that follow the edges' weights. The Tandem edges are the layer
//! that gives the 5 s rollback; a mesh or a CDN in front or beside them
//! is told the same weights once the edges carry them. Today: Consul
//! (`--consul URL`), which writes the `service-resolver` once and the
//! `service-splitter` on every change, each with check-and-set on the
//! entry's `ModifyIndex` read just before (a concurrent writer makes the
//! write fail; it is read again and retried, at most a few times).

use std::collections::BTreeMap;

use tandem_control::client::{ControlError, Http};

use crate::consul::{self, ConsulError};
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
