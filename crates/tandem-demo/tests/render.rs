//! `report.md` and `report.html` from reports built here: a promoted
//! release, a bad canary that was rolled back, a divergent canary whose
//! events carry markup, and runs with extreme series. The page is checked
//! with a small tag checker (balanced tags, known tags only, no external
//! reference, coordinates inside each chart's viewBox) and, when Debian's
//! chromium is installed, rendered to a PNG.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tandem_demo::render;
use tandem_demo::report::{
    ClusterInfo, ClusterSecond, DemoReport, Divergence, Fault, Latency, Orders, PhaseReport,
    Rollback, Second,
};

const CLUSTERS: [&str; 3] = ["aws", "gcp", "azure"];

/// The seed's phases: name, weights (aws, gcp, azure).
const PLAN: [(&str, [u32; 3]); 5] = [
    ("warm-up", [100, 0, 0]),
    ("canary", [95, 5, 0]),
    ("expand", [70, 30, 0]),
    ("balance", [45, 45, 10]),
    ("done", [34, 33, 33]),
];

fn map<V: Copy>(values: [V; 3]) -> BTreeMap<String, V> {
    CLUSTERS
        .iter()
        .zip(values)
        .map(|(c, v)| ((*c).to_owned(), v))
        .collect()
}

fn lat(p50: f64, p95: f64, p99: f64, max: f64) -> Latency {
    Latency { p50, p95, p99, max }
}

/// A report with no phases and no series: the fixtures fill those in.
fn base(scenario: &str, result: &str) -> DemoReport {
    let info = |version: &str, start: &str| ClusterInfo {
        version: version.into(),
        zones: 3,
        nodes: 3,
        start: start.into(),
    };
    DemoReport {
        scenario: scenario.into(),
        result: result.into(),
        time_scale: 1440.0,
        clusters: [
            ("aws".to_owned(), info("stable", "warm")),
            ("gcp".to_owned(), info("canary", "warm")),
            ("azure".to_owned(), info("canary", "cold")),
        ]
        .into_iter()
        .collect(),
        zones: 9,
        phases: Vec::new(),
        orders: Orders {
            acknowledged: 24_000,
            lost: 0,
            duplicated: 0,
        },
        failed_requests: 0,
        rollback: None,
        divergence: None,
        cold_start_s: Some(1.8),
        replicas_agree: true,
        report: "out/report.html".into(),
        client_errors: 12,
        retried_ok: 3,
        requests: 0,
        final_seq: 48_211,
        final_hash: "9f3a0c51d2e4b677".into(),
        link_delay_ms: 0.8,
        broker_delay_ms: None,
        broker_storage: "sqlite://tansu.db".into(),
        rate: 500.0,
        gates: [
            ("latency_p99_ms_max", 15.0),
            ("error_ratio_max", 0.001),
            ("min_requests", 50.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        gates_changed: [("min_requests".to_owned(), (200.0, 50.0))]
            .into_iter()
            .collect(),
        faults: Vec::new(),
        problems: Vec::new(),
        latency_ms: lat(1.9, 4.4, 6.37, 31.0),
        started_unix_ms: 1_780_000_000_000,
        duration_s: 0.0,
        series: Vec::new(),
        broker_floor: None,
        worker: None,
        fetch_wait_ms: 2,
        cpu: Default::default(),
    }
}

/// One second with `total` requests split by `weights` (%), each cluster
/// with its own latency.
fn second(t_s: u64, total: u64, weights: [u32; 3], p99: [f64; 3], failed: u64) -> Second {
    let clusters = CLUSTERS
        .iter()
        .zip(weights)
        .zip(p99)
        .filter(|((_, w), _)| *w > 0)
        .map(|((c, w), p99)| {
            (
                (*c).to_owned(),
                ClusterSecond {
                    requests: total * u64::from(w) / 100,
                    p50_ms: p99 / 3.0,
                    p99_ms: p99,
                },
            )
        })
        .collect();
    Second {
        t_s,
        clusters,
        failed,
    }
}

/// Fills phases from the series: requests, failed and share per cluster
/// as measured, so that the figures the report shows are the series'.
fn phase(
    name: &str,
    weights: [u32; 3],
    start_s: u64,
    end_s: u64,
    series: &[Second],
) -> PhaseReport {
    let inside: Vec<&Second> = series
        .iter()
        .filter(|s| s.t_s >= start_s && s.t_s < end_s)
        .collect();
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = 0;
    for s in &inside {
        for (c, cs) in &s.clusters {
            *per.entry(c.clone()).or_default() += cs.requests;
        }
        failed += s.failed;
    }
    let answered: u64 = per.values().sum();
    let share = CLUSTERS
        .iter()
        .map(|c| {
            let n = per.get(*c).copied().unwrap_or(0);
            ((*c).to_owned(), n as f64 / answered.max(1) as f64)
        })
        .collect();
    let worst = inside
        .iter()
        .flat_map(|s| s.clusters.values().map(|c| c.p99_ms))
        .fold(0.0, f64::max);
    PhaseReport {
        name: name.into(),
        weights: map(weights),
        start_ms: start_s * 1000,
        end_ms: end_s * 1000,
        passed: worst <= 15.0,
        requests: answered + failed,
        failed,
        latency_ms: lat(worst / 3.0, worst * 0.8, worst * 0.97, worst * 1.3),
        share,
    }
}

/// The seed's plan, ten seconds a phase, with the measured split a little
/// off the weights (as a real client measures it).
fn promoted() -> DemoReport {
    let mut r = base("release", "promoted");
    let mut series = Vec::new();
    for (i, (_, w)) in PLAN.iter().enumerate() {
        for k in 0..10u64 {
            let t = i as u64 * 10 + k;
            let jitter = (t % 3) as f64 * 0.4;
            series.push(second(
                t,
                503 + t,
                *w,
                [4.1 + jitter, 5.2 + jitter, 6.3 + jitter],
                0,
            ));
        }
    }
    r.phases = PLAN
        .iter()
        .enumerate()
        .map(|(i, (name, w))| phase(name, *w, i as u64 * 10, i as u64 * 10 + 10, &series))
        .collect();
    r.requests = r.phases.iter().map(|p| p.requests).sum();
    r.duration_s = 50.0;
    r.faults = vec![Fault {
        at_ms: 25_300,
        kind: "kill-node".into(),
        detail: "aws-2 kill -9".into(),
    }];
    r.series = series;
    r.broker_floor = Some(tandem_demo::report::BrokerFloor {
        messages: 1000,
        rate: 100.0,
        start_ms: 1000,
        end_ms: 11000,
        floor_p50_ms: 12.65,
        floor_p99_ms: 22.64,
        client_requests: 1082,
        client_p50_ms: 34.2,
        client_p99_ms: 87.9,
        goal_p99_ms: 25.64,
        met: false,
    });
    r.cpu = tandem_demo::cpu::CpuUse {
        wall_s: 50.0,
        cpu_s: [("broker", 48.5), ("nodes", 7.5), ("edge", 1.0)]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
    };
    r
}

/// The canary answers in 150 ms once it has weight; the controller rolls
/// back to stable alone.
fn rolled_back() -> DemoReport {
    let mut r = base("bad-canary", "rolled_back");
    let mut series = Vec::new();
    for t in 0..10 {
        series.push(second(t, 500, [100, 0, 0], [4.0, 0.0, 0.0], 0));
    }
    for t in 10..18 {
        series.push(second(
            t,
            500,
            [95, 5, 0],
            [4.5, 150.0, 0.0],
            u64::from(t == 13) * 4,
        ));
    }
    for t in 18..24 {
        series.push(second(
            t,
            500,
            [100, 0, 0],
            [4.2, 0.0, 0.0],
            u64::from(t == 18) * 2,
        ));
    }
    r.phases = vec![
        phase("warm-up", [100, 0, 0], 0, 10, &series),
        phase("canary", [95, 5, 0], 10, 18, &series),
    ];
    r.requests = series
        .iter()
        .map(|s| s.clusters.values().map(|c| c.requests).sum::<u64>() + s.failed)
        .sum();
    r.failed_requests = series.iter().map(|s| s.failed).sum();
    r.rollback = Some(Rollback {
        breach_started_ms: 11_000,
        weights_applied_ms: 13_400,
        traffic_moved_ms: 14_500,
        seconds: 3.5,
    });
    r.latency_ms = lat(1.5, 5.0, 148.0, 212.0);
    r.duration_s = 24.0;
    r.series = series;
    r
}

/// The canary computes another event; it never gets weight. Its events,
/// its command and a problem carry markup that must not reach the page.
fn divergent() -> DemoReport {
    let mut r = base("divergent-canary", "stopped");
    let mut series = Vec::new();
    for t in 0..8 {
        series.push(second(t, 400, [100, 0, 0], [3.0, 0.0, 0.0], 0));
    }
    r.phases = vec![phase("warm-up", [100, 0, 0], 0, 8, &series)];
    r.requests = 3200;
    r.duration_s = 8.0;
    r.series = series;
    r.replicas_agree = false;
    r.divergence = Some(Divergence {
        seq: 4711,
        cluster: "gcp".into(),
        stable_event: r#"{"fill":{"qty":5,"note":"<script>alert('s')</script> & \"q\""}}"#.into(),
        canary_event: r#"{"fill":{"qty":4,"note":"</pre><script>alert(1)</script>&amp;"}}"#.into(),
        command: r#"{"new_order":{"side":"buy","tag":"a<b && c>d"}}"#.into(),
    });
    r.problems = vec![
        "canary <b>diverged</b> & was kept at 0 %".into(),
        "second line\n| not a table".into(),
    ];
    r
}

/// The figures' formatting the task asks for: ms with two decimals below
/// 10 and one above, shares in % with one decimal.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn pct(f: f64) -> String {
    format!("{:.1} %", f * 100.0)
}

/// The Markdown table row whose first cell is `first`.
fn md_row<'a>(md: &'a str, first: &str) -> Vec<&'a str> {
    let prefix = format!("| {first} |");
    md.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[test]
fn markdown_sets_each_phases_measurements_beside_the_sources_figures() {
    let r = promoted();
    let md = render::markdown(std::slice::from_ref(&r));
    let days = ["D0", "D1", "D2–D3", "D4", "D5"];
    for (p, day) in r.phases.iter().zip(days) {
        let rows = md_row(&md, &p.name);
        assert_eq!(rows.len(), 1, "one row for phase {}:\n{md}", p.name);
        let row = rows[0];
        let w = &p.weights;
        let weights = format!("{}/{}/{}", w["aws"], w["gcp"], w["azure"]);
        // The source's day and weights, this run's weights, then the
        // measurements.
        assert!(
            row.contains(&format!("| {day} | {weights} | {weights} |")),
            "{row}"
        );
        assert!(
            row.contains(&format!("| {} |", ms(p.latency_ms.p99))),
            "{row}"
        );
        assert!(
            row.contains(&format!("| {} |", ms(p.latency_ms.p50))),
            "{row}"
        );
        assert!(row.contains(&format!("| {} |", p.requests)), "{row}");
        for c in CLUSTERS {
            assert!(
                row.contains(&format!("| {} |", pct(p.share[c]))),
                "{c} in {row}"
            );
        }
    }
    // The measured share is not the weight: the row shows what was measured.
    let canary = &r.phases[1];
    assert_ne!(pct(canary.share["gcp"]), "5.0 %");

    // Targets and achieved: the source's figures and this run's.
    let p99 = md_row(&md, "P99 latency")[0];
    assert!(p99.contains("≤ 15 ms") && p99.contains("| 9 ms |"), "{p99}");
    assert!(
        p99.contains(&format!("{} ms", ms(r.latency_ms.p99))),
        "{p99}"
    );
    let zones = md_row(&md, "availability zones")[0];
    assert!(zones.contains("| 9 | 9 | 9 | yes |"), "{zones}");
    let rollback = md_row(&md, "rollback window")[0];
    assert!(
        rollback.contains("5 min") && rollback.contains("2 min"),
        "{rollback}"
    );
    assert!(rollback.contains("no rollback"), "{rollback}");
    let downtime = md_row(&md, "downtime of the release")[0];
    assert!(
        downtime.contains("25 min") && downtime.contains("0 s (0 failed"),
        "{downtime}"
    );
    let lost = md_row(&md, "lost orders")[0];
    assert!(
        lost.contains("0.4 %") && lost.contains("0 of 24000"),
        "{lost}"
    );
    assert!(md.contains("Downtime is counted from failed requests"));

    // Percentiles against the source's old and multi-cloud figures.
    for (name, old, multi, this) in [
        ("P50", 8, 4, r.latency_ms.p50),
        ("P95", 26, 7, r.latency_ms.p95),
        ("P99", 37, 9, r.latency_ms.p99),
    ] {
        let row = md_row(&md, name)[0];
        assert!(
            row.contains(&format!("| {old} ms | {multi} ms |")),
            "{name}: {row}"
        );
        assert!(
            row.contains(&format!("| {} ms |", ms(this))),
            "{name}: {row}"
        );
    }

    // Cold start, replicas, faults, gates, the honest note.
    assert!(md.contains("180 s; 12 s with pre-pulled images"));
    assert!(md.contains("1.8 s (azure)"), "{md}");
    assert!(md.contains(&format!("| {} |", r.final_seq)));
    assert!(md.contains(&r.final_hash));
    assert!(
        md.contains("| 25.3 | expand | kill-node | aws-2 kill -9 |"),
        "{md}"
    );
    assert!(md.contains("| min_requests | 50 | 200 |"), "{md}");
    assert!(md.contains("| latency_p99_ms_max | 15 | same |"), "{md}");
    assert!(md.contains("one machine") && md.contains("loopback"));
    assert!(md.contains("0.8 ms one way") && md.contains("link_delay_ms"));
    // The p99 beside the broker's own floor over the same seconds.
    let floor = md_row(&md, "P99 beside the broker's floor (same seconds)");
    assert_eq!(floor.len(), 1, "{md}");
    assert!(
        floor[0].contains("87.9 ms through the edge (1082 requests)")
            && floor[0].contains("p99 22.6 ms")
            && floor[0].ends_with("| no |"),
        "{}",
        floor[0]
    );
    // Where the CPU went: each part's seconds, cores and share.
    let broker = md_row(&md, "broker");
    assert_eq!(broker.len(), 1, "{md}");
    assert!(
        broker[0].contains("48.5 s") && broker[0].contains("0.97") && broker[0].contains("85 %"),
        "{}",
        broker[0]
    );
    assert!(md_row(&md, "all")[0].contains("57.0 s"), "{md}");
}

#[test]
fn markdown_of_a_rollback_and_a_divergence() {
    let (bad, div) = (rolled_back(), divergent());
    let md = render::markdown(&[bad.clone(), div.clone()]);

    let rollback = md_row(&md, "rollback window");
    assert_eq!(rollback.len(), 2, "{md}");
    assert!(rollback[0].contains("| 3.5 s | yes |"), "{}", rollback[0]);
    assert!(rollback[1].contains("no rollback"), "{}", rollback[1]);
    assert!(md.contains("| 11.0 | 13.4 | 14.5 | 3.5 |"), "{md}");
    // Failed requests fell in two seconds: two seconds of downtime.
    let downtime = md_row(&md, "downtime of the release")[0];
    assert!(
        downtime.contains(&format!("2 s ({} failed requests)", bad.failed_requests)),
        "{downtime}"
    );
    // The phase that did not pass, and the phases never reached.
    let canary = md_row(&md, "canary")[0];
    assert!(canary.ends_with("| no |"), "{canary}");
    assert!(canary.contains(&format!("| {} |", ms(bad.phases[1].latency_ms.p99))));
    assert!(
        md.contains("| expand | D2–D3 | 70/30/0 | not reached |"),
        "{md}"
    );
    assert!(
        md.contains("| done | D5 | 34/33/33 | not reached |"),
        "{md}"
    );

    // The divergence: seq, cluster, the command and both events verbatim
    // inside fenced blocks.
    let d = div.divergence.as_ref().unwrap();
    assert!(md.contains("At seq 4711 cluster gcp computed a different event"));
    for text in [&d.command, &d.stable_event, &d.canary_event] {
        assert!(md.contains(&format!("```\n{text}\n```")), "{text} in\n{md}");
    }
    // Problems come before the scenario's first table, escaped, one line
    // each.
    let section = &md[md.find("## Scenario divergent-canary").expect("section")..];
    let problems = section.find("Problems (2)").expect("problems shown");
    assert!(problems < section.find("### ").unwrap());
    assert!(
        section.contains("> - canary \\<b\\>diverged\\</b\\> \\& was kept at 0 %"),
        "{section}"
    );
    assert!(
        section.contains("> - second line \\| not a table"),
        "{section}"
    );
    // Outside the fenced blocks no markup from the data is left raw.
    let mut fenced = false;
    for line in md.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            assert!(!line.contains("<b>") && !line.contains("<script"), "{line}");
        }
    }
}

// ---------------------------------------------------------------------------
// A small HTML checker.

/// One tag of the page: its name, whether it closes, whether it closes
/// itself, and its attributes.
#[derive(Debug)]
struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    attrs: Vec<(String, String)>,
}

/// Every tag in order; the content of `<style>` is skipped. Panics on a
/// tag that does not end or an attribute value that is not quoted.
fn tags(html: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        if rest.starts_with('!') {
            let end = rest.find('>').expect("declaration ends");
            rest = &rest[end + 1..];
            continue;
        }
        let end = rest.find('>').expect("tag ends");
        let inner = &rest[..end];
        rest = &rest[end + 1..];
        let closing = inner.starts_with('/');
        let inner = inner.trim_start_matches('/');
        let self_closing = inner.ends_with('/');
        let inner = inner.trim_end_matches('/');
        let name_end = inner
            .find(|c: char| c.is_whitespace())
            .unwrap_or(inner.len());
        let name = inner[..name_end].to_ascii_lowercase();
        let mut attrs = Vec::new();
        let mut a = inner[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a
                .find('=')
                .unwrap_or_else(|| panic!("attribute without value: {a}"));
            let key = a[..eq].trim().to_ascii_lowercase();
            let value = a[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted value in <{name} {a}>"));
            let close = value.find('"').expect("value ends");
            attrs.push((key, value[..close].to_owned()));
            a = value[close + 1..].trim_start();
        }
        if name == "style" && !closing {
            let end = rest.find("</style>").expect("style ends");
            assert!(!rest[..end].contains('<'), "markup in the style sheet");
            rest = &rest[end..];
        }
        out.push(Tag {
            name,
            closing,
            self_closing,
            attrs,
        });
    }
    out
}

/// The tags the renderer emits; anything else came from data.
const KNOWN: &[&str] = &[
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "main",
    "section",
    "h1",
    "h2",
    "h3",
    "p",
    "div",
    "span",
    "strong",
    "ul",
    "li",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "pre",
    "code",
    "figure",
    "figcaption",
    "svg",
    "g",
    "rect",
    "line",
    "polyline",
    "circle",
    "text",
];

/// Balanced: every opened tag closed in order, only known tags, only
/// entities the renderer writes.
fn check_well_formed(html: &str) {
    let mut stack: Vec<String> = Vec::new();
    for tag in tags(html) {
        assert!(
            KNOWN.contains(&tag.name.as_str()),
            "unexpected tag <{}>",
            tag.name
        );
        if tag.closing {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{}> closes nothing", tag.name));
            assert_eq!(open, tag.name, "</{}> closes <{open}>", tag.name);
        } else if !tag.self_closing && tag.name != "meta" {
            stack.push(tag.name);
        }
    }
    assert!(stack.is_empty(), "left open: {stack:?}");
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    for (i, _) in html.match_indices('&') {
        let after = &html[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                .iter()
                .any(|e| after.starts_with(e)),
            "bare & at {}",
            &html[i..(i + 20).min(html.len())]
        );
    }
}

fn attr<'a>(tag: &'a Tag, name: &str) -> Option<&'a str> {
    tag.attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The tags of each `<svg>`, the svg's own first.
fn svgs(html: &str) -> Vec<Vec<Tag>> {
    let mut out: Vec<Vec<Tag>> = Vec::new();
    let mut inside = false;
    for tag in tags(html) {
        if tag.name == "svg" && !tag.closing {
            out.push(Vec::new());
            inside = true;
        }
        let end = tag.name == "svg" && tag.closing;
        if inside {
            out.last_mut().unwrap().push(tag);
        }
        if end {
            inside = false;
        }
    }
    out
}

/// Every coordinate of a chart's elements lies inside its viewBox.
fn check_inside_viewbox(svg: &[Tag]) {
    let vb: Vec<f64> = attr(&svg[0], "viewbox")
        .expect("viewBox")
        .split_whitespace()
        .map(|v| v.parse().expect("number"))
        .collect();
    let (w, h) = (vb[2], vb[3]);
    assert!(vb[0] == 0.0 && vb[1] == 0.0 && w > 0.0 && h > 0.0, "{vb:?}");
    let inside = |v: f64, max: f64, what: &str, tag: &Tag| {
        assert!(
            v.is_finite() && (0.0..=max).contains(&v),
            "{what}={v} outside 0..{max} in {tag:?}"
        );
    };
    for tag in &svg[1..] {
        let num = |k: &str| attr(tag, k).map(|v| v.parse::<f64>().unwrap_or(f64::NAN));
        for k in ["x", "x1", "x2", "cx"] {
            if let Some(v) = num(k) {
                inside(v, w, k, tag);
            }
        }
        for k in ["y", "y1", "y2", "cy"] {
            if let Some(v) = num(k) {
                inside(v, h, k, tag);
            }
        }
        if let Some(width) = num("width") {
            inside(width, w, "width", tag);
            inside(num("x").unwrap_or(0.0) + width, w + 0.05, "x+width", tag);
        }
        if let Some(height) = num("height") {
            inside(height, h, "height", tag);
            inside(num("y").unwrap_or(0.0) + height, h + 0.05, "y+height", tag);
        }
        if let Some(points) = attr(tag, "points") {
            for p in points.split_whitespace() {
                let (x, y) = p.split_once(',').expect("x,y");
                inside(x.parse().unwrap_or(f64::NAN), w, "points x", tag);
                inside(y.parse().unwrap_or(f64::NAN), h, "points y", tag);
            }
        }
    }
}

/// No NaN or infinity printed anywhere (Rust prints them `NaN`, `inf`).
fn assert_no_broken_number(page: &str) {
    for bad in ["NaN", "\"inf", "-inf", ">inf"] {
        assert!(!page.contains(bad), "{bad} in the page");
    }
}

/// The SVG elements of one chart with this class.
fn count_class(svg: &[Tag], class: &str) -> usize {
    svg.iter()
        .filter(|t| !t.closing && attr(t, "class") == Some(class))
        .count()
}

#[test]
fn the_page_is_well_formed_and_fetches_nothing() {
    let page = render::html(&[promoted(), rolled_back(), divergent()]);
    check_well_formed(&page);
    for tag in tags(&page) {
        for (k, v) in &tag.attrs {
            assert!(
                !matches!(
                    k.as_str(),
                    "src" | "href" | "xlink:href" | "srcset" | "action"
                ),
                "<{} {k}=\"{v}\">",
                tag.name
            );
            assert!(!v.contains("//"), "<{} {k}=\"{v}\">", tag.name);
            assert!(!v.contains("url("), "<{} {k}=\"{v}\">", tag.name);
        }
    }
    let style = &page[page.find("<style>").unwrap()..page.find("</style>").unwrap()];
    assert!(!style.contains("url(") && !style.contains("@import") && !style.contains("@font-face"));
    // None of the fixtures holds a URL, so none may appear at all.
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert_no_broken_number(&page);
}

#[test]
fn the_page_holds_the_same_tables_and_escapes_what_came_from_data() {
    let (good, bad, div) = (promoted(), rolled_back(), divergent());
    let page = render::html(&[good.clone(), bad, div.clone()]);
    let d = div.divergence.as_ref().unwrap();
    for text in [&d.command, &d.stable_event, &d.canary_event] {
        let escaped = text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;");
        assert!(page.contains(&escaped), "{escaped}");
    }
    assert!(page.contains("canary &lt;b&gt;diverged&lt;/b&gt; &amp; was kept at 0 %"));
    let lower = page.to_ascii_lowercase();
    assert!(!lower.contains("<script") && !lower.contains("<b>") && !lower.contains("</pre><"));
    // The same cells as the Markdown: a phase's p99 and share, the
    // source's figures.
    for p in &good.phases {
        assert!(page.contains(&format!("<td class=\"n\">{}</td>", ms(p.latency_ms.p99))));
        assert!(page.contains(&format!("<td class=\"n\">{}</td>", pct(p.share["gcp"]))));
    }
    for source in [
        "≤ 15 ms",
        "37 ms",
        "26 ms",
        "D2–D3",
        "5 min",
        "0.4 % lost to Kafka ISR churn",
    ] {
        assert!(page.contains(source), "{source}");
    }
    assert!(page.contains("<span class=\"result ok\">promoted</span>"));
    assert!(page.contains("<div class=\"problems\">"));
}

#[test]
fn each_chart_draws_one_band_per_phase_and_the_rollback_and_the_faults() {
    for r in [promoted(), rolled_back(), divergent()] {
        let page = render::html(std::slice::from_ref(&r));
        let charts = svgs(&page);
        assert_eq!(
            charts.len(),
            2,
            "{}: a latency and a share chart",
            r.scenario
        );
        for svg in &charts {
            assert_eq!(count_class(svg, "band"), r.phases.len(), "{}", r.scenario);
            let lines = if r.rollback.is_some() { 3 } else { 0 };
            assert_eq!(count_class(svg, "rollback"), lines, "{}", r.scenario);
            assert_eq!(count_class(svg, "fault"), r.faults.len(), "{}", r.scenario);
            check_inside_viewbox(svg);
        }
        // The latency chart's lines: p50 and p99 per cluster that answered.
        let answered: usize = CLUSTERS
            .iter()
            .filter(|c| {
                r.series
                    .iter()
                    .any(|s| s.clusters.get(**c).is_some_and(|cs| cs.requests > 0))
            })
            .count();
        let lines = charts[0]
            .iter()
            .filter(|t| t.name == "polyline" || t.name == "circle")
            .count();
        assert!(
            lines >= 2 * answered,
            "{}: {lines} lines for {answered} clusters",
            r.scenario
        );
    }
    // The rollback's lines sit where its moments are: in order, left to
    // right.
    let page = render::html(&[rolled_back()]);
    let xs: Vec<f64> = svgs(&page)[0]
        .iter()
        .filter(|t| !t.closing && attr(t, "class") == Some("rollback"))
        .map(|t| attr(t, "x1").unwrap().parse().unwrap())
        .collect();
    assert!(xs[0] < xs[1] && xs[1] < xs[2], "{xs:?}");
}

#[test]
fn extreme_series_stay_inside_the_charts() {
    // A second with no request at all, a 10 s p99, a cluster with
    // requests but a 0 ms latency, and moments past the series' end.
    let mut wild = rolled_back();
    wild.series[3].clusters.clear();
    wild.series[3].failed = 0;
    wild.series[12].clusters.get_mut("gcp").unwrap().p99_ms = 10_000.0;
    wild.series[5].clusters.get_mut("aws").unwrap().p50_ms = 0.0;
    wild.faults = vec![Fault {
        at_ms: 90_000,
        kind: "clock-skew".into(),
        detail: "+10 s".into(),
    }];
    // One second of data.
    let mut one = base("one-second", "failed");
    one.series = vec![second(0, 7, [100, 0, 0], [2.0, 0.0, 0.0], 1)];
    one.phases = vec![phase("warm-up", [100, 0, 0], 0, 1, &one.series)];
    // No series at all, one phase that ends before it starts, a rollback.
    let mut empty = base("empty", "failed");
    empty.phases = vec![phase("canary", [95, 5, 0], 5, 3, &[])];
    empty.rollback = Some(Rollback {
        breach_started_ms: 0,
        weights_applied_ms: 0,
        traffic_moved_ms: 0,
        seconds: 0.0,
    });
    // Only requests that failed, and a gate-free run.
    let mut failing = base("failing", "failed");
    failing.gates.clear();
    failing.series = (0..4)
        .map(|t| Second {
            t_s: t,
            clusters: BTreeMap::new(),
            failed: 9,
        })
        .collect();
    failing.failed_requests = 36;
    // A long run: bars grouped.
    let mut long = base("long", "promoted");
    long.series = (0..5000)
        .map(|t| second(t, 100, [34, 33, 33], [0.004, 2.0, 900.0], 0))
        .collect();

    for r in [wild, one, empty, failing, long] {
        let page = render::html(std::slice::from_ref(&r));
        check_well_formed(&page);
        assert_no_broken_number(&page);
        let charts = svgs(&page);
        assert_eq!(charts.len(), 2);
        for svg in &charts {
            check_inside_viewbox(svg);
            assert_eq!(count_class(svg, "band"), r.phases.len());
        }
        // Markdown survives the same data.
        let md = render::markdown(std::slice::from_ref(&r));
        assert!(md.contains(&format!("## Scenario {}", r.scenario)), "{md}");
    }
    let long_page = render::html(&[{
        let mut long = base("long", "promoted");
        long.series = (0..5000)
            .map(|t| second(t, 100, [34, 33, 33], [1.0, 2.0, 3.0], 0))
            .collect();
        long
    }]);
    let share = &svgs(&long_page)[1];
    let start = share
        .iter()
        .position(|t| attr(t, "class") == Some("bars"))
        .expect("a group of bars");
    let end = start
        + share[start..]
            .iter()
            .position(|t| t.name == "g" && t.closing)
            .expect("the group ends");
    let bars = share[start..end]
        .iter()
        .filter(|t| t.name == "rect")
        .count();
    assert!(bars > 0);
    assert!(bars <= 3 * 600, "{bars} bars for 5000 seconds");
}

#[test]
fn write_puts_both_files_into_a_new_directory() {
    let dir = std::env::temp_dir().join(format!("tandem-render-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let reports = [promoted(), rolled_back()];
    let (md, page) = render::write(&dir.join("out"), &reports).expect("write");
    assert_eq!(md, dir.join("out/report.md"));
    assert_eq!(page, dir.join("out/report.html"));
    assert_eq!(
        std::fs::read_to_string(&md).unwrap(),
        render::markdown(&reports)
    );
    assert_eq!(
        std::fs::read_to_string(&page).unwrap(),
        render::html(&reports)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Renders the page headless in Debian's chromium and checks a PNG came
/// out. Skipped, with a note, when chromium is not installed. Both reports
/// and the PNG are kept when `TANDEM_RENDER_KEEP` names a directory, to look at
/// them.
#[test]
fn chromium_renders_the_page() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        println!("note: /usr/bin/chromium missing, the page was not rendered");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tandem-render-png-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (md, page) = render::write(&dir, &[promoted(), rolled_back(), divergent()]).expect("write");
    let png = dir.join("report.png");
    let profile = dir.join("profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("a screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "a blank page? {} bytes", bytes.len());
    if let Ok(keep) = std::env::var("TANDEM_RENDER_KEEP") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep).expect("create the directory to keep them in");
        std::fs::copy(&png, keep.join("report.png")).expect("keep the PNG");
        std::fs::copy(&page, keep.join("report.html")).expect("keep the page");
        std::fs::copy(&md, keep.join("report.md")).expect("keep the Markdown");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
