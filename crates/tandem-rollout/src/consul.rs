//! The Consul layer of a weight change: a `service-resolver` config entry
//! with one subset per cluster (nodes registered with `meta.cluster`), a
//! `service-splitter` entry that splits by the plan's weights, the agent
//! API request that writes one (`PUT /v1/config`, check-and-set on the
//! entry's `ModifyIndex`, so a write based on an old entry is refused as
//! the edges refuse a stale generation), and the reading of the answers.
//! Pure: the requests are values, sent by the actuator. No Consul agent
//! runs on the build machines; the shapes are those of Consul's HTTP API
//! reference, checked by tests.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::plan::Plan;

/// Why a Consul write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsulError {
    #[error("consul: the agent URL must be http(s)://host[:port], got {0:?}")]
    BadUrl(String),
    #[error("consul: the token is not a valid header value")]
    BadToken,
    #[error("consul: the entry changed since index {0} (check-and-set refused); read it again")]
    Stale(u64),
    #[error("consul: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("consul: unreadable answer: {0}")]
    Unreadable(String),
}

/// `service-resolver`: one subset per cluster of the plan, selected by the
/// node's service metadata; the first stable cluster is the default.
pub fn resolver_entry(plan: &Plan, service: &str) -> Value {
    let subsets: serde_json::Map<String, Value> = plan
        .clusters
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                json!({ "Filter": format!("Service.Meta.cluster == {}", c.name) }),
            )
        })
        .collect();
    let default = plan
        .clusters
        .iter()
        .find(|c| c.version == crate::plan::Version::Stable)
        .map_or("", |c| c.name.as_str());
    json!({
        "Kind": "service-resolver",
        "Name": service,
        "DefaultSubset": default,
        "Subsets": subsets,
    })
}

/// `service-splitter`: the weights, one split per cluster, in the plan's
/// order (they sum to 100, as Consul requires).
pub fn splitter_entry(plan: &Plan, service: &str, weights: &BTreeMap<String, u32>) -> Value {
    let splits: Vec<Value> = plan
        .clusters
        .iter()
        .map(|c| {
            json!({
                "Weight": weights.get(&c.name).copied().unwrap_or(0),
                "ServiceSubset": c.name,
            })
        })
        .collect();
    json!({ "Kind": "service-splitter", "Name": service, "Splits": splits })
}

fn base(agent: &str) -> Result<&str, ConsulError> {
    let trimmed = agent.trim_end_matches('/');
    let host = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| ConsulError::BadUrl(agent.to_owned()))?;
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
        return Err(ConsulError::BadUrl(agent.to_owned()));
    }
    Ok(trimmed)
}

/// `PUT {agent}/v1/config[?cas=INDEX]` with the entry as the body and the
/// ACL token in `X-Consul-Token`. With `cas`, Consul writes only if the
/// entry's `ModifyIndex` is still `cas` (0: only if it does not exist).
pub fn put_request(
    agent: &str,
    token: Option<&str>,
    entry: &Value,
    cas: Option<u64>,
) -> Result<http::Request<Vec<u8>>, ConsulError> {
    let mut url = format!("{}/v1/config", base(agent)?);
    if let Some(i) = cas {
        url.push_str(&format!("?cas={i}"));
    }
    let mut r = http::Request::put(url).header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header("X-Consul-Token", t);
    }
    r.body(entry.to_string().into_bytes())
        .map_err(|_| ConsulError::BadToken)
}

/// `GET {agent}/v1/config/{kind}/{name}`: the entry and its `ModifyIndex`.
pub fn get_request(
    agent: &str,
    token: Option<&str>,
    kind: &str,
    name: &str,
) -> Result<http::Request<Vec<u8>>, ConsulError> {
    let url = format!("{}/v1/config/{kind}/{name}", base(agent)?);
    let mut r = http::Request::get(url);
    if let Some(t) = token {
        r = r.header("X-Consul-Token", t);
    }
    r.body(Vec::new()).map_err(|_| ConsulError::BadToken)
}

/// Reads the answer to a `PUT /v1/config`: Consul answers `true` when it
/// wrote, `false` when a check-and-set found another index.
pub fn read_put_answer(status: u16, body: &[u8], cas: Option<u64>) -> Result<(), ConsulError> {
    if !(200..300).contains(&status) {
        return Err(ConsulError::Refused {
            status,
            body: String::from_utf8_lossy(body).chars().take(200).collect(),
        });
    }
    match serde_json::from_slice::<bool>(body) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ConsulError::Stale(cas.unwrap_or(0))),
        Err(e) => Err(ConsulError::Unreadable(e.to_string())),
    }
}

#[derive(Deserialize)]
struct Indexed {
    #[serde(rename = "ModifyIndex")]
    modify_index: u64,
}

/// The `ModifyIndex` of an entry read back (`None` for a 404: no entry yet,
/// so a check-and-set write uses index 0).
pub fn read_modify_index(status: u16, body: &[u8]) -> Result<Option<u64>, ConsulError> {
    match status {
        404 => Ok(None),
        200..=299 => serde_json::from_slice::<Indexed>(body)
            .map(|i| Some(i.modify_index))
            .map_err(|e| ConsulError::Unreadable(e.to_string())),
        _ => Err(ConsulError::Refused {
            status,
            body: String::from_utf8_lossy(body).chars().take(200).collect(),
        }),
    }
}
