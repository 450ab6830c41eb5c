//! The plan loader (`contracts/rollout-plan.md`, "The plan"): the shipped
//! seed plan loads to the expected values; every rule refuses a bad plan
//! naming the line and the field; durations; `--time-scale` with its
//! floors; and arbitrary text is refused or parsed, never a panic.

use std::time::Duration;

mod mutate;

use proptest::prelude::*;
use tandem_rollout::plan::{
    check_time_scale, Cluster, Gates, MetricsSource, OnFailure, Phase, Plan, PlanError, Start,
    Version,
};

const SEED: &str = include_str!("../../../deploy/rollout/seed.yaml");
const FILE: &str = "seed.yaml";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const DAY: u64 = 86_400;

/// The seed with `from` replaced by `to` (exactly one occurrence).
fn edit(from: &str, to: &str) -> String {
    assert_eq!(SEED.matches(from).count(), 1, "{from:?} once in the seed");
    SEED.replacen(from, to, 1)
}

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} in text"));
    text[..at].matches('\n').count() + 1
}

/// Parses `text`, which must be refused; checks the field and that the
/// error is on the line of `at` (a piece of the text), and returns it.
#[track_caller]
fn refused(text: &str, field: &str, at: &str) -> PlanError {
    let e = match Plan::parse(text, FILE) {
        Ok(_) => panic!("accepted, expected an error on {field}"),
        Err(e) => e,
    };
    assert_eq!(e.field(), Some(field), "{e}");
    assert_eq!(e.line(), Some(line_of(text, at)), "{e}");
    assert_eq!(e.file(), FILE);
    e
}

/// `edit` then `refused`, the error on the line of `to`.
#[track_caller]
fn bad(from: &str, to: &str, field: &str) -> PlanError {
    let text = edit(from, to);
    let anchor = if to.is_empty() { "phases:" } else { to };
    refused(&text, field, anchor)
}

/// `edit` then `refused`, the error on the line of `anchor`.
#[track_caller]
fn bad_at(from: &str, to: &str, field: &str, anchor: &str) -> PlanError {
    refused(&edit(from, to), field, anchor)
}

fn seed_expected() -> Plan {
    let cluster = |name: &str, version, zones: [&str; 3], start| Cluster {
        name: name.into(),
        version,
        zones: zones.iter().map(|z| z.to_string()).collect(),
        start,
    };
    let phase = |name: &str, days: u64, w: [u32; 3]| Phase {
        name: name.into(),
        hold: secs(days * DAY),
        weights: vec![
            ("aws".into(), w[0]),
            ("gcp".into(), w[1]),
            ("azure".into(), w[2]),
        ],
    };
    Plan {
        release: "match-engine v2".into(),
        clusters: vec![
            cluster(
                "aws",
                Version::Stable,
                ["use1-az1", "use1-az2", "use1-az3"],
                Start::Running,
            ),
            cluster(
                "gcp",
                Version::Canary,
                ["usc1-a", "usc1-b", "usc1-c"],
                Start::Running,
            ),
            cluster(
                "azure",
                Version::Canary,
                ["eus-1", "eus-2", "eus-3"],
                Start::Cold,
            ),
        ],
        edges: vec!["http://127.0.0.1:8001".into()],
        metrics: MetricsSource::Scrape { interval: secs(1) },
        baseline_window: secs(60),
        gates: Gates {
            latency_p99_ms_max: Some(15.0),
            latency_p99_vs_baseline_max: Some(1.5),
            error_ratio_max: Some(0.001),
            replica_lag_seq_max: Some(1000),
            output_hash_divergence: 0,
            min_requests: 200,
            breach_for: secs(2),
        },
        phases: vec![
            phase("warm-up", 1, [100, 0, 0]),
            phase("canary", 1, [95, 5, 0]),
            phase("expand", 2, [70, 30, 0]),
            phase("balance", 1, [45, 45, 10]),
            phase("done", 0, [34, 33, 33]),
        ],
        on_failure: OnFailure::Rollback,
    }
}

#[test]
fn line_of_counts_from_one() {
    assert_eq!(line_of("a\nb\nc", "a"), 1);
    assert_eq!(line_of("a\nb\nc", "b"), 2);
    assert_eq!(line_of("a\nbx\nc", "x"), 2);
    assert_eq!(line_of("a\nb\nc", "c"), 3);
}

#[test]
fn the_seed_plan_loads_to_the_source_release() {
    let plan = Plan::parse(SEED, FILE).expect("seed parses");
    assert_eq!(plan, seed_expected());
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rollout/seed.yaml");
    assert_eq!(Plan::load(&path).expect("seed loads"), seed_expected());
}

#[test]
fn crlf_line_ends_and_a_byte_order_mark_are_accepted() {
    let crlf = SEED.replace('\n', "\r\n");
    assert_eq!(Plan::parse(&crlf, FILE).unwrap(), seed_expected());
    let bom = format!("\u{feff}{SEED}");
    assert_eq!(Plan::parse(&bom, FILE).unwrap(), seed_expected());
    // Lines are still counted right.
    let bad = crlf.replace("breach_for: 2s", "breach_for: 2x");
    let e = Plan::parse(&bad, FILE).unwrap_err();
    assert_eq!(e.line(), Some(line_of(SEED, "breach_for: 2s")), "{e}");
}

#[test]
fn a_missing_file_names_the_file() {
    let e = Plan::load(std::path::Path::new("/nonexistent/plan.yaml")).unwrap_err();
    assert!(matches!(e, PlanError::Read { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/plan.yaml: cannot read"),
        "{e}"
    );
}

#[test]
fn errors_print_file_line_column_field_message() {
    let text = edit("aws: 95,  gcp: 5,", "aws: 95,  gcp: 4,");
    let e = refused(&text, "phases[1].weights", "gcp: 4,");
    let line = line_of(&text, "gcp: 4,");
    assert_eq!(
        e.to_string(),
        format!(
            "seed.yaml:{line}:{}: phases[1].weights: the weights of phase `canary` sum to 99; they must sum to 100",
            e.column().unwrap()
        )
    );
    // The column is the key `weights`.
    let line_text = text.lines().nth(line - 1).unwrap();
    assert_eq!(
        e.column(),
        Some(line_text.find("weights").unwrap() + 1),
        "{line_text}"
    );
}

#[test]
fn weights_must_be_whole_numbers_from_0_to_100_summing_to_100() {
    let e = bad(
        "{ aws: 45,  gcp: 45, azure: 10 }",
        "{ aws: 45,  gcp: 45, azure: 20 }",
        "phases[3].weights",
    );
    assert!(e.message().contains("`balance` sum to 110"), "{e}");
    bad(
        "gcp: 5,  azure: 0",
        "gcp: -5,  azure: 0",
        "phases[1].weights.gcp",
    );
    bad(
        "gcp: 5,  azure: 0",
        "gcp: 5.5,  azure: 0",
        "phases[1].weights.gcp",
    );
    bad(
        "gcp: 5,  azure: 0",
        "gcp: \"5\",  azure: 0",
        "phases[1].weights.gcp",
    );
    bad("aws: 100,", "aws: 101,", "phases[0].weights.aws");
    bad(
        "gcp: 5,  azure: 0",
        "gcp: ,  azure: 0",
        "phases[1].weights.gcp",
    );
    bad(
        "weights: { aws: 34,  gcp: 33, azure: 33 }",
        "weights: {}",
        "phases[4].weights",
    );
    bad(
        "weights: { aws: 34,  gcp: 33, azure: 33 }",
        "weights: [34, 33, 33]",
        "phases[4].weights",
    );
}

#[test]
fn a_phase_may_leave_out_a_cluster_with_weight_0() {
    let plan = Plan::parse(&edit("gcp: 0,  azure: 0 }", "gcp: 0 }"), FILE).unwrap();
    assert_eq!(plan.phases[0].weights, seed_expected().phases[0].weights);
    let plan = Plan::parse(
        &edit("{ aws: 100, gcp: 0,  azure: 0 }", "{ azure: 0, aws: 100 }"),
        FILE,
    )
    .unwrap();
    assert_eq!(plan.phases[0].weights, seed_expected().phases[0].weights);
}

#[test]
fn every_cluster_a_phase_names_is_in_clusters() {
    let e = bad(
        "gcp: 30, azure: 0",
        "gpc: 30, azure: 0",
        "phases[2].weights.gpc",
    );
    assert!(e.message().contains("clusters: aws, gcp, azure"), "{e}");
}

#[test]
fn a_plan_needs_a_running_stable_cluster() {
    let e = bad_at(
        "aws:   { version: stable,",
        "aws:   { version: canary,",
        "clusters",
        "clusters:  ",
    );
    assert!(e.message().contains("stable"), "{e}");
    let e = refused(
        &edit("use1-az3] }", "use1-az3], start: cold }"),
        "clusters",
        "clusters:  ",
    );
    assert!(e.message().contains("cold"), "{e}");
}

#[test]
fn cluster_fields_are_checked() {
    bad(
        "gcp:   { version: canary,",
        "gcp:   { version: beta,",
        "clusters.gcp.version",
    );
    bad("start: cold", "start: warm", "clusters.azure.start");
    bad(
        "zones: [usc1-a, usc1-b, usc1-c]",
        "zones: []",
        "clusters.gcp.zones",
    );
    bad(
        "zones: [usc1-a, usc1-b, usc1-c]",
        "zones: usc1-a",
        "clusters.gcp.zones",
    );
    bad(
        "[usc1-a, usc1-b, usc1-c]",
        "[usc1-a, usc1-b, usc1-a]",
        "clusters.gcp.zones[2]",
    );
    bad(
        "[usc1-a, usc1-b, usc1-c]",
        "[usc1-a, \"us c1\", usc1-c]",
        "clusters.gcp.zones[1]",
    );
    bad(
        "gcp:   { version: canary, zones: [usc1-a, usc1-b, usc1-c] }",
        "gcp:   { zones: [usc1-a, usc1-b, usc1-c] }",
        "clusters.gcp.version",
    );
    bad(
        "azure: { version: canary,",
        "\"az ure\": { version: canary,",
        "clusters.az ure",
    );
    bad(
        "start: cold }",
        "start: cold, weight: 5 }",
        "clusters.azure.weight",
    );
}

#[test]
fn durations_are_checked_with_their_field() {
    for (to, msg) in [
        ("hold: 1w,", "unknown unit"),
        ("hold: 30,", "no unit"),
        ("hold: 1.5d,", "not a duration"),
        ("hold: -1d,", "not a duration"),
        ("hold: 1h30m,", "not a duration"),
        ("hold: 400d,", "365d"),
        ("hold: ,", "no value"),
    ] {
        let e = bad("hold: 2d,", to, "phases[2].hold");
        assert!(e.message().contains(msg), "{to}: {e}");
    }
    bad("breach_for: 2s", "breach_for: 2", "gates.breach_for");
    bad("breach_for: 2s", "breach_for: 2 s", "gates.breach_for");
    bad("{ window: 60s }", "{ window: soon }", "baseline.window");
    bad("{ window: 60s }", "{ window: 0 }", "baseline.window");
    bad("interval: 1s  ", "interval: 10ms", "metrics.interval");
    bad("interval: 1s  ", "interval: 1h", "metrics.interval");
    // Every unit, and 0.
    for (text, d) in [
        ("500ms", Duration::from_millis(500)),
        ("30s", secs(30)),
        ("10m", secs(600)),
        ("2h", secs(7200)),
        ("1d", secs(DAY)),
        ("0", Duration::ZERO),
    ] {
        let plan = Plan::parse(&edit("hold: 2d,", &format!("hold: {text},")), FILE).unwrap();
        assert_eq!(plan.phases[2].hold, d, "{text}");
    }
}

#[test]
fn unknown_keys_are_named_never_ignored() {
    let e = bad("breach_for: 2s", "breach_fro: 2s", "gates.breach_fro");
    assert!(e.message().contains("did you mean `breach_for`"), "{e}");
    let e = bad("phases:\n", "phase:\n", "phase");
    assert!(e.message().contains("did you mean `phases`"), "{e}");
    bad("hold: 0,", "hold: 0, holdd: 1s,", "phases[4].holdd");
    let e = bad(
        "{ window: 60s }",
        "{ window: 60s, size: 3 }",
        "baseline.size",
    );
    assert!(e.message().contains("expected one of: window"), "{e}");
    bad(
        "latency_p99_ms_max: 15",
        "latency_p99_max_ms: 15",
        "gates.latency_p99_max_ms",
    );
    bad_at(
        "interval: 1s  ",
        "interval: 1s\n  url: http://127.0.0.1:9090",
        "metrics.url",
        "url: http",
    );
}

#[test]
fn missing_keys_are_named() {
    // A missing top-level key is reported at the top of the file.
    let e = refused(
        &edit("on_failure: rollback", ""),
        "on_failure",
        "# The source",
    );
    assert_eq!((e.line(), e.column()), (Some(1), Some(1)));
    refused(
        &edit(
            "  min_requests: 200              # a cluster is judged only on at least this many\n",
            "",
        ),
        "gates.min_requests",
        "gates:",
    );
    bad(
        "hold: 1d, weights: { aws: 95,",
        "weights: { aws: 95,",
        "phases[1].hold",
    );
    bad("{ name: done,    hold: 0,", "{ hold: 0,", "phases[4].name");
    bad("  interval: 1s  ", "  every: 1s  ", "metrics.every");
    refused(
        &edit("  interval: 1s  ", ""),
        "metrics.interval",
        "metrics:  ",
    );
    let e = refused("", "release", "");
    assert_eq!(e.line(), Some(1));
}

#[test]
fn on_failure_is_rollback_or_pause() {
    bad("on_failure: rollback", "on_failure: retry", "on_failure");
    let plan = Plan::parse(&edit("on_failure: rollback", "on_failure: pause"), FILE).unwrap();
    assert_eq!(plan.on_failure, OnFailure::Pause);
}

#[test]
fn phase_names_are_unique_and_not_empty() {
    let e = bad_at(
        "name: expand,",
        "name: canary,",
        "phases[2].name",
        "canary,  hold: 2d",
    );
    assert!(e.message().contains("phases[1]"), "{e}");
    bad("name: expand,", "name: \"\",", "phases[2].name");
    bad("name: expand,", "name: ,", "phases[2].name");
    refused(
        &edit("phases:\n", "phases: []\nx_key:\n"),
        "x_key",
        "x_key:",
    );
    let text = SEED.replace(
        &SEED[SEED.find("phases:\n").unwrap()..SEED.find("on_failure").unwrap()],
        "phases: []\n",
    );
    refused(&text, "phases", "phases: []");
}

#[test]
fn edges_are_distinct_http_urls() {
    for (to, msg) in [
        ("- ftp://127.0.0.1:8001", "http:// or https://"),
        ("- 127.0.0.1:8001", "http:// or https://"),
        ("- http://admin:secret@127.0.0.1:8001", "credentials"),
        ("- http://127.0.0.1:99999", "port"),
        ("- http://", "no host"),
        ("- http://127.0.0.1:8001/?x=1", "query"),
        ("- \"http://127.0.0.1 :8001\"", "space"),
    ] {
        let e = bad("- http://127.0.0.1:8001", to, "edges[0]");
        assert!(e.message().contains(msg), "{to}: {e}");
    }
    let e = bad_at(
        "- http://127.0.0.1:8001",
        "- http://127.0.0.1:8001\n  - http://127.0.0.1:8001 # again",
        "edges[1]",
        "8001 # again",
    );
    assert!(e.message().contains("edges[0]"), "{e}");
    bad_at("  - http://127.0.0.1:8001\n", "  []\n", "edges", "edges:");
    let plan = Plan::parse(
        &edit(
            "- http://127.0.0.1:8001",
            "- https://edge-1.example:8443/admin\n  - http://[::1]:8002",
        ),
        FILE,
    )
    .unwrap();
    assert_eq!(
        plan.edges,
        ["https://edge-1.example:8443/admin", "http://[::1]:8002"]
    );
}

#[test]
fn metrics_come_from_scrape_or_prometheus() {
    let text = edit(
        "  source: scrape                 # scrape: the edges' and nodes' /metrics directly\n  interval: 1s ",
        "  { source: prometheus, url: \"http://127.0.0.1:9090\", interval: 2s }",
    );
    let text = text.replace(
        "metrics:                         # where",
        "metrics: # where",
    );
    // The flow mapping on the next line is the value of `metrics`.
    let plan = Plan::parse(&text, FILE).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        plan.metrics,
        MetricsSource::Prometheus {
            url: "http://127.0.0.1:9090".into(),
            interval: secs(2)
        }
    );
    let one_line = edit("metrics:                         # where observations come from\n  source: scrape                 # scrape: the edges' and nodes' /metrics directly\n  interval: 1s  ", "metrics: { source: prometheus, url: http://127.0.0.1:9090, interval: 1s }");
    assert!(Plan::parse(&one_line, FILE).is_ok());
    bad("source: scrape ", "source: graphite ", "metrics.source");
    refused(
        &edit("source: scrape ", "source: prometheus "),
        "metrics.url",
        "metrics:",
    );
    bad_at(
        "source: scrape ",
        "source: prometheus\n  url: localhost:9090 ",
        "metrics.url",
        "url: localhost",
    );
}

#[test]
fn gates_are_finite_non_negative_and_divergence_is_0() {
    let e = bad(
        "output_hash_divergence: 0 ",
        "output_hash_divergence: 1 ",
        "gates.output_hash_divergence",
    );
    assert!(e.message().contains("must be 0"), "{e}");
    for v in ["-1", ".nan", "nan", "inf", ".inf", "1e999", "fast", "0"] {
        bad(
            "latency_p99_ms_max: 15 ",
            &format!("latency_p99_ms_max: {v} "),
            "gates.latency_p99_ms_max",
        );
    }
    bad(
        "error_ratio_max: 0.001",
        "error_ratio_max: 2",
        "gates.error_ratio_max",
    );
    bad(
        "error_ratio_max: 0.001",
        "error_ratio_max: -0.1",
        "gates.error_ratio_max",
    );
    bad(
        "latency_p99_vs_baseline_max: 1.5",
        "latency_p99_vs_baseline_max: 0.5",
        "gates.latency_p99_vs_baseline_max",
    );
    bad(
        "replica_lag_seq_max: 1000",
        "replica_lag_seq_max: -1",
        "gates.replica_lag_seq_max",
    );
    bad(
        "replica_lag_seq_max: 1000",
        "replica_lag_seq_max: 1e3",
        "gates.replica_lag_seq_max",
    );
    bad(
        "min_requests: 200 ",
        "min_requests: 0 ",
        "gates.min_requests",
    );
    bad("baseline: { window: 60s }", "baseline: 60s", "baseline");
    bad("baseline: { window: 60s }", "baseline: [60s]", "baseline");
    // Optional gates may be left out; output_hash_divergence is then 0.
    let text = edit(
        "  latency_p99_ms_max: 15         # absolute, per cluster with weight > 0\n",
        "",
    );
    let text = text.replace(
        "  output_hash_divergence: 0      # canary replicas agree with stable, seq by seq\n",
        "",
    );
    let plan = Plan::parse(&text, FILE).unwrap();
    assert_eq!(plan.gates.latency_p99_ms_max, None);
    assert_eq!(plan.gates.output_hash_divergence, 0);
}

#[test]
fn a_key_written_twice_is_refused() {
    let e = bad("gcp: 30, azure: 0", "gcp: 30, gcp: 0", "gcp");
    assert!(e.message().contains("twice"), "{e}");
    bad_at(
        "on_failure: rollback",
        "on_failure: rollback\non_failure: pause",
        "on_failure",
        "on_failure: pause",
    );
}

#[test]
fn yaml_that_is_not_a_plan_is_refused_with_its_line() {
    // An unclosed flow mapping: the parser notices on the next line.
    let text = edit("gcp: 5,  azure: 0 }", "gcp: 5,  azure: 0 ");
    let e = Plan::parse(&text, FILE).unwrap_err();
    assert_eq!(e.field(), Some("yaml"), "{e}");
    assert_eq!(
        e.line(),
        Some(line_of(&text, "gcp: 5,  azure: 0") + 1),
        "{e}"
    );
    refused("- a\n- b\n", "yaml", "- a");
    refused("just text\n", "yaml", "just");
    bad_at(
        "on_failure: rollback",
        "on_failure: rollback\n---\nrelease: x",
        "yaml",
        "---",
    );
    bad(
        "release: match-engine v2",
        "release: &r match-engine v2",
        "yaml",
    );
    bad(
        "release: match-engine v2",
        "release: !!str match-engine v2",
        "yaml",
    );
    bad("release: match-engine v2", "release: [a]", "release");
    bad_at(
        "release: match-engine v2",
        "release:\n  name: x",
        "release",
        "name: x",
    );
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    for text in [
        format!("release: {}", "[".repeat(200_000)),
        format!("release: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("release: {}", "{a: ".repeat(50_000)),
        format!("release:\n{}", "- ".repeat(100_000)),
    ] {
        let e = Plan::parse(&text, FILE).unwrap_err();
        assert_eq!(e.field(), Some("yaml"), "{e}");
    }
    let big = "#".repeat(tandem_rollout::plan::MAX_PLAN_BYTES + 1);
    assert!(Plan::parse(&big, FILE)
        .unwrap_err()
        .to_string()
        .contains("limit"));
}

#[test]
fn time_scale_divides_holds_and_baseline_with_floors() {
    let seed = seed_expected();
    // 1d / 17280 = 5s exactly; 2d -> 10s; 0 stays 0; 60s / 17280 < 10s.
    let fast = seed.scaled(17_280.0);
    let holds: Vec<Duration> = fast.phases.iter().map(|p| p.hold).collect();
    assert_eq!(holds, [secs(5), secs(5), secs(10), secs(5), Duration::ZERO]);
    assert_eq!(fast.baseline_window, secs(10));
    assert_eq!(
        fast.gates, seed.gates,
        "gates and breach_for are not scaled"
    );
    assert_eq!(fast.metrics, seed.metrics);
    // A moderate scale: plain division, to the millisecond.
    let half = seed.scaled(2.0);
    assert_eq!(half.phases[2].hold, secs(DAY));
    assert_eq!(half.baseline_window, secs(30));
    let third = seed.scaled(7.0);
    assert_eq!(third.phases[2].hold, Duration::from_millis(24_685_714));
    // Floors: a hold is never below 5 s, the baseline never below 10 s.
    let huge = seed.scaled(1e12);
    assert!(huge.phases[..4].iter().all(|p| p.hold == secs(5)));
    assert_eq!(huge.phases[4].hold, Duration::ZERO);
    assert_eq!(huge.baseline_window, secs(10));
    // Slower than real time is allowed and does not overflow.
    assert_eq!(seed.scaled(0.5).phases[0].hold, secs(2 * DAY));
    assert!(seed.scaled(1e-300).phases[0].hold > secs(1000 * DAY));
    // k = 1 leaves this plan as it is (every value is above the floors).
    assert_eq!(seed.scaled(1.0), seed);
    // A bad k is an error for the CLI, and changes nothing here.
    for k in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(check_time_scale(k).is_err(), "{k}");
        assert_eq!(seed.scaled(k), seed, "{k}");
    }
    assert_eq!(check_time_scale(3.0), Ok(3.0));
}

#[test]
fn the_summary_shows_every_part_of_the_plan() {
    let s = seed_expected().scaled(17_280.0).summary();
    for want in [
        "release: match-engine v2",
        "azure  canary  start cold     zones eus-1, eus-2, eus-3",
        "http://127.0.0.1:8001",
        "metrics: scrape every 1s",
        "baseline: 10s",
        "breach_for",
        "warm-up  hold 5s   aws 100, gcp 0, azure 0",
        "expand   hold 10s  aws 70, gcp 30, azure 0",
        "done     hold 0    aws 34, gcp 33, azure 33",
        "on_failure: rollback",
    ] {
        assert!(s.contains(want), "{want:?} in\n{s}");
    }
}

/// The seed with pieces cut out and bytes inserted: text close to a plan,
/// where a loader is most likely to trip.
fn mutated_seed() -> impl Strategy<Value = String> {
    mutate::mutated(SEED, " -~\n\t{}\\[\\]:,&*!|>'\"#-")
}

proptest! {
    // PROPTEST_CASES sets the number of cases (default 256).
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_is_parsed_or_refused_never_a_panic(text in "\\PC{0,400}") {
        check_never_panics(&text);
    }

    #[test]
    fn yaml_like_text_is_parsed_or_refused_never_a_panic(
        text in "[a-z0-9 \n\t{}\\[\\]:,&*!|>'\"#.%@`?-]{0,300}"
    ) {
        check_never_panics(&text);
    }

    #[test]
    fn a_mangled_seed_is_parsed_or_refused_never_a_panic(text in mutated_seed()) {
        check_never_panics(&text);
    }
}

fn check_never_panics(text: &str) {
    match Plan::parse(text, FILE) {
        Ok(plan) => {
            // Whatever parses obeys the rules.
            assert!(!plan.phases.is_empty());
            for p in &plan.phases {
                assert_eq!(p.weights.iter().map(|(_, w)| w).sum::<u32>(), 100);
            }
        }
        Err(e) => {
            assert!(e.line().unwrap() >= 1 && e.column().unwrap() >= 1, "{e}");
            let shown = e.to_string();
            assert!(shown.starts_with("seed.yaml:"), "{shown}");
        }
    }
}
