//! Checks of `deploy/prometheus` and `deploy/grafana` with real tools and
//! real processes: promtool checks the rules and the configuration and
//! runs the rules' unit tests; the scrape jobs point at the sample
//! configs' and the Kubernetes manifests' ports; every metric name the
//! rules and the dashboard read is one a running node and edge export
//! (the `tandem` binary, started here on the file log); and a real
//! Prometheus, scraping that node and edge with `rules.yml` loaded, gives
//! every recording rule and every dashboard query data, with the labels
//! the rules promise.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_control::prom::{Exposition, SampleKind};
use tandem_control::supervise::{target_binary, Supervised};
use tandem_deploy::{deploy, tool, yaml_docs};
use tandem_log::conformance::TempDir;

/// The cluster, node and role the test's node runs as.
const CLUSTER: &str = "aws";
const NODE: &str = "aws-1";
const ROLE: &str = "stable";

// ---------------------------------------------------------------------
// promtool

fn promtool() -> PathBuf {
    tool("promtool").expect(
        "promtool is not installed: it comes with Debian's `prometheus` package \
         (scripts/test.sh installs it; or `apt-get install prometheus`)",
    )
}

/// Runs promtool with `args` in `dir`; its output when it fails.
fn run_promtool(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("promtool {args:?} failed:\n{text}"))
    }
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = yaml_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one YAML document", path.display());
    docs.remove(0)
}

/// The rules of `rules.yml`: (record or alert name, is_alert, expr).
fn rules() -> Vec<(String, bool, String)> {
    let doc = yaml_file(&deploy("prometheus/rules.yml"));
    let mut out = Vec::new();
    for group in doc["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr").to_owned();
            match (rule["record"].as_str(), rule["alert"].as_str()) {
                (Some(r), None) => out.push((r.to_owned(), false, expr)),
                (None, Some(a)) => out.push((a.to_owned(), true, expr)),
                _ => panic!("a rule is a record or an alert: {rule}"),
            }
        }
    }
    out
}

#[test]
fn promtool_checks_the_rules_and_the_config() {
    let dir = deploy("prometheus");
    let rules = run_promtool(&dir, &["check", "rules", "rules.yml"]).unwrap();
    assert!(rules.contains("SUCCESS"), "{rules}");
    let config = run_promtool(&dir, &["check", "config", "prometheus.yml"]).unwrap();
    // The config loads the rule file itself (promtool checks it too).
    assert!(config.contains("1 rule files found"), "{config}");
}

/// `promtool test rules`, and every alert of rules.yml has a case where it
/// fires and one where it stays silent.
#[test]
fn promtool_unit_tests_fire_and_silence_every_alert() {
    let out = run_promtool(&deploy("prometheus"), &["test", "rules", "rules_test.yml"]).unwrap();
    assert!(out.contains("SUCCESS"), "{out}");

    let tests = yaml_file(&deploy("prometheus/rules_test.yml"));
    let mut fired = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for group in tests["tests"].as_array().expect("tests") {
        for case in group["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let n = case["exp_alerts"].as_array().map_or(0, Vec::len);
            if n > 0 {
                fired.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    let alerts: BTreeSet<String> = rules().into_iter().filter(|r| r.1).map(|r| r.0).collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    let never_fired: Vec<_> = alerts.difference(&fired).collect();
    let never_silent: Vec<_> = alerts.difference(&silent).collect();
    assert!(
        never_fired.is_empty(),
        "alerts no unit test fires: {never_fired:?}"
    );
    assert!(
        never_silent.is_empty(),
        "alerts no unit test shows silent: {never_silent:?}"
    );
    let unknown: Vec<_> = fired
        .union(&silent)
        .filter(|a| !alerts.contains(*a))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts rules.yml lacks: {unknown:?}"
    );
}

/// One scrape job: its static targets, and its DNS names with the port
/// scraped.
type Job = (Vec<String>, Vec<(String, u64)>);

/// The scrape jobs of prometheus.yml, by job name.
fn scrape_jobs() -> BTreeMap<String, Job> {
    let doc = yaml_file(&deploy("prometheus/prometheus.yml"));
    let mut out = BTreeMap::new();
    for job in doc["scrape_configs"].as_array().expect("scrape_configs") {
        let name = job["job_name"].as_str().expect("job_name").to_owned();
        let mut targets = Vec::new();
        for s in job["static_configs"].as_array().into_iter().flatten() {
            for t in s["targets"].as_array().expect("targets") {
                targets.push(t.as_str().expect("a target").to_owned());
            }
        }
        let mut dns = Vec::new();
        for d in job["dns_sd_configs"].as_array().into_iter().flatten() {
            assert_eq!(d["type"], "A", "{name}: A records (pod addresses)");
            let port = d["port"].as_u64().expect("an A lookup needs a port");
            for n in d["names"].as_array().expect("names") {
                dns.push((n.as_str().expect("a name").to_owned(), port));
            }
        }
        out.insert(name, (targets, dns));
    }
    out
}

/// The local jobs scrape the sample configs' addresses; the Kubernetes
/// jobs' DNS names are headless Services (of deploy/kubernetes, rendered
/// with `kubectl kustomize` for every overlay, or edge-metrics-service.yaml
/// here) that publish not-ready pods, on the port the job scrapes, and
/// select the node's and the edge's pods, whose container declares it.
#[test]
fn the_scrape_config_finds_the_sample_and_the_manifests_ports() {
    let jobs = scrape_jobs();
    let node: toml::Table = std::fs::read_to_string(deploy("node/tandem-node.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let edge: toml::Table = std::fs::read_to_string(deploy("edge/tandem-edge.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        jobs["tandem-node-local"].0,
        [node["listen"].as_str().unwrap()]
    );
    assert_eq!(
        jobs["tandem-edge-local"].0,
        [edge["admin_listen"].as_str().unwrap()]
    );

    let kubectl = tool("kubectl").expect("kubectl is not installed: it renders deploy/kubernetes");
    let extra = std::fs::read_to_string(deploy("prometheus/edge-metrics-service.yaml")).unwrap();
    let extra = yaml_docs(&extra).unwrap();
    // The extra Service is a valid typed Service.
    for d in &extra {
        serde_json::from_value::<k8s_openapi::api::core::v1::Service>(d.clone())
            .expect("edge-metrics-service.yaml is a Service");
    }
    for overlay in ["eks", "gke", "aks"] {
        let out = Command::new(&kubectl)
            .arg("kustomize")
            .arg(deploy(&format!("kubernetes/overlays/{overlay}")))
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl kustomize {overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut objects = yaml_docs(&String::from_utf8_lossy(&out.stdout)).unwrap();
        objects.extend(extra.iter().cloned());
        for job in ["tandem-node", "tandem-edge"] {
            let (_, dns) = &jobs[job];
            assert_eq!(dns.len(), 1, "{job}: one DNS name");
            let (name, port) = &dns[0];
            let (svc_name, ns) = name
                .strip_suffix(".svc.cluster.local")
                .and_then(|n| n.split_once('.'))
                .unwrap_or_else(|| {
                    panic!("{job}: {name} is not <service>.<namespace>.svc.cluster.local")
                });
            let svc = objects
                .iter()
                .find(|o| {
                    o["kind"] == "Service"
                        && o["metadata"]["name"] == svc_name
                        && o["metadata"]["namespace"] == ns
                })
                .unwrap_or_else(|| panic!("{overlay}: {job}: no Service {svc_name} in {ns}"));
            let spec = &svc["spec"];
            assert_eq!(
                spec["clusterIP"], "None",
                "{overlay}: {svc_name} is headless"
            );
            assert_eq!(
                spec["publishNotReadyAddresses"], true,
                "{overlay}: {svc_name} publishes not-ready pods"
            );
            let sp = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["port"].as_u64() == Some(*port))
                .unwrap_or_else(|| panic!("{overlay}: {svc_name} has no port {port}"));
            let selector = spec["selector"].as_object().expect("a selector");
            // The pods it selects: a workload's template in that namespace.
            let pods: Vec<&Value> = objects
                .iter()
                .filter(|o| {
                    matches!(o["kind"].as_str(), Some("StatefulSet" | "Deployment"))
                        && o["metadata"]["namespace"] == ns
                        && selector
                            .iter()
                            .all(|(k, v)| o["spec"]["template"]["metadata"]["labels"][k] == *v)
                })
                .collect();
            assert_eq!(pods.len(), 1, "{overlay}: {svc_name} selects one workload");
            // The target port (a name or a number) is a container port
            // equal to the port scraped.
            let declared = pods[0]["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .any(|p| {
                    let by = &sp["targetPort"];
                    (p["name"] == *by || p["containerPort"] == *by)
                        && p["containerPort"].as_u64() == Some(*port)
                });
            assert!(
                declared,
                "{overlay}: {svc_name}'s target port is not a container port {port} of its pods"
            );
        }
    }
}

// ---------------------------------------------------------------------
// Metric names in PromQL

/// Words of PromQL that are not metric names when they stand alone:
/// aggregations, binary and set operators, modifiers, and the float
/// literals `inf` and `nan`.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "atan2",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "start",
    "end",
    "inf",
    "nan",
];

/// Modifiers whose parenthesised list holds label names, not metrics.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads.
///
/// A small tokenizer, not a parser, because only names are needed: it
/// skips string literals (with their escapes); label matchers (everything
/// between `{` and its `}`, so label names and values never count); range
/// and subquery durations (between `[` and `]`); numbers and durations
/// (a token that starts with a digit, or `.` and a digit, with its
/// letters, dots and an exponent's sign); Grafana variables (`$name`,
/// `${name}`); and the label list after `by`, `without`, `on`,
/// `ignoring`, `group_left` and `group_right`. Of the identifiers left, a
/// name followed by `(` is a function or an aggregation, and the
/// keywords above are operators and modifiers; every other identifier is
/// a metric name. A selector written as `{__name__=...}` is refused: its
/// name would hide from this check.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let c: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening bracket at `i` past its closing one, stepping
    // over string literals; returns the text inside.
    let skip_group = |i: &mut usize, open: char, close: char| -> Result<String, String> {
        let start = *i;
        let mut depth = 0;
        while *i < c.len() {
            let ch = c[*i];
            if ch == '"' || ch == '\'' || ch == '`' {
                *i = skip_string(&c, *i)?;
                continue;
            }
            if ch == open {
                depth += 1;
            } else if ch == close {
                depth -= 1;
                if depth == 0 {
                    *i += 1;
                    return Ok(c[start + 1..*i - 1].iter().collect());
                }
            }
            *i += 1;
        }
        Err(format!("unclosed {open} in {expr:?}"))
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '"' || ch == '\'' || ch == '`' {
            i = skip_string(&c, i)?;
        } else if ch == '{' {
            let inside = skip_group(&mut i, '{', '}')?;
            if inside.contains("__name__") {
                return Err(format!(
                    "a selector by __name__ in {expr:?}: name the metric"
                ));
            }
        } else if ch == '[' {
            skip_group(&mut i, '[', ']')?;
        } else if ch == '$' {
            i += 1;
            if c.get(i) == Some(&'{') {
                skip_group(&mut i, '{', '}')?;
            } else {
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < c.len() {
                let d = c[i];
                let exponent_sign = (d == '+' || d == '-') && matches!(c[i - 1], 'e' | 'E');
                if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let mut j = i;
            while j < c.len() && c[j].is_whitespace() {
                j += 1;
            }
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if c.get(j) == Some(&'(') {
                    i = j;
                    skip_group(&mut i, '(', ')')?;
                }
            } else if c.get(j) == Some(&'(') || KEYWORDS.contains(&lower.as_str()) {
                // A function, an aggregation, an operator or a modifier.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    Ok(names)
}

/// The index just past the string literal opening at `i`.
fn skip_string(c: &[char], i: usize) -> Result<usize, String> {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() {
        if c[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if c[j] == quote {
            return Ok(j + 1);
        }
        j += 1;
    }
    Err("unterminated string literal".into())
}

#[test]
fn the_tokenizer_finds_metric_names_and_only_them() {
    let expr = r#"histogram_quantile(0.99, sum by (cluster, le) (rate(a_bucket{cluster=~"$cluster",status=~"5..",x="b{c}"}[$__rate_interval])))
        / ignoring (cluster) group_left sum(rate(b_total[5m] offset 1h)) * 1e-3
        and on(cluster) rec:c_d:p99 > .5 or sum(c) without (node) unless ${v} bool == 0x1F"#;
    let want: BTreeSet<String> = ["a_bucket", "b_total", "rec:c_d:p99", "c"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(metric_names(expr).unwrap(), want);
    assert!(metric_names(r#"rate({__name__="x"}[1m])"#).is_err());
    assert!(metric_names(r#"x{a="unterminated}"#).is_err());
}

/// A Grafana template query: `label_values(METRIC, LABEL)` names a metric
/// and a label; anything else is PromQL.
fn template_names(query: &str) -> Result<BTreeSet<String>, String> {
    match query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        Some(args) => {
            let (metric, _label) = args
                .rsplit_once(',')
                .ok_or_else(|| format!("label_values without a label: {query:?}"))?;
            metric_names(metric)
        }
        None => metric_names(query),
    }
}

/// Every PromQL query of the dashboard (panel targets, nested rows too)
/// and every template variable's query.
fn dashboard_queries() -> (Vec<String>, Vec<String>) {
    let path = deploy("grafana/tandem.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fn walk(panels: &Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(
                    t["expr"]
                        .as_str()
                        .expect("a target with an expr")
                        .to_owned(),
                );
            }
            walk(&p["panels"], out);
        }
    }
    let mut exprs = Vec::new();
    walk(&dash["panels"], &mut exprs);
    let mut templates = Vec::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .expect("a query variable's query");
            templates.push(q.to_owned());
        }
    }
    (exprs, templates)
}

/// A dashboard query with Grafana's variables replaced by what Prometheus
/// accepts.
fn instantiate(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$cluster", ".*")
}

#[test]
fn dashboard_queries_parse_as_promql() {
    let (exprs, _) = dashboard_queries();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut text = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = instantiate(e);
        assert!(!e.contains('$'), "a variable left in {e:?}");
        text.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = TempDir::new("dashboard-promql");
    std::fs::write(dir.path().join("d.yml"), text).unwrap();
    run_promtool(dir.path(), &["check", "rules", "d.yml"]).unwrap();
}

/// The numbers an expression compares with (`> N`, `>= N`, `< N`, ...).
fn compared_numbers(expr: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(['>', '<']) {
        rest = rest[i + 1..].trim_start_matches('=').trim_start();
        let n: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        if let Ok(v) = n.parse() {
            out.push(v);
        }
    }
    out
}

/// The thresholds of the alerts and of the dashboard's panels are the
/// gates of deploy/rollout/seed.yaml (a gate changed there fails here).
#[test]
fn thresholds_are_the_seed_plans_gates() {
    let plan = yaml_file(&deploy("rollout/seed.yaml"));
    let g = &plan["gates"];
    let gate = |k: &str| {
        g[k].as_f64()
            .unwrap_or_else(|| panic!("seed.yaml gates.{k}"))
    };
    let latency_s = gate("latency_p99_ms_max") / 1000.0;
    let errors = gate("error_ratio_max");
    let lag = gate("replica_lag_seq_max");
    let min_requests = gate("min_requests");

    let rules: BTreeMap<String, String> = rules().into_iter().map(|r| (r.0, r.2)).collect();
    for (alert, want) in [
        ("TandemClusterLatencyP99High", vec![latency_s, min_requests]),
        ("TandemClusterErrorRatioHigh", vec![errors, min_requests]),
        ("TandemReplicaLagHigh", vec![lag]),
    ] {
        let expr = rules
            .get(alert)
            .unwrap_or_else(|| panic!("no alert {alert}"));
        assert_eq!(compared_numbers(expr), want, "{alert}: {expr}");
    }

    let path = deploy("grafana/tandem.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let threshold_of = |needle: &str| -> Vec<f64> {
        let panels: Vec<&Value> = dash["panels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["expr"].as_str().is_some_and(|e| e.contains(needle)))
            })
            .collect();
        assert_eq!(panels.len(), 1, "one panel reads {needle}");
        panels[0]["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["value"].as_f64())
            .collect()
    };
    assert_eq!(
        threshold_of("tandem_edge_request_duration_seconds_bucket"),
        [latency_s]
    );
    assert_eq!(threshold_of("status=~\"5..\""), [errors]);
    assert_eq!(threshold_of("tandem_replica_lag_seqs"), [lag]);
}

/// What Grafana needs of the JSON that this repository can check without
/// Grafana: unique panel ids, unique refIds per panel, every data source
/// a variable the dashboard defines, panels inside the 24-column grid and
/// not overlapping.
#[test]
fn the_dashboard_is_well_formed() {
    let path = deploy("grafana/tandem.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vars: BTreeSet<String> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| format!("${{{}}}", v["name"].as_str().expect("a variable name")))
        .collect();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().expect("a title").to_owned();
        assert!(
            ids.insert(p["id"].as_u64().expect("an id")),
            "{title}: id reused"
        );
        let gp = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| gp[k].as_u64().expect("gridPos"));
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {gp}");
        for (bx, by, bw, bh, other) in &boxes {
            let apart = x + w <= *bx || *bx + bw <= x || y + h <= *by || *by + bh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((x, y, w, h, title.clone()));
        let mut refs = BTreeSet::new();
        for t in p["targets"].as_array().into_iter().flatten() {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId reused"
            );
            for ds in [&p["datasource"], &t["datasource"]] {
                assert_eq!(ds["type"], "prometheus", "{title}");
                let uid = ds["uid"].as_str().expect("a data source uid");
                assert!(
                    vars.contains(uid),
                    "{title}: data source {uid} is no variable"
                );
            }
        }
        if p["type"] != "row" {
            assert!(!refs.is_empty(), "{title}: no query");
        }
    }
}

// ---------------------------------------------------------------------
// A running node and edge

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One HTTP/1.0 request (no chunked answers, the server closes):
/// status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let t = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, t).ok()?;
    s.set_read_timeout(Some(t)).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A node (file log) and an edge routing to it, from the sample configs
/// with ports, data directory and labels set here.
struct Stack {
    _dir: TempDir,
    _node: Supervised,
    _edge: Supervised,
    node: SocketAddr,
    public: SocketAddr,
    admin: SocketAddr,
    sent: u64,
}

impl Stack {
    fn start() -> Stack {
        let dir = TempDir::new("observability");
        let bin = target_binary("tandem", "TANDEM_BIN");
        let node: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let public: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

        let sample = std::fs::read_to_string(deploy("node/tandem-node.toml")).unwrap();
        let mut cfg: toml::Table = sample.parse().expect("the sample node config parses");
        for (k, v) in [
            ("listen", node.to_string()),
            ("data_dir", dir.path().join("node").display().to_string()),
            ("node", NODE.into()),
            ("cluster", CLUSTER.into()),
            ("zone", "use1-az1".into()),
            ("role", ROLE.into()),
        ] {
            cfg.insert(k.into(), toml::Value::String(v));
        }
        // A checkpoint every 4 seqs, so that the few orders the stack
        // sends reach one and the node exports its checkpoint hash.
        cfg.entry("limits")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("[limits] is a table")
            .insert("checkpoint_every".into(), toml::Value::Integer(4));
        let node_cfg = dir.path().join("node.toml");
        std::fs::write(&node_cfg, toml::to_string(&cfg).unwrap()).unwrap();

        let sample = std::fs::read_to_string(deploy("edge/tandem-edge.toml")).unwrap();
        let mut cfg: toml::Table = sample.parse().expect("the sample edge config parses");
        cfg.insert("listen".into(), toml::Value::String(public.to_string()));
        cfg.insert(
            "admin_listen".into(),
            toml::Value::String(admin.to_string()),
        );
        let cluster: toml::Table = toml::from_str(&format!(
            "name = \"{CLUSTER}\"\nversion = \"0.1.0\"\nrole = \"{ROLE}\"\nweight = 100\n\
             nodes = [{{ addr = \"{node}\", zone = \"use1-az1\" }}]\n"
        ))
        .unwrap();
        cfg.insert(
            "clusters".into(),
            toml::Value::Array(vec![toml::Value::Table(cluster)]),
        );
        let edge_cfg = dir.path().join("edge.toml");
        std::fs::write(&edge_cfg, toml::to_string(&cfg).unwrap()).unwrap();

        let mut cmd = Command::new(&bin);
        cmd.arg("node").arg("--config").arg(&node_cfg);
        let mut n = Supervised::start_logged("node", cmd, &dir.path().join("node.log"))
            .expect("start the node");
        n.wait_http_ready(node, "/readyz", Duration::from_secs(60))
            .expect("the node is ready");
        let mut cmd = Command::new(&bin);
        cmd.arg("edge")
            .arg("--config")
            .arg(&edge_cfg)
            .env_remove("TANDEM_EDGE_ADMIN_TOKEN");
        let mut e = Supervised::start_logged("edge", cmd, &dir.path().join("edge.log"))
            .expect("start the edge");
        e.wait_http_ready(admin, "/healthz", Duration::from_secs(60))
            .expect("the edge is ready");
        let mut s = Stack {
            _dir: dir,
            _node: n,
            _edge: e,
            node,
            public,
            admin,
            sent: 0,
        };
        // The edge routes once its health check has seen the node ready.
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.load(1) != 1 {
            assert!(
                Instant::now() < deadline,
                "no order through the edge in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// Places `n` orders through the edge (each a log append), reads a
    /// book; returns how many orders were accepted (200).
    fn load(&mut self, n: u64) -> u64 {
        let mut ok = 0;
        for _ in 0..n {
            self.sent += 1;
            let body = format!(
                r#"{{"market":"BTC-USD","id":"o{}","account":"acct{}","side":"buy","type":"limit","price":"100","qty":"1"}}"#,
                self.sent,
                self.sent % 50
            );
            if http(self.public, "POST", "/v1/orders", &body).is_some_and(|(s, _)| s == 200) {
                ok += 1;
            }
        }
        let _ = http(self.public, "GET", "/v1/markets/BTC-USD/book", "");
        ok
    }

    /// The node's and the edge's `/metrics`, parsed.
    fn scrape(&self) -> (Exposition, Exposition) {
        let get = |addr| {
            let (status, body) = http(addr, "GET", "/metrics", "").expect("/metrics answers");
            assert_eq!(status, 200, "{addr}/metrics: {body}");
            Exposition::parse(&body).expect("/metrics parses")
        };
        (get(self.node), get(self.admin))
    }
}

/// Series name (as Prometheus stores it: `x_bucket`, `x_sum`, `x_count`
/// for histogram `x`) to its label names (`le` on buckets).
fn exported(expositions: &[&Exposition]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in expositions {
        for s in &e.samples {
            let (name, le) = match s.kind {
                SampleKind::Bucket { .. } => (format!("{}_bucket", s.metric), true),
                SampleKind::Sum => (format!("{}_sum", s.metric), false),
                SampleKind::Count => (format!("{}_count", s.metric), false),
                _ => (s.metric.clone(), false),
            };
            let labels = out.entry(name).or_default();
            labels.extend(s.labels.keys().cloned());
            if le {
                labels.insert("le".into());
            }
        }
    }
    out
}

/// Every metric name in rules.yml (but the recorded names they define)
/// and in every dashboard query is a series a running node or edge
/// exports, or a recorded name of rules.yml; and every input series of
/// the unit tests has an exported name and exactly its label names.
#[test]
fn every_metric_name_read_is_exported_by_a_running_node_and_edge() {
    let mut stack = Stack::start();
    // Past a checkpoint (every 4 seqs here), so the checkpoint hash is out.
    stack.load(8);
    let (node, edge) = stack.scrape();
    let names = exported(&[&node, &edge]);
    // What the checks below rely on: both servers answered with series.
    assert!(names.contains_key("tandem_replica_lag_seqs"), "{names:?}");
    assert!(
        names.contains_key("tandem_edge_requests_total"),
        "{names:?}"
    );
    assert!(
        names.contains_key("tandem_http_request_duration_seconds_bucket"),
        "{names:?}"
    );

    let rules = rules();
    let recorded: BTreeSet<String> = rules.iter().filter(|r| !r.1).map(|r| r.0.clone()).collect();
    let mut missing = Vec::new();
    let mut check = |whence: &str, used: BTreeSet<String>| {
        assert!(!used.is_empty(), "{whence}: no metric name found");
        for n in used {
            if !names.contains_key(&n) && !recorded.contains(&n) {
                missing.push(format!("{whence}: {n}"));
            }
        }
    };
    for (name, _, expr) in &rules {
        check(
            &format!("rules.yml {name}"),
            metric_names(expr).unwrap_or_else(|e| panic!("{name}: {e}")),
        );
    }
    let (exprs, templates) = dashboard_queries();
    for e in &exprs {
        check(
            &format!("tandem.json {e}"),
            metric_names(e).unwrap_or_else(|err| panic!("{err}")),
        );
    }
    for q in &templates {
        check(
            &format!("tandem.json variable {q}"),
            template_names(q).unwrap_or_else(|err| panic!("{err}")),
        );
    }
    assert!(
        missing.is_empty(),
        "names no running node or edge exports (and no rule records):\n{}",
        missing.join("\n")
    );

    // The unit tests' input series look like the real ones.
    let tests = yaml_file(&deploy("prometheus/rules_test.yml"));
    let mut wrong = Vec::new();
    for group in tests["tests"].as_array().expect("tests") {
        for s in group["input_series"].as_array().expect("input_series") {
            let series = s["series"].as_str().expect("series");
            let (name, rest) = series.split_once('{').unwrap_or((series, "}"));
            let labels: BTreeSet<String> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| kv.split_once('=').expect("label=value").0.trim().to_owned())
                .collect();
            match names.get(name) {
                None => wrong.push(format!("{series}: not exported")),
                Some(real) if *real != labels => {
                    wrong.push(format!("{series}: labels {labels:?}, exported {real:?}"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "rules_test.yml input series unlike what the node and edge export:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------
// A real Prometheus

/// Percent-encoding of a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One series of an instant vector: its labels and its value.
type Series = (BTreeMap<String, String>, f64);

/// An instant query: the result's series, or why not.
fn query(prom: SocketAddr, q: &str) -> Result<Vec<Series>, String> {
    let (status, body) = http(
        prom,
        "GET",
        &format!("/api/v1/query?query={}", encode(q)),
        "",
    )
    .ok_or("no answer from prometheus")?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{status}: {body}"));
    }
    let mut out = Vec::new();
    for r in v["data"]["result"].as_array().ok_or(body.clone())? {
        let labels = r["metric"]
            .as_object()
            .ok_or(body.clone())?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let value = r["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or(body.clone())?;
        out.push((labels, value));
    }
    Ok(out)
}

/// The labels a recorded name promises, from its level (the part before
/// the first `:`, e.g. `cluster_node`), with the values the test's node
/// and edge carry.
fn promised_labels(record: &str) -> BTreeMap<String, String> {
    let level = record.split(':').next().unwrap_or_default();
    level
        .split('_')
        .map(|l| {
            let v = match l {
                "cluster" => CLUSTER,
                "node" => NODE,
                "role" => ROLE,
                other => panic!("{record}: level label {other} has no expected value here"),
            };
            (l.to_owned(), v.to_owned())
        })
        .collect()
}

/// Prometheus scrapes the node and the edge with rules.yml loaded; under
/// load, every recording rule gives one finite series carrying exactly
/// the labels its level names (cluster, node, role) with the node's and
/// edge's values, and every dashboard query gives data.
#[test]
fn a_real_prometheus_gives_every_recording_rule_and_dashboard_query_data() {
    let binary = tool("prometheus").expect(
        "prometheus is not installed: Debian's `prometheus` package (scripts/test.sh installs it)",
    );
    let mut stack = Stack::start();
    let dir = TempDir::new("prometheus");
    std::fs::copy(deploy("prometheus/rules.yml"), dir.path().join("rules.yml")).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n  evaluation_interval: 500ms\n\
         rule_files: [rules.yml]\n\
         scrape_configs:\n\
         \x20 - job_name: tandem-node\n    static_configs: [{{targets: ['{}']}}]\n\
         \x20 - job_name: tandem-edge\n    static_configs: [{{targets: ['{}']}}]\n",
        stack.node, stack.admin
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let prom: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new(binary);
    cmd.current_dir(dir.path())
        .arg("--config.file=prometheus.yml")
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"));
    let mut p = Supervised::start_logged("prometheus", cmd, &dir.path().join("log"))
        .expect("start prometheus");
    p.wait_http_ready(prom, "/-/ready", Duration::from_secs(60))
        .expect("prometheus ready");

    let records: Vec<String> = rules().into_iter().filter(|r| !r.1).map(|r| r.0).collect();
    let (exprs, templates) = dashboard_queries();
    let dashboard: Vec<String> = exprs.iter().map(|e| instantiate(e)).collect();
    let want: BTreeMap<&String, BTreeMap<String, String>> =
        records.iter().map(|r| (r, promised_labels(r))).collect();

    // Wait on the data, with load flowing, up to a deadline; then say
    // what is still missing.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        stack.load(5);
        let mut missing = Vec::new();
        for (r, labels) in &want {
            match query(prom, r) {
                Ok(series) => {
                    let good = series.len() == 1 && {
                        let (l, v) = &series[0];
                        let mut l = l.clone();
                        l.remove("__name__");
                        l == *labels && v.is_finite()
                    };
                    if !good {
                        missing.push(format!(
                            "{r}: want one finite series {labels:?}, got {series:?}"
                        ));
                    }
                }
                Err(e) => missing.push(format!("{r}: {e}")),
            }
        }
        for q in &dashboard {
            match query(prom, q) {
                Ok(series) if series.iter().any(|(_, v)| v.is_finite()) => {}
                Ok(series) => missing.push(format!("dashboard {q}: no finite data: {series:?}")),
                Err(e) => missing.push(format!("dashboard {q}: {e}")),
            }
        }
        // A variable's label_values(METRIC, LABEL): the metric has that
        // label in Prometheus.
        for t in &templates {
            if let Some((metric, label)) = t
                .strip_prefix("label_values(")
                .and_then(|a| a.strip_suffix(')'))
                .and_then(|a| a.rsplit_once(','))
            {
                let label = label.trim();
                match query(prom, metric) {
                    Ok(s)
                        if s.iter()
                            .any(|(l, _)| l.get(label).is_some_and(|v| v == CLUSTER)) => {}
                    other => missing.push(format!("variable {t}: {other:?}")),
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s of load, Prometheus has no data for:\n{}",
            missing.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
