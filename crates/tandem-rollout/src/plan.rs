//! The rollout plan: what a user writes (`contracts/rollout-plan.md`,
//! "The plan"), as typed values. Loading and the rules live here too, so
//! that a plan that breaks a rule is refused before anything changes,
//! naming the file, the line and the field.

use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Marker, Node, Span};

use crate::duration::{parse_duration, Show};

/// The version a cluster runs, as the plan names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Stable,
    Canary,
}

/// Whether a cluster runs at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Its nodes run before the rollout starts.
    #[default]
    Running,
    /// No node runs: the controller starts the cluster (from the newest
    /// snapshot of the log) before its first weight above 0.
    Cold,
}

/// One cluster of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub version: Version,
    pub zones: Vec<String>,
    pub start: Start,
}

/// Where observations come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsSource {
    /// The edges' and nodes' `/metrics` directly.
    Scrape { interval: Duration },
    /// PromQL over a Prometheus server's HTTP API.
    Prometheus { url: String, interval: Duration },
}

impl MetricsSource {
    pub fn interval(&self) -> Duration {
        match self {
            MetricsSource::Scrape { interval } | MetricsSource::Prometheus { interval, .. } => {
                *interval
            }
        }
    }
}

/// The gates every phase must hold. An absent gate is not judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Gates {
    /// Absolute p99 per cluster with weight > 0, in milliseconds.
    pub latency_p99_ms_max: Option<f64>,
    /// p99 of a cluster over the baseline's p99.
    pub latency_p99_vs_baseline_max: Option<f64>,
    /// 5xx and resets over requests, per cluster.
    pub error_ratio_max: Option<f64>,
    /// How far behind the log a replica may be.
    pub replica_lag_seq_max: Option<u64>,
    /// Output hash checkpoints where a canary may differ from stable: 0
    /// (the only value that makes sense; kept as the contract spells it).
    pub output_hash_divergence: u64,
    /// A cluster is judged only on at least this many requests in the
    /// window.
    pub min_requests: u64,
    /// How long a breach must last before it counts.
    pub breach_for: Duration,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    /// How long the phase holds once its weights are set (0: none).
    pub hold: Duration,
    /// Weight per cluster, in the order of [`Plan::clusters`]; clusters
    /// the phase does not name have weight 0.
    pub weights: Vec<(String, u32)>,
}

/// What to do when a gate breaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Weights of the last passed phase, or stable alone.
    Rollback,
    /// Keep the weights, stop advancing, alert.
    Pause,
}

/// A whole plan, as loaded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub release: String,
    /// In the order the file gives them.
    pub clusters: Vec<Cluster>,
    /// Base URLs of every edge's admin API.
    pub edges: Vec<String>,
    pub metrics: MetricsSource,
    /// How long stable alone is observed before the first phase.
    pub baseline_window: Duration,
    pub gates: Gates,
    pub phases: Vec<Phase>,
    pub on_failure: OnFailure,
}

// ---------------------------------------------------------------------------
// Loading and the rules.
//
// The text is read in three steps: a pre-pass over the YAML events that
// bounds what the tree may hold (one document, nesting, node count: the
// YAML parser recurses per level, so depth is checked before it builds a
// tree), the marked tree (every node keeps its line and column, mappings
// keep their order, a key written twice is an error), then a walk over the
// tree that builds the typed plan and checks every rule, naming the field.
// Nothing is defaulted silently except what the contract leaves optional.

/// The largest plan file read (a plan is a page, not a data set).
pub const MAX_PLAN_BYTES: usize = 1 << 20;
/// How deeply YAML may nest (a plan needs 4 levels: phases, a phase, its
/// weights).
pub const MAX_DEPTH: usize = 16;
/// How many YAML events (scalars, starts and ends) a plan may have.
pub const MAX_EVENTS: usize = 100_000;
pub const MAX_CLUSTERS: usize = 64;
pub const MAX_ZONES: usize = 64;
pub const MAX_EDGES: usize = 64;
pub const MAX_PHASES: usize = 100;
/// Longest cluster, zone or phase name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
pub const MAX_RELEASE_BYTES: usize = 200;
pub const MAX_URL_BYTES: usize = 2048;
/// The shortest and longest observation interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// The most requests `min_requests` may ask for.
pub const MAX_MIN_REQUESTS: u64 = 1_000_000_000;
/// `--time-scale`: a scaled baseline window is never shorter than this.
pub const SCALED_BASELINE_MIN: Duration = Duration::from_secs(10);
/// `--time-scale`: a scaled hold other than 0 is never shorter than this.
pub const SCALED_HOLD_MIN: Duration = Duration::from_secs(5);

/// The top-level keys of a plan, in the contract's order.
const TOP_KEYS: [&str; 8] = [
    "release",
    "clusters",
    "edges",
    "metrics",
    "baseline",
    "gates",
    "phases",
    "on_failure",
];
const CLUSTER_KEYS: [&str; 3] = ["version", "zones", "start"];
const SCRAPE_KEYS: [&str; 2] = ["source", "interval"];
const PROMETHEUS_KEYS: [&str; 3] = ["source", "url", "interval"];
const BASELINE_KEYS: [&str; 1] = ["window"];
/// Every key of `gates:`, in the contract's order.
pub const GATE_KEYS: [&str; 7] = [
    "latency_p99_ms_max",
    "latency_p99_vs_baseline_max",
    "error_ratio_max",
    "replica_lag_seq_max",
    "output_hash_divergence",
    "min_requests",
    "breach_for",
];
const PHASE_KEYS: [&str; 3] = ["name", "hold", "weights"];

/// Why a plan was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file could not be read (or is larger than [`MAX_PLAN_BYTES`]).
    #[error("{file}: {message}")]
    Read { file: String, message: String },
    /// The plan breaks a rule or is not well-formed YAML: where, which
    /// field (`phases[1].weights.gcp`; `yaml` for the syntax itself), and
    /// what is wrong.
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Invalid {
        file: String,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        field: String,
        message: String,
    },
}

impl PlanError {
    /// The file the plan came from.
    pub fn file(&self) -> &str {
        match self {
            PlanError::Read { file, .. } | PlanError::Invalid { file, .. } => file,
        }
    }

    /// The line (1-based) the error is at, if it is about the text.
    pub fn line(&self) -> Option<usize> {
        match self {
            PlanError::Read { .. } => None,
            PlanError::Invalid { line, .. } => Some(*line),
        }
    }

    /// The column (1-based) the error is at, if it is about the text.
    pub fn column(&self) -> Option<usize> {
        match self {
            PlanError::Read { .. } => None,
            PlanError::Invalid { column, .. } => Some(*column),
        }
    }

    /// The field path (`gates.breach_for`), if it is about the text.
    pub fn field(&self) -> Option<&str> {
        match self {
            PlanError::Read { .. } => None,
            PlanError::Invalid { field, .. } => Some(field),
        }
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        match self {
            PlanError::Read { message, .. } | PlanError::Invalid { message, .. } => message,
        }
    }
}

/// Checks a `--time-scale`: finite and above 0.
pub fn check_time_scale(k: f64) -> Result<f64, String> {
    if k.is_finite() && k > 0.0 {
        Ok(k)
    } else {
        Err(format!("time scale must be a number above 0, not {k}"))
    }
}

impl Plan {
    /// Reads and checks the plan at `path` (at most [`MAX_PLAN_BYTES`]).
    pub fn load(path: &std::path::Path) -> Result<Plan, PlanError> {
        use std::io::Read;
        let file = path.display().to_string();
        let read_err = |e: std::io::Error| PlanError::Read {
            file: file.clone(),
            message: format!("cannot read the plan: {e}"),
        };
        let f = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        f.take(MAX_PLAN_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() > MAX_PLAN_BYTES {
            return Err(PlanError::Read {
                file,
                message: format!("larger than the limit of {MAX_PLAN_BYTES} bytes"),
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| PlanError::Read {
            file: file.clone(),
            message: format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        Plan::parse(&text, &file)
    }

    /// Parses and checks a plan's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Plan, PlanError> {
        let cx = Cx { file };
        if text.len() > MAX_PLAN_BYTES {
            return Err(PlanError::Read {
                file: file.to_owned(),
                message: format!("larger than the limit of {MAX_PLAN_BYTES} bytes"),
            });
        }
        // A byte-order mark (some editors write one) is not part of the
        // YAML.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let root = cx.yaml(text)?;
        cx.plan(&root)
    }

    /// The plan at time scale `k` (`--time-scale`): every hold and the
    /// baseline window divided by `k`, to the millisecond, but a scaled
    /// baseline is never shorter than [`SCALED_BASELINE_MIN`] and a scaled
    /// hold other than 0 never shorter than [`SCALED_HOLD_MIN`]. Gates,
    /// `breach_for` and the metrics interval are not scaled. `k` must
    /// pass [`check_time_scale`]; any other `k` leaves the plan as it is.
    pub fn scaled(&self, k: f64) -> Plan {
        let mut plan = self.clone();
        if check_time_scale(k).is_err() {
            return plan;
        }
        let div = |d: Duration| {
            let ms = (d.as_millis() as f64 / k).round();
            // `as` saturates: a tiny k gives the longest duration, not a
            // wrap.
            Duration::from_millis(ms as u64)
        };
        plan.baseline_window = div(self.baseline_window).max(SCALED_BASELINE_MIN);
        for p in &mut plan.phases {
            if !p.hold.is_zero() {
                p.hold = div(p.hold).max(SCALED_HOLD_MIN);
            }
        }
        plan
    }

    /// The weight of every cluster in phase `phase`, in the order of
    /// [`Plan::clusters`] (0 for a cluster the phase does not name).
    pub fn phase_weights(&self, phase: usize) -> Vec<(String, u32)> {
        self.clusters
            .iter()
            .map(|c| {
                let w = self.phases.get(phase).and_then(|p| {
                    p.weights
                        .iter()
                        .find(|(n, _)| *n == c.name)
                        .map(|(_, w)| *w)
                });
                (c.name.clone(), w.unwrap_or(0))
            })
            .collect()
    }

    /// A summary for people (`tandem rollout check`): release, clusters,
    /// edges, metrics, baseline, gates, and each phase with its hold and
    /// weights.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "release: {}", self.release);
        let _ = writeln!(s, "clusters:");
        let width = self
            .clusters
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for c in &self.clusters {
            let version = match c.version {
                Version::Stable => "stable",
                Version::Canary => "canary",
            };
            let start = match c.start {
                Start::Running => "running",
                Start::Cold => "cold",
            };
            let _ = writeln!(
                s,
                "  {:width$}  {version}  start {start:7}  zones {}",
                c.name,
                c.zones.join(", ")
            );
        }
        let _ = writeln!(s, "edges:");
        for e in &self.edges {
            let _ = writeln!(s, "  {e}");
        }
        let _ = match &self.metrics {
            MetricsSource::Scrape { interval } => {
                writeln!(s, "metrics: scrape every {}", Show(*interval))
            }
            MetricsSource::Prometheus { url, interval } => {
                writeln!(s, "metrics: prometheus {url} every {}", Show(*interval))
            }
        };
        let _ = writeln!(s, "baseline: {} (stable alone)", Show(self.baseline_window));
        let g = &self.gates;
        let _ = writeln!(s, "gates:");
        let gate = |s: &mut String, name: &str, v: Option<String>| {
            let v = v.unwrap_or_else(|| "(not judged)".into());
            let _ = writeln!(s, "  {name:28} {v}");
        };
        gate(
            &mut s,
            "latency_p99_ms_max",
            g.latency_p99_ms_max.map(|v| v.to_string()),
        );
        gate(
            &mut s,
            "latency_p99_vs_baseline_max",
            g.latency_p99_vs_baseline_max.map(|v| v.to_string()),
        );
        gate(
            &mut s,
            "error_ratio_max",
            g.error_ratio_max.map(|v| v.to_string()),
        );
        gate(
            &mut s,
            "replica_lag_seq_max",
            g.replica_lag_seq_max.map(|v| v.to_string()),
        );
        gate(
            &mut s,
            "output_hash_divergence",
            Some(g.output_hash_divergence.to_string()),
        );
        gate(&mut s, "min_requests", Some(g.min_requests.to_string()));
        gate(&mut s, "breach_for", Some(Show(g.breach_for).to_string()));
        let _ = writeln!(s, "phases:");
        let name_w = self.phases.iter().map(|p| p.name.len()).max().unwrap_or(0);
        let hold_w = self
            .phases
            .iter()
            .map(|p| Show(p.hold).to_string().len())
            .max()
            .unwrap_or(0);
        for (i, p) in self.phases.iter().enumerate() {
            let weights: Vec<String> = self
                .phase_weights(i)
                .iter()
                .map(|(n, w)| format!("{n} {w}"))
                .collect();
            let _ = writeln!(
                s,
                "  {:name_w$}  hold {:hold_w$}  {}",
                p.name,
                Show(p.hold).to_string(),
                weights.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "on_failure: {}",
            match self.on_failure {
                OnFailure::Rollback => "rollback",
                OnFailure::Pause => "pause",
            }
        );
        s
    }
}

/// A line and a column, both 1-based.
type Loc = (usize, usize);

fn loc(span: &Span) -> Loc {
    span.start()
        .map(|m| (m.line().max(1), m.column().max(1)))
        .unwrap_or((1, 1))
}

fn kind(n: &Node) -> &'static str {
    match n {
        Node::Scalar(_) => "a value",
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
    }
}

/// `path.key`, or `key` at the top.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The loading context: the file name, for errors.
struct Cx<'a> {
    file: &'a str,
}

/// A mapping of the plan and its field path.
struct Map<'a> {
    node: &'a MarkedMappingNode,
    path: String,
    /// Where an error about the whole mapping points: the key that
    /// introduced it (a block mapping starts on the line after its key).
    at: Loc,
}

impl<'a> Map<'a> {
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.node.get_node(key)
    }

    fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Where `key` is written, or where the mapping is.
    fn key_at(&self, key: &str) -> Loc {
        self.node
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map_or(self.at, |(k, _)| loc(k.span()))
    }
}

impl Cx<'_> {
    fn bad(&self, at: Loc, field: impl Into<String>, message: impl Into<String>) -> PlanError {
        PlanError::Invalid {
            file: self.file.to_owned(),
            line: at.0,
            column: at.1,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The YAML tree, after the pre-pass; a YAML error is field `yaml`
    /// (a key written twice names the key).
    fn yaml(&self, text: &str) -> Result<Node, PlanError> {
        // The YAML crates have `unreachable!` paths of their own; should
        // one be reached, the plan is refused as malformed rather than
        // taking the process down.
        match std::panic::catch_unwind(|| self.yaml_inner(text)) {
            Ok(r) => r,
            Err(_) => Err(self.bad((1, 1), "yaml", "the YAML parser failed on this text")),
        }
    }

    fn yaml_inner(&self, text: &str) -> Result<Node, PlanError> {
        self.prescan(text)?;
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true)
            .toplevel_mapping();
        let at = |m: &Marker| (m.line().max(1), m.column().max(1));
        marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| match e {
            LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => self.bad(
                at(&m),
                "yaml",
                "a plan is a mapping of keys (release, clusters, edges, metrics, baseline, gates, phases, on_failure)",
            ),
            LoadError::UnexpectedAnchor(m) => self.bad(
                at(&m),
                "yaml",
                "anchors and aliases (& and *) are not allowed in a plan: write each value out",
            ),
            LoadError::MappingKeyMustBeScalar(m) => {
                self.bad(at(&m), "yaml", "a key must be a plain name")
            }
            LoadError::UnexpectedTag(m) => {
                self.bad(at(&m), "yaml", "tags (!) are not allowed in a plan")
            }
            LoadError::ScanError(m, e) => self.bad(at(&m), "yaml", e.info().to_owned()),
            LoadError::DuplicateKey(d) => {
                let first = loc(d.prev_key.span());
                self.bad(
                    loc(d.key.span()),
                    d.key.as_str().to_owned(),
                    format!(
                        "key {:?} is written twice (first at line {}, column {})",
                        d.key.as_str(),
                        first.0,
                        first.1
                    ),
                )
            }
        })
    }

    /// Walks the YAML events once, without building anything: one
    /// document, at most [`MAX_DEPTH`] levels, at most [`MAX_EVENTS`]
    /// events.
    fn prescan(&self, text: &str) -> Result<(), PlanError> {
        use yaml_rust2::parser::{Event, Parser};
        let mut parser = Parser::new_from_str(text);
        let (mut depth, mut docs, mut events) = (0usize, 0usize, 0usize);
        loop {
            let (ev, mark) = parser.next_token().map_err(|e| {
                let m = e.marker();
                self.bad((m.line().max(1), m.col() + 1), "yaml", e.info().to_owned())
            })?;
            let at = (mark.line().max(1), mark.col() + 1);
            events += 1;
            if events > MAX_EVENTS {
                return Err(self.bad(
                    at,
                    "yaml",
                    format!("more than {MAX_EVENTS} YAML nodes: this is not a plan"),
                ));
            }
            match ev {
                Event::StreamEnd => return Ok(()),
                Event::DocumentStart => {
                    docs += 1;
                    if docs > 1 {
                        return Err(self.bad(
                            at,
                            "yaml",
                            "a second YAML document (---): a plan file holds one plan",
                        ));
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(self.bad(
                            at,
                            "yaml",
                            format!("nested deeper than {MAX_DEPTH} levels"),
                        ));
                    }
                }
                Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    // --- shapes -----------------------------------------------------------

    fn map<'n>(&self, node: &'n Node, path: &str, at: Loc) -> Result<Map<'n>, PlanError> {
        match node {
            Node::Mapping(m) => Ok(Map {
                node: m,
                path: path.to_owned(),
                at,
            }),
            other => Err(self.bad(
                loc(other.span()),
                path,
                format!("expected a mapping of keys, found {}", kind(other)),
            )),
        }
    }

    fn seq<'n>(&self, node: &'n Node, path: &str) -> Result<&'n [Node], PlanError> {
        match node {
            Node::Sequence(s) => Ok(s.as_slice()),
            other => Err(self.bad(
                loc(other.span()),
                path,
                format!("expected a list, found {}", kind(other)),
            )),
        }
    }

    /// Every key of `m` is one of `allowed`; a key that is not is named,
    /// with the closest allowed key when it looks like a typo.
    fn only(&self, m: &Map<'_>, allowed: &[&str]) -> Result<(), PlanError> {
        for (k, _) in m.node.iter() {
            if !allowed.contains(&k.as_str()) {
                let hint = match allowed.iter().find(|a| near(a, k.as_str())) {
                    Some(a) => format!(" (did you mean `{a}`?)"),
                    None => format!(" (expected one of: {})", allowed.join(", ")),
                };
                return Err(self.bad(
                    loc(k.span()),
                    m.field(k.as_str()),
                    format!("unknown key `{}`{hint}", k.as_str()),
                ));
            }
        }
        Ok(())
    }

    fn req<'n>(&self, m: &Map<'n>, key: &str) -> Result<&'n Node, PlanError> {
        m.get(key)
            .ok_or_else(|| self.bad(m.at, m.field(key), "missing (required)"))
    }

    /// A scalar with a value (not empty, `~` or `null`).
    fn scalar<'n>(&self, node: &'n Node, field: &str) -> Result<&'n MarkedScalarNode, PlanError> {
        match node {
            Node::Scalar(s) => {
                let v = s.as_str();
                if v.is_empty() || (s.may_coerce() && matches!(v, "~" | "null" | "Null" | "NULL")) {
                    Err(self.bad(loc(s.span()), field, "has no value"))
                } else {
                    Ok(s)
                }
            }
            other => Err(self.bad(
                loc(other.span()),
                field,
                format!("expected a value, found {}", kind(other)),
            )),
        }
    }

    fn text<'n>(&self, node: &'n Node, field: &str) -> Result<&'n str, PlanError> {
        Ok(self.scalar(node, field)?.as_str())
    }

    /// A cluster or zone name: 1 to [`MAX_NAME_BYTES`] of ASCII letters,
    /// digits, `-`, `_` and `.` (they become metric labels and JSON keys).
    fn name(&self, s: &MarkedScalarNode, field: &str, what: &str) -> Result<String, PlanError> {
        let v = s.as_str();
        let ok = !v.is_empty()
            && v.len() <= MAX_NAME_BYTES
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(v.to_owned())
        } else {
            Err(self.bad(
                loc(s.span()),
                field,
                format!(
                    "{what} {v:?} must be 1 to {MAX_NAME_BYTES} ASCII letters, digits, '-', '_' or '.'"
                ),
            ))
        }
    }

    /// A whole number `0..=max`, written as a plain (unquoted) number.
    fn uint(&self, node: &Node, field: &str, max: u64) -> Result<u64, PlanError> {
        let s = self.scalar(node, field)?;
        let v = s.as_str();
        let at = loc(s.span());
        if !s.may_coerce() {
            return Err(self.bad(
                at,
                field,
                format!("expected a number, found the string {v:?}"),
            ));
        }
        if !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.bad(
                at,
                field,
                format!("must be a whole number from 0 to {max}, found `{v}`"),
            ));
        }
        match v.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(self.bad(
                at,
                field,
                format!("must be a whole number from 0 to {max}, found `{v}`"),
            )),
        }
    }

    /// A finite number `>= 0`, written as a plain (unquoted) number.
    fn number(&self, node: &Node, field: &str) -> Result<(f64, Loc), PlanError> {
        let s = self.scalar(node, field)?;
        let v = s.as_str();
        let at = loc(s.span());
        if !s.may_coerce() {
            return Err(self.bad(
                at,
                field,
                format!("expected a number, found the string {v:?}"),
            ));
        }
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok((x, at)),
            _ => Err(self.bad(
                at,
                field,
                format!("must be a finite number of at least 0, found `{v}`"),
            )),
        }
    }

    fn duration(&self, node: &Node, field: &str) -> Result<(Duration, Loc), PlanError> {
        let s = self.scalar(node, field)?;
        let at = loc(s.span());
        parse_duration(s.as_str())
            .map(|d| (d, at))
            .map_err(|e| self.bad(at, field, e.to_string()))
    }

    // --- the plan ---------------------------------------------------------

    fn plan(&self, root: &Node) -> Result<Plan, PlanError> {
        let top = self.map(root, "", (1, 1))?;
        self.only(&top, &TOP_KEYS)?;

        let release_node = self.req(&top, "release")?;
        let release = self.text(release_node, "release")?;
        if release.len() > MAX_RELEASE_BYTES || release.chars().any(char::is_control) {
            return Err(self.bad(
                loc(release_node.span()),
                "release",
                format!("must be one line of at most {MAX_RELEASE_BYTES} bytes"),
            ));
        }

        let clusters = self.clusters(self.req(&top, "clusters")?, top.key_at("clusters"))?;
        let edges = self.edges(self.req(&top, "edges")?, top.key_at("edges"))?;
        let metrics = self.metrics(self.req(&top, "metrics")?, top.key_at("metrics"))?;

        let baseline = self.map(
            self.req(&top, "baseline")?,
            "baseline",
            top.key_at("baseline"),
        )?;
        self.only(&baseline, &BASELINE_KEYS)?;
        let (baseline_window, at) =
            self.duration(self.req(&baseline, "window")?, "baseline.window")?;
        if baseline_window.is_zero() {
            return Err(self.bad(
                at,
                "baseline.window",
                "must be above 0: latency is judged against stable's baseline",
            ));
        }

        let gates = self.gates(self.req(&top, "gates")?, top.key_at("gates"))?;
        let phases = self.phases(self.req(&top, "phases")?, top.key_at("phases"), &clusters)?;

        let on_failure = match self.text(self.req(&top, "on_failure")?, "on_failure")? {
            "rollback" => OnFailure::Rollback,
            "pause" => OnFailure::Pause,
            other => {
                return Err(self.bad(
                    loc(top.get("on_failure").map_or(root.span(), Node::span)),
                    "on_failure",
                    format!("must be `rollback` or `pause`, not `{other}`"),
                ))
            }
        };

        Ok(Plan {
            release: release.to_owned(),
            clusters,
            edges,
            metrics,
            baseline_window,
            gates,
            phases,
            on_failure,
        })
    }

    fn clusters(&self, node: &Node, at: Loc) -> Result<Vec<Cluster>, PlanError> {
        let m = self.map(node, "clusters", at)?;
        if m.node.is_empty() {
            return Err(self.bad(at, "clusters", "no cluster: name at least one"));
        }
        if m.node.len() > MAX_CLUSTERS {
            return Err(self.bad(at, "clusters", format!("more than {MAX_CLUSTERS} clusters")));
        }
        let mut out = Vec::with_capacity(m.node.len());
        for (key, value) in m.node.iter() {
            let path = join("clusters", key.as_str());
            let name = self.name(key, &path, "cluster name")?;
            let c = self.map(value, &path, loc(key.span()))?;
            self.only(&c, &CLUSTER_KEYS)?;
            let vfield = c.field("version");
            let version = match self.text(self.req(&c, "version")?, &vfield)? {
                "stable" => Version::Stable,
                "canary" => Version::Canary,
                other => {
                    return Err(self.bad(
                        loc(c.get("version").map_or(value.span(), Node::span)),
                        vfield,
                        format!("must be `stable` or `canary`, not `{other}`"),
                    ))
                }
            };
            let zfield = c.field("zones");
            let znode = self.req(&c, "zones")?;
            let zs = self.seq(znode, &zfield)?;
            if zs.is_empty() {
                return Err(self.bad(
                    c.key_at("zones"),
                    zfield,
                    "no zone: a cluster's nodes are in at least one zone",
                ));
            }
            if zs.len() > MAX_ZONES {
                return Err(self.bad(
                    c.key_at("zones"),
                    zfield,
                    format!("more than {MAX_ZONES} zones"),
                ));
            }
            let mut zones: Vec<String> = Vec::with_capacity(zs.len());
            for (i, z) in zs.iter().enumerate() {
                let f = format!("{zfield}[{i}]");
                let zone = self.name(self.scalar(z, &f)?, &f, "zone")?;
                if zones.contains(&zone) {
                    return Err(self.bad(
                        loc(z.span()),
                        f,
                        format!("zone `{zone}` is listed twice"),
                    ));
                }
                zones.push(zone);
            }
            let start = match c.get("start") {
                None => Start::Running,
                Some(s) => {
                    let f = c.field("start");
                    match self.text(s, &f)? {
                        "cold" => Start::Cold,
                        other => {
                            return Err(self.bad(
                                loc(s.span()),
                                f,
                                format!(
                                    "must be `cold` (or left out for a cluster that runs), not `{other}`"
                                ),
                            ))
                        }
                    }
                }
            };
            out.push(Cluster {
                name,
                version,
                zones,
                start,
            });
        }
        if !out.iter().any(|c| c.version == Version::Stable) {
            return Err(self.bad(
                at,
                "clusters",
                "no cluster runs `version: stable`: the baseline and a rollback need one",
            ));
        }
        if !out
            .iter()
            .any(|c| c.version == Version::Stable && c.start == Start::Running)
        {
            return Err(self.bad(
                at,
                "clusters",
                "every stable cluster is `start: cold`: the baseline and a rollback send all traffic to a running stable cluster",
            ));
        }
        Ok(out)
    }

    fn edges(&self, node: &Node, at: Loc) -> Result<Vec<String>, PlanError> {
        let items = self.seq(node, "edges")?;
        if items.is_empty() {
            return Err(self.bad(
                at,
                "edges",
                "no edge: the controller sets weights on at least one edge",
            ));
        }
        if items.len() > MAX_EDGES {
            return Err(self.bad(at, "edges", format!("more than {MAX_EDGES} edges")));
        }
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for (i, e) in items.iter().enumerate() {
            let f = format!("edges[{i}]");
            let url = self.text(e, &f)?;
            check_http_url(url).map_err(|m| self.bad(loc(e.span()), &f, m))?;
            if let Some(j) = out.iter().position(|o| o == url) {
                return Err(self.bad(loc(e.span()), f, format!("the same edge as edges[{j}]")));
            }
            out.push(url.to_owned());
        }
        Ok(out)
    }

    fn metrics(&self, node: &Node, at: Loc) -> Result<MetricsSource, PlanError> {
        let m = self.map(node, "metrics", at)?;
        let snode = self.req(&m, "source")?;
        let source = self.text(snode, "metrics.source")?;
        let keys: &[&str] = match source {
            "scrape" => &SCRAPE_KEYS,
            "prometheus" => &PROMETHEUS_KEYS,
            other => {
                return Err(self.bad(
                    loc(snode.span()),
                    "metrics.source",
                    format!("must be `scrape` or `prometheus`, not `{other}`"),
                ))
            }
        };
        if source == "scrape" {
            if let Some((k, _)) = m.node.iter().find(|(k, _)| k.as_str() == "url") {
                return Err(self.bad(
                    loc(k.span()),
                    "metrics.url",
                    "a url is only for `source: prometheus` (scrape reads the edges' and nodes' /metrics)",
                ));
            }
        }
        self.only(&m, keys)?;
        let (interval, at) = self.duration(self.req(&m, "interval")?, "metrics.interval")?;
        if interval < MIN_INTERVAL || interval > MAX_INTERVAL {
            return Err(self.bad(
                at,
                "metrics.interval",
                format!(
                    "must be from {} to {}, not {}",
                    Show(MIN_INTERVAL),
                    Show(MAX_INTERVAL),
                    Show(interval)
                ),
            ));
        }
        if source == "scrape" {
            return Ok(MetricsSource::Scrape { interval });
        }
        let unode = self.req(&m, "url")?;
        let url = self.text(unode, "metrics.url")?;
        check_http_url(url).map_err(|msg| self.bad(loc(unode.span()), "metrics.url", msg))?;
        Ok(MetricsSource::Prometheus {
            url: url.to_owned(),
            interval,
        })
    }

    fn gates(&self, node: &Node, at: Loc) -> Result<Gates, PlanError> {
        let m = self.map(node, "gates", at)?;
        self.only(&m, &GATE_KEYS)?;
        let number = |key: &str| -> Result<Option<(f64, Loc, String)>, PlanError> {
            let f = m.field(key);
            match m.get(key) {
                None => Ok(None),
                Some(n) => {
                    let (v, at) = self.number(n, &f)?;
                    Ok(Some((v, at, f)))
                }
            }
        };
        let latency_p99_ms_max = match number("latency_p99_ms_max")? {
            Some((v, at, f)) if v <= 0.0 => {
                return Err(self.bad(at, f, "must be above 0 (every request would breach)"))
            }
            other => other.map(|(v, ..)| v),
        };
        let latency_p99_vs_baseline_max = match number("latency_p99_vs_baseline_max")? {
            Some((v, at, f)) if v < 1.0 => {
                return Err(self.bad(
                    at,
                    f,
                    format!("must be at least 1 (a ratio to stable's baseline p99; {v} would flag stable itself)"),
                ))
            }
            other => other.map(|(v, ..)| v),
        };
        let error_ratio_max = match number("error_ratio_max")? {
            Some((v, at, f)) if v > 1.0 => {
                return Err(self.bad(at, f, format!("must be from 0 to 1 (a ratio), not {v}")))
            }
            other => other.map(|(v, ..)| v),
        };
        let replica_lag_seq_max = match m.get("replica_lag_seq_max") {
            None => None,
            Some(n) => Some(self.uint(n, &m.field("replica_lag_seq_max"), u64::MAX)?),
        };
        let output_hash_divergence = match m.get("output_hash_divergence") {
            None => 0,
            Some(n) => {
                let f = m.field("output_hash_divergence");
                let v = self.uint(n, &f, u64::MAX)?;
                if v != 0 {
                    return Err(self.bad(
                        loc(n.span()),
                        f,
                        "must be 0: a canary whose output differs from stable's is never given traffic",
                    ));
                }
                v
            }
        };
        let mfield = m.field("min_requests");
        let mnode = self.req(&m, "min_requests")?;
        let min_requests = self.uint(mnode, &mfield, MAX_MIN_REQUESTS)?;
        if min_requests == 0 {
            return Err(self.bad(
                loc(mnode.span()),
                mfield,
                "must be at least 1: a cluster with no requests cannot be judged",
            ));
        }
        let (breach_for, _) = self.duration(self.req(&m, "breach_for")?, &m.field("breach_for"))?;
        Ok(Gates {
            latency_p99_ms_max,
            latency_p99_vs_baseline_max,
            error_ratio_max,
            replica_lag_seq_max,
            output_hash_divergence,
            min_requests,
            breach_for,
        })
    }

    fn phases(&self, node: &Node, at: Loc, clusters: &[Cluster]) -> Result<Vec<Phase>, PlanError> {
        let items = self.seq(node, "phases")?;
        if items.is_empty() {
            return Err(self.bad(at, "phases", "no phase: a plan has at least one"));
        }
        if items.len() > MAX_PHASES {
            return Err(self.bad(at, "phases", format!("more than {MAX_PHASES} phases")));
        }
        let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
        let mut out: Vec<Phase> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = self.map(item, &format!("phases[{i}]"), loc(item.span()))?;
            self.only(&p, &PHASE_KEYS)?;
            let nf = p.field("name");
            let nnode = self.req(&p, "name")?;
            let name = self.text(nnode, &nf)?;
            if name.len() > MAX_NAME_BYTES || name.chars().any(|c| c.is_control()) {
                return Err(self.bad(
                    loc(nnode.span()),
                    nf,
                    format!("must be one line of at most {MAX_NAME_BYTES} bytes"),
                ));
            }
            if let Some(j) = out.iter().position(|o| o.name == name) {
                return Err(self.bad(
                    loc(nnode.span()),
                    nf,
                    format!("phase name `{name}` is already used by phases[{j}]"),
                ));
            }
            let (hold, _) = self.duration(self.req(&p, "hold")?, &p.field("hold"))?;
            let wnode = self.req(&p, "weights")?;
            let w = self.map(wnode, &p.field("weights"), p.key_at("weights"))?;
            let mut weights: Vec<(String, u32)> = Vec::with_capacity(w.node.len());
            for (k, v) in w.node.iter() {
                let f = w.field(k.as_str());
                if !names.contains(&k.as_str()) {
                    return Err(self.bad(
                        loc(k.span()),
                        f,
                        format!(
                            "`{}` is not a cluster of this plan (clusters: {})",
                            k.as_str(),
                            names.join(", ")
                        ),
                    ));
                }
                let weight = self.uint(v, &f, 100)? as u32;
                weights.push((k.as_str().to_owned(), weight));
            }
            let sum: u32 = weights.iter().map(|(_, w)| w).sum();
            if sum != 100 {
                return Err(self.bad(
                    w.at,
                    w.path.clone(),
                    format!("the weights of phase `{name}` sum to {sum}; they must sum to 100"),
                ));
            }
            // In the order of the clusters, every cluster named.
            let weights = clusters
                .iter()
                .map(|c| {
                    let v = weights
                        .iter()
                        .find(|(n, _)| *n == c.name)
                        .map_or(0, |(_, v)| *v);
                    (c.name.clone(), v)
                })
                .collect();
            out.push(Phase {
                name: name.to_owned(),
                hold,
                weights,
            });
        }
        Ok(out)
    }
}

/// `b` looks like a typo of `a`: the same but for case or `-` for `_`,
/// or at most one edit away (two for names of 6 or more characters),
/// where swapping two neighbours counts as one edit.
fn near(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    if norm(a) == norm(b) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let max = if a.len().min(b.len()) >= 6 { 2 } else { 1 };
    if a.len().abs_diff(b.len()) > max || a.len() > 64 || b.len() > 64 {
        return false;
    }
    // Optimal string alignment distance over the full table (at most
    // 65 x 65 cells).
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1)
                    .min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(d[(i - 2) * w + j - 2] + 1);
                }
                v
            };
        }
    }
    d[a.len() * w + b.len()] <= max
}

/// An `http://` or `https://` base URL: a host (name, IPv4 or `[IPv6]`),
/// an optional port, an optional path; no credentials (the admin token
/// comes from `TANDEM_EDGE_ADMIN_TOKEN`), query or fragment.
pub fn check_http_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("a URL of more than {MAX_URL_BYTES} bytes"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{url:?} is not a URL: it has a space or a control character"
        ));
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(format!("{url:?} must be an http:// or https:// URL"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if path.contains(['?', '#']) {
        return Err(format!(
            "{url:?} has a query or fragment: give the base URL"
        ));
    }
    if authority.contains('@') {
        return Err(format!(
            "{url:?} has credentials: the admin token comes from TANDEM_EDGE_ADMIN_TOKEN, never the plan"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("{url:?}: an IPv6 host needs its closing `]`"));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{url:?}: `{addr}` is not an IPv6 address"));
        }
        match after {
            "" => (addr, None),
            p => match p.strip_prefix(':') {
                Some(p) => (addr, Some(p)),
                None => return Err(format!("{url:?}: expected `:port` after the IPv6 host")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if !authority.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!("{url:?}: `{host}` is not a host name or address"));
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(format!("{url:?}: `{p}` is not a port (1 to 65535)")),
        }
    }
    Ok(())
}
