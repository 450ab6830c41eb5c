//! The edge's configuration: listeners, clusters (name, version, role,
//! weight, nodes with their zones), health checking, retries and upstream
//! connection settings. Read from TOML (`deploy/edge/tandem-edge.toml` is
//! the commented default) and checked; weights and node sets can later be
//! changed live through the admin API or by reloading the file. A reload
//! applies live the settings in [`APPLIED_LIVE`] and reports every other
//! changed setting as needing a restart ([`changed_settings`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which release a cluster runs, for `x-dex-version` pinning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Stable,
    Canary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
        }
    }
}

/// One node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddr {
    /// `host:port` of the node's API listener.
    pub addr: String,
    /// The zone it runs in (nearest healthy zone first).
    pub zone: String,
}

/// One cluster: a set of nodes running one version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    /// Build version the cluster runs (reported in metrics).
    pub version: String,
    pub role: Role,
    /// Share of traffic, relative to the other clusters' weights.
    pub weight: u32,
    pub nodes: Vec<NodeAddr>,
}

/// Active and passive health checking.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// `GET /readyz` on every node this often.
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Passive outlier ejection: this many failures in a row (connect
    /// errors, 502/503/504) take a node out...
    pub eject_after_failures: u32,
    /// ...for this long (then an active check must pass again).
    pub eject_ms: u64,
}

/// Retries of failed requests on another node.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Retries may add at most this fraction of the request rate...
    pub budget_ratio: f64,
    /// ...plus this many retries per second, so retries cannot amplify an
    /// outage into a storm.
    pub budget_min_per_s: u32,
    /// Pause before a retry.
    pub backoff_ms: u64,
}

/// Connections to the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Idle pooled connections are closed after this; it must be shorter
    /// than the nodes' own idle timeout (620 s by default) so the edge
    /// never sends on a connection the node is closing (the source's
    /// keep-alive 502s).
    pub pool_idle_secs: u64,
    pub pool_max_idle_per_node: usize,
    pub connect_timeout_ms: u64,
    /// Whole request to a node, answer included.
    pub request_timeout_ms: u64,
    /// HTTP/2 (gRPC) pings to nodes: interval and timeout.
    pub h2_keepalive_interval_secs: u64,
    pub h2_keepalive_timeout_secs: u64,
    /// TLS to every node (`[upstream.tls]`); absent: plaintext.
    pub tls: Option<UpstreamTls>,
}

/// TLS from the edge to its nodes: the nodes' certificates are verified
/// against `ca` for the host of each node's address (or `server_name`),
/// and with `cert` and `key` the edge presents a client certificate
/// (mutual TLS: a node with `tls.client_ca` accepts only its edges).
/// Read at start (and at a hand-over, by the successor).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM CA certificates the nodes' certificates must chain to.
    pub ca: PathBuf,
    /// The edge's client certificate (PEM chain) and key: both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The name the nodes' certificates are checked for, when it is not
    /// the host of their addresses (one name for every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl UpstreamTls {
    pub fn files(&self) -> tandem_conn::tls::ClientFiles {
        tandem_conn::tls::ClientFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: self.server_name.clone(),
            section: "upstream.tls".into(),
        }
    }
}

/// TLS on a listener of the edge (`[tls]` public, `[admin_tls]` admin).
/// HTTP/2 or HTTP/1.1 by ALPN. SIGHUP reads the files again (new
/// connections get the new certificate, open ones keep theirs; files that
/// do not load keep the old one, logged).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first, and its private key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM CA certificates: when set, clients must present a certificate
    /// issued by one of them. On `[admin_tls]` the admin API then wants
    /// both a client certificate and the token, and logs the
    /// certificate's subject with every change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

impl ListenerTls {
    pub fn files(&self, section: &str) -> tandem_conn::tls::ServerFiles {
        tandem_conn::tls::ServerFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
            section: section.into(),
        }
    }
}

/// Bounds on what clients control.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeLimits {
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout_secs: u64,
    /// Client keep-alive connections idle this long are closed.
    pub idle_timeout_secs: u64,
}

/// Everything the edge reads at start.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    pub config_version: u32,
    /// Public listener (HTTP/1.1 and HTTP/2).
    pub listen: SocketAddr,
    /// Admin listener (weights, nodes, reload); keep it off the public
    /// network.
    pub admin_listen: SocketAddr,
    /// Bearer token of the admin API; empty = read `TANDEM_EDGE_ADMIN_TOKEN`.
    pub admin_token: String,
    /// The zone this edge runs in: nodes there are tried first.
    pub zone: String,
    pub clusters: Vec<ClusterConfig>,
    pub health: HealthConfig,
    pub retry: RetryConfig,
    pub upstream: UpstreamConfig,
    pub limits: EdgeLimits,
    /// On SIGTERM (or after handing the listener to a new process): how
    /// long in-flight requests may take.
    pub drain_timeout_secs: u64,
    /// Worker threads serving the public listener, each with its own
    /// single-threaded runtime (0 = one per CPU); the admin listener and
    /// the health checks run on one more thread.
    pub worker_threads: usize,
    /// TLS on the public listener; absent: plaintext.
    pub tls: Option<ListenerTls>,
    /// TLS on the admin listener; absent: plaintext.
    pub admin_tls: Option<ListenerTls>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: 1_000,
            timeout_ms: 500,
            eject_after_failures: 3,
            eject_ms: 5_000,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            budget_ratio: 0.2,
            budget_min_per_s: 20,
            backoff_ms: 2,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            pool_idle_secs: 60,
            pool_max_idle_per_node: 256,
            connect_timeout_ms: 1_000,
            request_timeout_ms: 10_000,
            h2_keepalive_interval_secs: 30,
            h2_keepalive_timeout_secs: 20,
            tls: None,
        }
    }
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            max_body_bytes: 16 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 20_000,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 300,
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            config_version: 1,
            listen: "127.0.0.1:8000".parse().expect("literal address"),
            admin_listen: "127.0.0.1:8001".parse().expect("literal address"),
            admin_token: String::new(),
            zone: "local-a".into(),
            clusters: vec![ClusterConfig {
                name: "local".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                role: Role::Stable,
                weight: 100,
                nodes: vec![NodeAddr {
                    addr: "127.0.0.1:8080".into(),
                    zone: "local-a".into(),
                }],
            }],
            health: HealthConfig::default(),
            retry: RetryConfig::default(),
            upstream: UpstreamConfig::default(),
            limits: EdgeLimits::default(),
            drain_timeout_secs: 20,
            worker_threads: 0,
            tls: None,
            admin_tls: None,
        }
    }
}

/// The environment variable that gives the admin token when the file has
/// none.
pub const ADMIN_TOKEN_ENV: &str = "TANDEM_EDGE_ADMIN_TOKEN";

/// Settings a reload applies to the running edge (dotted names as
/// [`changed_settings`] reports them). Any other changed setting takes
/// effect at the next start or hand-over.
pub const APPLIED_LIVE: [&str; 3] = ["clusters", "admin_token", "limits.max_body_bytes"];

/// The settings that differ between `old` and `new`, as dotted names in
/// name order (`limits.max_body_bytes`); the cluster list counts as one
/// setting, `clusters`. Values are not reported (the token is a secret).
pub fn changed_settings(old: &EdgeConfig, new: &EdgeConfig) -> Vec<String> {
    fn flatten(
        prefix: &str,
        v: &serde_json::Value,
        out: &mut std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        match v {
            serde_json::Value::Object(m) if prefix != "clusters" => {
                for (k, v) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&name, v, out);
                }
            }
            // An absent optional section: its fields, once given, are
            // the settings that changed.
            serde_json::Value::Null => {}
            _ => {
                out.insert(prefix.to_owned(), v.clone());
            }
        }
    }
    let (mut a, mut b) = (Default::default(), Default::default());
    if let (Ok(x), Ok(y)) = (serde_json::to_value(old), serde_json::to_value(new)) {
        flatten("", &x, &mut a);
        flatten("", &y, &mut b);
    }
    let mut names: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
    names.sort();
    names.dedup();
    names.retain(|k| a.get(k) != b.get(k));
    names
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl EdgeConfig {
    /// Reads and checks `path`, or the defaults when `None`.
    pub fn load(path: Option<&Path>) -> Result<EdgeConfig, ConfigError> {
        let cfg = match path {
            None => EdgeConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                EdgeConfig::parse(&text).map_err(|message| ConfigError::Parse {
                    path: p.to_path_buf(),
                    message,
                })?
            }
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Fills in what the environment gives (`env` looks a variable up):
    /// the admin token from [`ADMIN_TOKEN_ENV`] when the file sets none.
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> EdgeConfig {
        if self.admin_token.is_empty() {
            self.admin_token = env(ADMIN_TOKEN_ENV).unwrap_or_default();
        }
        self
    }

    pub fn parse(text: &str) -> Result<EdgeConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Rejects a config that cannot route, naming the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |field: String, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.into(),
            })
        };
        if self.config_version != 1 {
            return bad("config_version".into(), "only version 1 exists");
        }
        check_clusters(&self.clusters)?;
        if self.retry.max_attempts == 0 || self.retry.max_attempts > 10 {
            return bad("retry.max_attempts".into(), "must be 1..=10");
        }
        if !(0.0..=1.0).contains(&self.retry.budget_ratio) {
            return bad("retry.budget_ratio".into(), "must be within 0..=1");
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections".into(), "must be at least 1");
        }
        if self.health.interval_ms == 0 {
            return bad("health.interval_ms".into(), "must be at least 1");
        }
        if let Some(t) = &self.upstream.tls {
            if t.cert.is_some() != t.key.is_some() {
                return bad(
                    "upstream.tls.cert".into(),
                    "cert and key go together: give both or neither",
                );
            }
        }
        Ok(())
    }
}

/// Checks a cluster list (also used for live changes).
pub fn check_clusters(clusters: &[ClusterConfig]) -> Result<(), ConfigError> {
    let bad = |field: String, message: &str| {
        Err(ConfigError::Invalid {
            field,
            message: message.into(),
        })
    };
    if clusters.is_empty() {
        return bad("clusters".into(), "at least one cluster is needed");
    }
    if clusters.len() > 64 {
        return bad("clusters".into(), "at most 64 clusters");
    }
    for (i, c) in clusters.iter().enumerate() {
        if c.name.is_empty() || c.name.len() > 64 {
            return bad(format!("clusters[{i}].name"), "must be 1 to 64 bytes");
        }
        if clusters[..i].iter().any(|o| o.name == c.name) {
            return bad(format!("clusters[{i}].name"), "names must be unique");
        }
        if c.weight > 1_000_000 {
            return bad(format!("clusters[{i}].weight"), "at most 1000000");
        }
        if c.nodes.len() > 1024 {
            return bad(format!("clusters[{i}].nodes"), "at most 1024 nodes");
        }
        for (j, n) in c.nodes.iter().enumerate() {
            if n.addr.parse::<SocketAddr>().is_err() && !n.addr.contains(':') {
                return bad(
                    format!("clusters[{i}].nodes[{j}].addr"),
                    "must be host:port",
                );
            }
        }
    }
    if clusters.iter().all(|c| c.weight == 0) {
        return bad(
            "clusters".into(),
            "at least one cluster needs a weight above 0",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_file_parses_and_checks() {
        let text = include_str!("../../../deploy/edge/tandem-edge.toml");
        let cfg = EdgeConfig::parse(text).unwrap();
        cfg.check().unwrap();
        assert_eq!(cfg.clusters.len(), 3);
    }

    #[test]
    fn bad_clusters_name_the_field() {
        let mut cfg = EdgeConfig::default();
        cfg.clusters[0].weight = 0;
        assert!(cfg
            .check()
            .unwrap_err()
            .to_string()
            .contains("weight above 0"));
        let mut cfg = EdgeConfig::default();
        cfg.clusters.push(cfg.clusters[0].clone());
        assert!(cfg
            .check()
            .unwrap_err()
            .to_string()
            .contains("clusters[1].name"));
        let err = EdgeConfig::parse("[retry]\nmax_attempts = \"x\"\n").unwrap_err();
        assert!(err.contains("max_attempts"), "{err}");
    }

    #[test]
    fn the_admin_token_comes_from_the_environment_only_when_the_file_has_none() {
        let env = |k: &str| (k == ADMIN_TOKEN_ENV).then(|| "from-env".to_string());
        assert_eq!(EdgeConfig::default().with_env(env).admin_token, "from-env");
        let cfg = EdgeConfig {
            admin_token: "from-file".into(),
            ..EdgeConfig::default()
        };
        assert_eq!(cfg.with_env(env).admin_token, "from-file");
        assert_eq!(EdgeConfig::default().with_env(|_| None).admin_token, "");
    }

    #[test]
    fn tls_sections_are_optional_and_the_shipped_file_documents_them() {
        let cfg = EdgeConfig::default();
        assert!(cfg.tls.is_none() && cfg.admin_tls.is_none() && cfg.upstream.tls.is_none());
        // The shipped file's commented TLS sections are these structs.
        let text = include_str!("../../../deploy/edge/tandem-edge.toml");
        let section = |head: &str| -> String {
            text.lines()
                .skip_while(|l| *l != head)
                .map_while(|l| l.strip_prefix("# "))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let t = EdgeConfig::parse(&section("# [tls]")).unwrap().tls.unwrap();
        assert!(t.client_ca.is_none());
        let a = EdgeConfig::parse(&section("# [admin_tls]"))
            .unwrap()
            .admin_tls
            .unwrap();
        assert!(a.client_ca.is_some());
        let u = EdgeConfig::parse(&section("# [upstream.tls]"))
            .unwrap()
            .upstream
            .tls
            .unwrap();
        assert!(u.cert.is_some() && u.key.is_some());
        let mut cfg = EdgeConfig::default();
        cfg.upstream.tls = Some(UpstreamTls { key: None, ..u });
        assert!(cfg
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("upstream.tls.cert:"));
        let err = EdgeConfig::parse("[tls]\ncert = \"/a\"\n").unwrap_err();
        assert!(err.contains("key"), "{err}");
        // A changed path is a setting that needs a restart.
        let new = EdgeConfig {
            tls: Some(t),
            ..EdgeConfig::default()
        };
        assert_eq!(
            changed_settings(&EdgeConfig::default(), &new),
            ["tls.cert", "tls.key"]
        );
    }

    #[test]
    fn changed_settings_are_named_by_their_dotted_path() {
        let old = EdgeConfig::default();
        assert!(changed_settings(&old, &old).is_empty());
        let mut new = old.clone();
        new.admin_token = "t".into();
        new.limits.max_body_bytes += 1;
        new.listen = "127.0.0.1:9".parse().unwrap();
        new.clusters[0].weight = 7;
        new.retry.backoff_ms = 9;
        assert_eq!(
            changed_settings(&old, &new),
            [
                "admin_token",
                "clusters",
                "limits.max_body_bytes",
                "listen",
                "retry.backoff_ms"
            ]
        );
    }
}
