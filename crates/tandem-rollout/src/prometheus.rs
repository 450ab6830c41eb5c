//! The Prometheus source of observations (`metrics: { source: prometheus,
//! url: ..., interval: 1s }`): what the controller needs of every cluster
//! at one instant, read with PromQL over a Prometheus server's HTTP API
//! instead of scraping the edges and nodes itself.
//!
//! Four instant queries, all evaluated at the same `time=` so that they
//! describe one instant ([`Query`]):
//! - `sum by (cluster, status) (tandem_edge_requests_total)`: requests per
//!   cluster (every status) and errors (the `5xx` statuses);
//! - `sum by (cluster, le) (tandem_edge_request_duration_seconds_bucket)`:
//!   the latency histogram per cluster;
//! - `max by (cluster, node) (tandem_replica_lag_seqs)`: each node's
//!   replica lag, the largest over its partitions;
//! - `count by (instance) (tandem_edge_unroutable_total)`: the edges
//!   (Prometheus' `instance`, the scraped `host:port`) whose series are
//!   fresh at that instant, so a controller can judge, as with its own
//!   scrapes, only when every edge is in the sums (an edge Prometheus
//!   cannot scrape goes stale and drops out of them).
//!
//! The edge sums are over every edge Prometheus scrapes (its `instance`,
//! `job` and `zone` labels are summed away), so a Prometheus that scrapes
//! one edge under two jobs counts it twice. Values are CUMULATIVE, as a
//! direct scrape gives them: the judge takes the difference of two
//! instants itself (`WindowStats::since`), so no `rate()` or `increase()`
//! (they extrapolate, and give fractions of a request). A sum that went
//! down (an edge restarted) is then a counter reset the window sees.
//!
//! Missing series are no data, never zeros: a cluster is in
//! [`Reading::clusters`] only when Prometheus has both its request and its
//! bucket series at that instant, and a node is in [`Reading::lag`] only
//! with its gauge. A series that is not what the edge or node writes (no
//! `cluster` label, a count that is not a whole number, buckets that are
//! not cumulative) refuses the whole reading, naming the query and the
//! series: a controller must not judge on part of the data.
//!
//! The request building ([`query_url`]) and answer reading
//! ([`parse_answer`], [`assemble`]) are pure; [`PromClient`] is the thin
//! shell (hyper over tokio, a timeout on every request, a body limit).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;
use tandem_control::names::{edge, label, node};
use thiserror::Error;

use crate::judge::{Hist, JudgeError, WindowStats};

/// Most series one answer may hold.
pub const MAX_SERIES: usize = 100_000;
/// Largest answer body read.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// The label Prometheus gives every target's series: the scraped
/// `host:port` (unless relabelled).
pub const INSTANCE: &str = "instance";
/// Largest count accepted: Prometheus holds floats, exact up to 2^53.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// The instant queries the controller makes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Query {
    /// Requests per cluster and status, summed over edges.
    Requests,
    /// Cumulative latency buckets per cluster and `le`, summed over edges.
    Buckets,
    /// Replica lag per cluster and node, the largest over partitions.
    Lag,
    /// The edges with fresh series, by `instance`.
    Edges,
}

impl Query {
    /// In the order [`assemble`] takes their answers.
    pub const ALL: [Query; 4] = [Query::Requests, Query::Buckets, Query::Lag, Query::Edges];

    /// The PromQL text.
    pub fn promql(self) -> String {
        let (c, s, le, n) = (label::CLUSTER, label::STATUS, label::LE, label::NODE);
        match self {
            Query::Requests => format!("sum by ({c}, {s}) ({})", edge::REQUESTS_TOTAL),
            Query::Buckets => format!(
                "sum by ({c}, {le}) ({}_bucket)",
                edge::REQUEST_DURATION_SECONDS
            ),
            Query::Lag => format!("max by ({c}, {n}) ({})", node::REPLICA_LAG_SEQS),
            Query::Edges => format!("count by ({INSTANCE}) ({})", edge::UNROUTABLE_TOTAL),
        }
    }
}

/// Why a reading from Prometheus failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PromQueryError {
    /// The configured URL is not `http://host:port[/prefix]`.
    #[error("prometheus url {url:?}: {why}")]
    Url { url: String, why: String },
    /// No answer: connection refused or reset, or none within the timeout.
    #[error("{url}: unreachable: {cause}")]
    Unreachable { url: String, cause: String },
    /// Prometheus refused the query (`"status":"error"`).
    #[error("query {query:?}: prometheus answered {status}: {error_type}: {error}")]
    Refused {
        query: String,
        status: u16,
        error_type: String,
        error: String,
    },
    /// An answer that is not a Prometheus instant vector.
    #[error("query {query:?}: unexpected answer: {why}")]
    BadAnswer { query: String, why: String },
    /// A series that is not what the edge or node writes.
    #[error("query {query:?}: series {series}: {why}")]
    BadSeries {
        query: String,
        series: String,
        why: String,
    },
    /// A cluster's buckets do not make a histogram.
    #[error("cluster {cluster}: {source}")]
    Hist { cluster: String, source: JudgeError },
}

/// One series of an instant vector: its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What Prometheus holds at one instant, in the scrape source's shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    /// Per cluster the edges report: cumulative requests, errors (5xx)
    /// and latency histogram, summed over edges.
    pub clusters: BTreeMap<String, WindowStats>,
    /// Per cluster, per node name: the replica lag in commands (the
    /// largest over the node's partitions).
    pub lag: BTreeMap<String, BTreeMap<String, u64>>,
    /// The edges in the sums, by Prometheus' `instance` label (for an
    /// edge scraped at its admin listener, that listener's `host:port`).
    pub edges: BTreeSet<String>,
}

/// `base` checked and without its trailing slash: `http://host:port`,
/// optionally with a path prefix (`--web.route-prefix`), no query.
pub fn base_url(base: &str) -> Result<String, PromQueryError> {
    tandem_control::client::base_url(base).map_err(|e| PromQueryError::Url {
        url: base.to_owned(),
        why: e.to_string(),
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `GET {base}/api/v1/query?query=...&time=...`: `promql` evaluated at
/// `time_ms` (milliseconds since the Unix epoch). `base` as
/// [`base_url`] returns it.
pub fn query_url(base: &str, promql: &str, time_ms: u64) -> String {
    format!(
        "{base}/api/v1/query?query={}&time={}.{:03}",
        encode(promql),
        time_ms / 1000,
        time_ms % 1000
    )
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    value: (f64, String),
}

/// A sample value as Prometheus writes it (`"123"`, `"1e+06"`, `"NaN"`,
/// `"+Inf"`, `"-Inf"`).
fn float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if !s.is_empty()
            && s.bytes()
                .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c)) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Reads one answer of `GET /api/v1/query` (its HTTP status and body)
/// into the series of an instant vector. `query` names it in errors.
pub fn parse_answer(query: &str, status: u16, body: &[u8]) -> Result<Vec<Series>, PromQueryError> {
    let bad = |why: String| PromQueryError::BadAnswer {
        query: query.to_owned(),
        why,
    };
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
        bad(format!(
            "HTTP {status}, not a Prometheus answer ({e}): {text}"
        ))
    })?;
    if answer.status != "success" {
        return Err(PromQueryError::Refused {
            query: query.to_owned(),
            status,
            error_type: answer.error_type.unwrap_or_else(|| "unknown".into()),
            error: answer
                .error
                .unwrap_or_else(|| format!("status {:?}", answer.status)),
        });
    }
    if status != 200 {
        return Err(bad(format!("HTTP {status} with status success")));
    }
    let data = answer.data.ok_or_else(|| bad("no data".into()))?;
    if data.result_type != "vector" {
        return Err(bad(format!(
            "resultType {:?}, expected \"vector\"",
            data.result_type
        )));
    }
    let n = data.result.as_array().map_or(0, Vec::len);
    if n > MAX_SERIES {
        return Err(bad(format!(
            "{n} series, more than the limit of {MAX_SERIES}"
        )));
    }
    let samples: Vec<VectorSample> =
        serde_json::from_value(data.result).map_err(|e| bad(format!("result: {e}")))?;
    samples
        .into_iter()
        .map(|s| {
            let value = float(&s.value.1).ok_or_else(|| PromQueryError::BadSeries {
                query: query.to_owned(),
                series: show(&s.metric),
                why: format!("value {:?} is not a number", s.value.1),
            })?;
            Ok(Series {
                labels: s.metric,
                value,
            })
        })
        .collect()
}

/// `{a="x", b="y"}` for errors.
fn show(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// The reading of one query's series, for errors naming them.
struct Reader<'a> {
    query: Query,
    series: &'a Series,
}

impl Reader<'_> {
    fn err(&self, why: String) -> PromQueryError {
        PromQueryError::BadSeries {
            query: self.query.promql(),
            series: show(&self.series.labels),
            why,
        }
    }

    fn label(&self, name: &str) -> Result<&str, PromQueryError> {
        match self.series.labels.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(self.err(format!("no {name} label"))),
        }
    }

    /// The value as a count: a whole number from 0 to 2^53.
    fn count(&self) -> Result<u64, PromQueryError> {
        let v = self.series.value;
        if !(0.0..=MAX_EXACT).contains(&v) || v.fract() != 0.0 {
            return Err(self.err(format!("value {v} is not a count")));
        }
        Ok(v as u64)
    }
}

fn add(r: &Reader, a: u64, b: u64) -> Result<u64, PromQueryError> {
    a.checked_add(b)
        .ok_or_else(|| r.err("the sum overflows".into()))
}

/// One instant's answers (to [`Query::ALL`], in that order) into a
/// [`Reading`]: see the module doc for what counts as no data.
pub fn assemble(
    requests: &[Series],
    buckets: &[Series],
    lag: &[Series],
    edges: &[Series],
) -> Result<Reading, PromQueryError> {
    // Requests and 5xx per cluster.
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for series in requests {
        let r = Reader {
            query: Query::Requests,
            series,
        };
        let cluster = r.label(label::CLUSTER)?;
        let status = r.label(label::STATUS)?;
        if status.len() != 3 || !status.bytes().all(|c| c.is_ascii_digit()) {
            return Err(r.err(format!("status {status:?} is not an HTTP status")));
        }
        let n = r.count()?;
        let e = counts.entry(cluster.to_owned()).or_default();
        e.0 = add(&r, e.0, n)?;
        if status.starts_with('5') {
            e.1 = add(&r, e.1, n)?;
        }
    }
    // Cumulative buckets per cluster.
    let mut hist: BTreeMap<String, Vec<(f64, u64)>> = BTreeMap::new();
    for series in buckets {
        let r = Reader {
            query: Query::Buckets,
            series,
        };
        let cluster = r.label(label::CLUSTER)?;
        let le = r.label(label::LE)?;
        let le = float(le)
            .filter(|b| !b.is_nan())
            .ok_or_else(|| r.err(format!("le {le:?} is not a bound")))?;
        let n = r.count()?;
        hist.entry(cluster.to_owned()).or_default().push((le, n));
    }
    let mut clusters = BTreeMap::new();
    for (cluster, (requests, errors)) in counts {
        let Some(b) = hist.get(&cluster) else {
            continue;
        };
        let latency = Hist::from_cumulative(b).map_err(|source| PromQueryError::Hist {
            cluster: cluster.clone(),
            source,
        })?;
        clusters.insert(
            cluster,
            WindowStats {
                requests,
                errors,
                latency,
                appends: None,
            },
        );
    }
    // Lag per node.
    let mut lags: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for series in lag {
        let r = Reader {
            query: Query::Lag,
            series,
        };
        let cluster = r.label(label::CLUSTER)?;
        let node = r.label(label::NODE)?;
        let n = r.count()?;
        let e = lags
            .entry(cluster.to_owned())
            .or_default()
            .entry(node.to_owned())
            .or_insert(0);
        *e = (*e).max(n);
    }
    // Edges.
    let mut instances = BTreeSet::new();
    for series in edges {
        let r = Reader {
            query: Query::Edges,
            series,
        };
        instances.insert(r.label(INSTANCE)?.to_owned());
    }
    Ok(Reading {
        clusters,
        lag: lags,
        edges: instances,
    })
}

/// A client of one Prometheus server's query API (over the control
/// plane's pooled HTTP client).
#[derive(Debug, Clone)]
pub struct PromClient {
    http: tandem_control::client::Http,
    base: String,
}

impl PromClient {
    /// A client of the server at `base` (`http://host:port`) whose every
    /// request must complete (connect, answer, body) within `timeout`.
    /// Needs a tokio runtime only when used.
    pub fn new(base: &str, timeout: Duration) -> Result<PromClient, PromQueryError> {
        Ok(PromClient {
            http: tandem_control::client::Http::new(timeout),
            base: base_url(base)?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `promql` evaluated at `time_ms` (Unix milliseconds): the series of
    /// the instant vector.
    pub async fn query(&self, promql: &str, time_ms: u64) -> Result<Vec<Series>, PromQueryError> {
        let url = query_url(&self.base, promql, time_ms);
        let (status, body) = self.http.get(&url).await.map_err(|e| match e {
            tandem_control::client::ControlError::Url { why, .. } => PromQueryError::Url {
                url: url.clone(),
                why,
            },
            other => PromQueryError::Unreachable {
                url: url.clone(),
                cause: other.to_string(),
            },
        })?;
        if body.len() > MAX_BODY_BYTES {
            return Err(PromQueryError::BadAnswer {
                query: promql.to_owned(),
                why: format!(
                    "an answer of {} bytes (at most {MAX_BODY_BYTES})",
                    body.len()
                ),
            });
        }
        parse_answer(promql, status.as_u16(), &body)
    }

    /// Every [`Query`] at the same instant `time_ms`, assembled.
    pub async fn read(&self, time_ms: u64) -> Result<Reading, PromQueryError> {
        let [q_req, q_buckets, q_lag, q_edges] = Query::ALL.map(Query::promql);
        let (requests, buckets, lag, edges) = tokio::join!(
            self.query(&q_req, time_ms),
            self.query(&q_buckets, time_ms),
            self.query(&q_lag, time_ms),
            self.query(&q_edges, time_ms)
        );
        assemble(&requests?, &buckets?, &lag?, &edges?)
    }
}
