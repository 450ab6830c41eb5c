//! The Kubernetes layer of a release, as requests to the API server and
//! readings of its answers: what the source's `canary.sh` did by hand
//! (restart a cluster's nodes by patching their pod template's
//! annotation), scaling a cold cluster up from 0, waiting until its pods
//! are ready, and draining a machine (cordon, then evict each pod, which
//! a PodDisruptionBudget may refuse with 429 until it is safe). Pure: the
//! requests are values, sent by the actuator (`kube_actuator`, over
//! `https`) with the credentials of the cluster's kubeconfig context
//! (`kubeconfig`); no clock (the restart stamp is given).
//!
//! Written against the Kubernetes API reference (apps/v1 StatefulSet and
//! its `scale` subresource, core/v1 Node and Pod, policy/v1 Eviction);
//! no API server runs on the build machines, so the tests check these
//! requests and recorded answers, and `tests/https_actuators.rs` sends them
//! over real TLS to a server in the test that answers with those shapes.
//! Six calls did not justify kube-rs and k8s-openapi in a build that runs
//! on two cores.

use serde::Deserialize;
use serde_json::{json, Value};

/// Why a Kubernetes call did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    #[error("kubernetes: {field}: {value:?} is not a valid name (RFC 1123 subdomain)")]
    BadName { field: &'static str, value: String },
    #[error("kubernetes: the API server URL must be https://host[:port], got {0:?}")]
    BadUrl(String),
    #[error("kubernetes: the token is not a valid header value")]
    BadToken,
    #[error("kubernetes: {0} not found")]
    NotFound(String),
    #[error("kubernetes: eviction of {0} refused for now (a PodDisruptionBudget): retry")]
    Blocked(String),
    #[error("kubernetes: HTTP {status}: {reason}: {message}")]
    Refused {
        status: u16,
        reason: String,
        message: String,
    },
    #[error("kubernetes: unreadable answer: {0}")]
    Unreadable(String),
}

/// The API server and the credentials for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Api {
    /// `https://host[:port]`.
    pub server: String,
    /// The bearer token; empty: none sent (a client certificate
    /// authenticates instead).
    pub token: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Api")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A DNS-1123 subdomain: what Kubernetes accepts as a namespace, pod or
/// node name (dot-separated labels of lowercase alphanumerics and "-", each
/// 1 to 63 with alphanumeric ends, 253 in all).
pub fn check_name(field: &'static str, v: &str) -> Result<(), KubeError> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(KubeError::BadName {
            field,
            value: v.to_owned(),
        })
    }
}

impl Api {
    fn url(&self, path: &str) -> Result<String, KubeError> {
        let s = self.server.trim_end_matches('/');
        let host = s
            .strip_prefix("https://")
            .ok_or_else(|| KubeError::BadUrl(self.server.clone()))?;
        if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
            return Err(KubeError::BadUrl(self.server.clone()));
        }
        Ok(format!("{s}{path}"))
    }

    fn request(
        &self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<http::Request<Vec<u8>>, KubeError> {
        let mut r = http::Request::builder()
            .method(method)
            .uri(self.url(path)?)
            .header(http::header::ACCEPT, "application/json");
        if !self.token.is_empty() {
            r = r.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        }
        if let Some(ct) = content_type {
            r = r.header(http::header::CONTENT_TYPE, ct);
        }
        r.body(body.map_or_else(Vec::new, |b| b.to_string().into_bytes()))
            .map_err(|_| KubeError::BadToken)
    }

    /// Restarts every pod of a StatefulSet, one at a time by its update
    /// strategy, as `kubectl rollout restart` does (and `canary.sh` did):
    /// a strategic merge patch of the pod template's
    /// `kubectl.kubernetes.io/restartedAt` annotation to `at` (RFC 3339).
    pub fn restart(
        &self,
        ns: &str,
        statefulset: &str,
        at: &str,
    ) -> Result<http::Request<Vec<u8>>, KubeError> {
        check_name("namespace", ns)?;
        check_name("statefulset", statefulset)?;
        let body = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": at
        }}}}});
        self.request(
            http::Method::PATCH,
            &format!("/apis/apps/v1/namespaces/{ns}/statefulsets/{statefulset}"),
            Some("application/strategic-merge-patch+json"),
            Some(&body),
        )
    }

    /// Sets a StatefulSet's replicas through its `scale` subresource (a
    /// cold cluster goes from 0 to its size).
    pub fn scale(
        &self,
        ns: &str,
        statefulset: &str,
        replicas: u32,
    ) -> Result<http::Request<Vec<u8>>, KubeError> {
        check_name("namespace", ns)?;
        check_name("statefulset", statefulset)?;
        self.request(
            http::Method::PATCH,
            &format!("/apis/apps/v1/namespaces/{ns}/statefulsets/{statefulset}/scale"),
            Some("application/merge-patch+json"),
            Some(&json!({"spec": {"replicas": replicas}})),
        )
    }

    /// Reads a StatefulSet (for [`rollout_state`]).
    pub fn get_statefulset(
        &self,
        ns: &str,
        statefulset: &str,
    ) -> Result<http::Request<Vec<u8>>, KubeError> {
        check_name("namespace", ns)?;
        check_name("statefulset", statefulset)?;
        self.request(
            http::Method::GET,
            &format!("/apis/apps/v1/namespaces/{ns}/statefulsets/{statefulset}"),
            None,
            None,
        )
    }

    /// Marks a machine unschedulable (the first step of a drain).
    pub fn cordon(&self, node: &str) -> Result<http::Request<Vec<u8>>, KubeError> {
        check_name("node", node)?;
        self.request(
            http::Method::PATCH,
            &format!("/api/v1/nodes/{node}"),
            Some("application/strategic-merge-patch+json"),
            Some(&json!({"spec": {"unschedulable": true}})),
        )
    }

    /// Lists the pods on a machine (to evict them).
    pub fn pods_on(&self, node: &str) -> Result<http::Request<Vec<u8>>, KubeError> {
        check_name("node", node)?;
        self.request(
            http::Method::GET,
            &format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"),
            None,
            None,
        )
    }

    /// Asks to evict one pod: the API server honours PodDisruptionBudgets
    /// (429 while evicting would break one).
    pub fn evict(&self, ns: &str, pod: &str) -> Result<http::Request<Vec<u8>>, KubeError> {
        check_name("namespace", ns)?;
        check_name("pod", pod)?;
        let body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": ns}
        });
        self.request(
            http::Method::POST,
            &format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction"),
            Some("application/json"),
            Some(&body),
        )
    }
}

/// Where a StatefulSet stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutState {
    pub replicas: u32,
    pub ready: u32,
    /// The controller has seen the newest spec and every pod runs it.
    pub updated: bool,
}

impl RolloutState {
    /// Every wanted pod ready on the newest spec (and at least one wanted).
    pub fn done(&self) -> bool {
        self.replicas > 0 && self.ready == self.replicas && self.updated
    }
}

#[derive(Deserialize)]
struct Sts {
    metadata: StsMeta,
    spec: StsSpec,
    #[serde(default)]
    status: StsStatus,
}
#[derive(Deserialize)]
struct StsMeta {
    #[serde(default)]
    generation: u64,
}
#[derive(Deserialize)]
struct StsSpec {
    #[serde(default)]
    replicas: u32,
}
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StsStatus {
    #[serde(default)]
    observed_generation: u64,
    #[serde(default)]
    ready_replicas: u32,
    #[serde(default)]
    updated_replicas: u32,
    #[serde(default)]
    current_revision: String,
    #[serde(default)]
    update_revision: String,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// Turns a non-2xx answer into an error, from its `Status` object.
pub fn check(status: u16, body: &[u8], what: &str) -> Result<(), KubeError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let s: Status = serde_json::from_slice(body).unwrap_or(Status {
        reason: String::new(),
        message: String::from_utf8_lossy(body).chars().take(200).collect(),
    });
    Err(match status {
        404 => KubeError::NotFound(what.to_owned()),
        429 => KubeError::Blocked(what.to_owned()),
        _ => KubeError::Refused {
            status,
            reason: s.reason,
            message: s.message,
        },
    })
}

/// Reads a StatefulSet answer into where its rollout stands.
pub fn rollout_state(status: u16, body: &[u8]) -> Result<RolloutState, KubeError> {
    check(status, body, "statefulset")?;
    let s: Sts = serde_json::from_slice(body).map_err(|e| KubeError::Unreadable(e.to_string()))?;
    let updated = s.status.observed_generation >= s.metadata.generation
        && s.status.updated_replicas == s.spec.replicas
        && (s.status.update_revision.is_empty()
            || s.status.current_revision == s.status.update_revision);
    Ok(RolloutState {
        replicas: s.spec.replicas,
        ready: s.status.ready_replicas,
        updated,
    })
}

/// The pods (namespace, name) of a pod list, leaving out DaemonSet pods
/// (as `kubectl drain --ignore-daemonsets` does) and pods already gone.
pub fn pods_to_evict(status: u16, body: &[u8]) -> Result<Vec<(String, String)>, KubeError> {
    check(status, body, "pod list")?;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| KubeError::Unreadable(e.to_string()))?;
    let items = v["items"]
        .as_array()
        .ok_or_else(|| KubeError::Unreadable("no items".into()))?;
    let mut out = Vec::new();
    for p in items {
        let m = &p["metadata"];
        let daemon = m["ownerReferences"]
            .as_array()
            .is_some_and(|o| o.iter().any(|r| r["kind"] == "DaemonSet"));
        let gone = m.get("deletionTimestamp").is_some_and(|t| !t.is_null());
        if daemon || gone {
            continue;
        }
        if let (Some(ns), Some(name)) = (m["namespace"].as_str(), m["name"].as_str()) {
            out.push((ns.to_owned(), name.to_owned()));
        }
    }
    Ok(out)
}
