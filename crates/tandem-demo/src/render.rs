//! The report as `report.md` and a self-contained `report.html`.
//!
//! Both are built from the same blocks (headings, paragraphs, tables, code),
//! so their tables hold the same cells; the source document's figures stand
//! in their own columns beside this run's. The HTML page adds, per scenario,
//! two SVG charts drawn from the per-second series: latency per cluster and
//! traffic share per cluster, both with the phases as shaded bands and the
//! rollback and the faults as vertical lines. The page needs no script and
//! no network: the CSS and the SVG are inline and the fonts are the
//! system's. Every string that came from a report is escaped (HTML in the
//! page, Markdown in `report.md`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::report::{DemoReport, PhaseReport, Second};

/// The source's traffic plan: phase name, its day label and the share of
/// traffic per cloud in the order of [`SOURCE_CLOUDS`], in %.
const SOURCE_PHASES: [(&str, &str, [u32; 3]); 5] = [
    ("warm-up", "D0", [100, 0, 0]),
    ("canary", "D1", [95, 5, 0]),
    ("expand", "D2–D3", [70, 30, 0]),
    ("balance", "D4", [45, 45, 10]),
    ("done", "D5", [34, 33, 33]),
];
/// The source's clouds, in its tables' order, and their role there.
const SOURCE_CLOUDS: [(&str, &str); 3] = [
    ("aws", "AWS EKS, primary"),
    ("gcp", "GCP GKE, standby"),
    ("azure", "Azure AKS, cold standby"),
];
/// The source's percentiles, ms: name, old system, multi-cloud.
const SOURCE_PERCENTILES: [(&str, f64, f64); 3] =
    [("P50", 8.0, 4.0), ("P95", 26.0, 7.0), ("P99", 37.0, 9.0)];
pub const SOURCE_P99_TARGET_MS: f64 = 15.0;
const SOURCE_ZONES: u32 = 9;
const SOURCE_ROLLBACK_TARGET_S: f64 = 300.0;

/// `report.md` for these scenario runs.
pub fn markdown(reports: &[DemoReport]) -> String {
    let mut out = String::new();
    for block in document(reports) {
        md_block(&mut out, &block);
    }
    out
}

/// `report.html` for these scenario runs: one page, no script, nothing
/// fetched.
pub fn html(reports: &[DemoReport]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Tandem demo report</title>\n<style>\n",
    );
    out.push_str(CSS);
    out.push_str("</style>\n</head>\n<body>\n<main>\n");
    for block in document(reports) {
        html_block(&mut out, &block, reports);
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// Writes `report.md` and `report.html` into `dir` (created when missing)
/// and returns their paths, in that order.
pub fn write(dir: &Path, reports: &[DemoReport]) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let md = dir.join("report.md");
    let page = dir.join("report.html");
    std::fs::write(&md, markdown(reports))?;
    std::fs::write(&page, html(reports))?;
    Ok((md, page))
}

// ---------------------------------------------------------------------------
// The document, as blocks both renderers share.

/// One piece of the document. Text is plain: each renderer escapes it.
enum Block {
    Heading(u8, String),
    Para(String),
    /// A remark on how to read the figures.
    Note(String),
    /// What went wrong; shown first and set apart.
    Problems(Vec<String>),
    Table {
        head: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Code {
        label: String,
        text: String,
    },
    /// The charts of the report at this index (drawn in the HTML page).
    Charts(usize),
    /// One scenario run.
    Section(Vec<Block>),
}

fn document(reports: &[DemoReport]) -> Vec<Block> {
    let mut doc = vec![
        Block::Heading(
            1,
            "Tandem demo: the source's multi-cloud canary release, measured".into(),
        ),
        Block::Para(
            "The source document's release (D0 warm-up to D5 done over three clouds) run on \
             one machine with real processes: three clusters of three zones, one shared \
             order log, edges, the rollout controller and a load generator. Its tables are \
             filled below from what this run measured, each beside the source's own figures."
                .into(),
        ),
        Block::Note(honest_note(reports)),
    ];
    if reports.is_empty() {
        doc.push(Block::Para("No scenario was run.".into()));
        return doc;
    }
    doc.push(Block::Heading(2, "Scenarios".into()));
    doc.push(Block::Table {
        head: strings(&[
            "scenario",
            "result",
            "requests",
            "failed",
            "P99 ms",
            "rollback",
            "divergence",
            "replicas agree",
            "problems",
        ]),
        rows: reports
            .iter()
            .map(|r| {
                vec![
                    r.scenario.clone(),
                    r.result.clone(),
                    r.requests.to_string(),
                    r.failed_requests.to_string(),
                    ms(r.latency_ms.p99),
                    r.rollback
                        .map_or_else(|| "no".into(), |rb| format!("{} s", one(rb.seconds))),
                    r.divergence
                        .as_ref()
                        .map_or_else(|| "no".into(), |d| format!("at seq {}", d.seq)),
                    yes_no(r.replicas_agree).into(),
                    r.problems.len().to_string(),
                ]
            })
            .collect(),
    });
    for (i, r) in reports.iter().enumerate() {
        doc.push(Block::Section(scenario(i, r)));
    }
    doc
}

/// Where the figures come from, so that nobody reads them as three clouds'.
fn honest_note(reports: &[DemoReport]) -> String {
    let mut delays: Vec<String> = Vec::new();
    for r in reports {
        let d = format!("{} ms", num(r.link_delay_ms));
        if !delays.contains(&d) {
            delays.push(d);
        }
    }
    let delay = match delays.len() {
        0 => "a user-space delay".to_owned(),
        1 => format!("a user-space delay of {} one way", delays[0]),
        _ => format!(
            "a user-space delay one way ({})",
            reports
                .iter()
                .map(|r| format!("{}: {} ms", r.scenario, num(r.link_delay_ms)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "These figures come from one machine: every process talks over loopback, and each \
         cross-cloud link is {delay} (link_delay_ms), where the source measured about 0.8 ms \
         added by its tunnel. They show the release's shape and its checks, not what three \
         clouds would measure."
    )
}

fn scenario(i: usize, r: &DemoReport) -> Vec<Block> {
    let clusters = cluster_order(r);
    let mut b = vec![Block::Heading(
        2,
        format!("Scenario {}: {}", r.scenario, r.result),
    )];
    if !r.problems.is_empty() {
        b.push(Block::Problems(r.problems.clone()));
    }
    b.push(Block::Para(format!(
        "Result: {}. {} requests at {} orders/s offered over {} s, time scale {} (a source \
         day lasts {} s here); {} failed (no 2xx or 4xx answer after retries), {} answered \
         4xx (counted apart), {} answered after a retry.",
        result_meaning(&r.result),
        r.requests,
        num(r.rate),
        one(r.duration_s),
        num(r.time_scale),
        if r.time_scale > 0.0 {
            one(86_400.0 / r.time_scale)
        } else {
            "n/a".into()
        },
        r.failed_requests,
        r.client_errors,
        r.retried_ok,
    )));

    b.push(Block::Heading(3, "Traffic plan and phases".into()));
    b.push(phase_table(r, &clusters));
    b.push(Block::Note(
        "Weights are % of traffic per cluster as the plan sets them; share is the \
         fraction of the phase's answered requests each cluster answered, measured at the \
         client from the answer's cluster header. Latency is at the client, in ms."
            .into(),
    ));
    b.push(Block::Charts(i));

    b.push(Block::Heading(3, "Targets and results".into()));
    b.push(targets_table(r));
    b.push(Block::Note(
        "Downtime is counted from failed requests: none failed means 0 s of downtime; \
         otherwise it is the number of seconds in which at least one request failed (a \
         second with one failure among many counts whole)."
            .into(),
    ));

    b.push(Block::Heading(3, "Latency percentiles, whole run".into()));
    b.push(percentile_table(r));

    b.push(Block::Heading(3, "Clusters, cold start and links".into()));
    b.push(Block::Table {
        head: strings(&[
            "cluster",
            "role in the source",
            "version",
            "zones",
            "nodes",
            "start",
        ]),
        rows: clusters
            .iter()
            .map(|c| {
                let role = SOURCE_CLOUDS
                    .iter()
                    .find(|(n, _)| n == c)
                    .map_or("—", |(_, role)| role);
                match r.clusters.get(c) {
                    Some(info) => vec![
                        c.clone(),
                        role.into(),
                        info.version.clone(),
                        info.zones.to_string(),
                        info.nodes.to_string(),
                        info.start.clone(),
                    ],
                    None => vec![
                        c.clone(),
                        role.into(),
                        "—".into(),
                        "—".into(),
                        "—".into(),
                        "—".into(),
                    ],
                }
            })
            .collect(),
    });
    let cold: Vec<&str> = r
        .clusters
        .iter()
        .filter(|(_, info)| info.start == "cold")
        .map(|(name, _)| name.as_str())
        .collect();
    let cold_start = match r.cold_start_s {
        Some(s) if cold.is_empty() => format!("{} s", one(s)),
        Some(s) => format!("{} s ({})", one(s), cold.join(", ")),
        None => "no cluster started cold".into(),
    };
    b.push(Block::Table {
        head: strings(&["", "source", "this run"]),
        rows: vec![
            vec![
                "cold start (start to all nodes ready)".into(),
                "180 s; 12 s with pre-pulled images and a warm-up DaemonSet".into(),
                cold_start,
            ],
            vec![
                "cross-cloud link".into(),
                "about 0.8 ms added (Cloudflare tunnel)".into(),
                match r.broker_delay_ms {
                    Some(b) => format!(
                        "{} ms one way edge → node and {} ms node → broker, user-space delays \
                         on loopback",
                        num(r.link_delay_ms),
                        num(b)
                    ),
                    None => format!(
                        "{} ms one way edge → node, a user-space delay on loopback (none to \
                         the broker)",
                        num(r.link_delay_ms)
                    ),
                },
            ],
            vec![
                "Cloudflare Worker".into(),
                "the outer split in front of the clusters (weights in KV, up to 60 s to \
                 reach every location)"
                    .into(),
                worker_cell(r),
            ],
        ],
    });

    b.push(Block::Heading(3, "Replicas".into()));
    b.push(Block::Table {
        head: strings(&["replicas agree", "final seq", "final hash"]),
        rows: vec![vec![
            format!(
                "{} (every node's output hash {} at the final seq)",
                yes_no(r.replicas_agree),
                if r.replicas_agree {
                    "equal"
                } else {
                    "not equal"
                }
            ),
            r.final_seq.to_string(),
            r.final_hash.clone(),
        ]],
    });

    if r.cpu.wall_s > 0.0 {
        b.push(Block::Heading(3, "Where the CPU went".into()));
        b.push(cpu_table(r));
    }

    if let Some(rb) = &r.rollback {
        b.push(Block::Heading(3, "Rollback".into()));
        b.push(Block::Table {
            head: strings(&[
                "breach started s",
                "weights applied s",
                "traffic moved s",
                "window s",
            ]),
            rows: vec![vec![
                secs(rb.breach_started_ms),
                secs(rb.weights_applied_ms),
                secs(rb.traffic_moved_ms),
                one(rb.seconds),
            ]],
        });
        b.push(Block::Note(
            "The window runs from the breach's start to the first moment from which at \
             least 99 % of requests went to stable clusters, at the client."
                .into(),
        ));
    }

    if let Some(d) = &r.divergence {
        b.push(Block::Heading(3, "Divergence".into()));
        b.push(Block::Para(format!(
            "At seq {} cluster {} computed a different event than stable for the same \
             command.",
            d.seq, d.cluster
        )));
        b.push(Block::Code {
            label: "command".into(),
            text: d.command.clone(),
        });
        b.push(Block::Code {
            label: "stable event".into(),
            text: d.stable_event.clone(),
        });
        b.push(Block::Code {
            label: format!("{} event", d.cluster),
            text: d.canary_event.clone(),
        });
    }

    b.push(Block::Heading(3, "Faults injected".into()));
    if r.faults.is_empty() {
        b.push(Block::Para("None.".into()));
    } else {
        b.push(Block::Table {
            head: strings(&["at s", "phase", "kind", "detail"]),
            rows: r
                .faults
                .iter()
                .map(|f| {
                    vec![
                        secs(f.at_ms),
                        phase_at(&r.phases, f.at_ms).unwrap_or("—").to_owned(),
                        f.kind.clone(),
                        f.detail.clone(),
                    ]
                })
                .collect(),
        });
    }

    b.push(Block::Heading(3, "Gates".into()));
    b.push(gates_table(r));
    b
}

/// The Worker row's "this run" cell.
fn worker_cell(r: &DemoReport) -> String {
    let Some(w) = &r.worker else {
        return "off: the load went to the edge directly (`tandem demo --worker` puts the \
                Worker in front)"
            .into();
    };
    let by = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let probe = match &w.probe {
        Some(p) => format!(
            "; added latency, measured after the load by {} pairs of GET /readyz one at a time \
             (edge directly, then through the Worker): p50 {} ms ({} vs {}), p99 {} ms ({} vs {})",
            p.pairs,
            num(p.added_p50_ms),
            num(p.worker_p50_ms),
            num(p.direct_p50_ms),
            num(p.added_p99_ms),
            num(p.worker_p99_ms),
            num(p.direct_p99_ms)
        ),
        None => "; added latency not measured".into(),
    };
    format!(
        "on: deploy/cloudflare's Worker in workerd at {} with one origin, the edge at {}; it \
         served {} requests (counted by a tail worker in workerd; outcomes: {}; statuses: \
         {}){probe}",
        w.listen,
        w.origin,
        w.requests,
        by(&w.outcomes),
        by(&w.statuses)
    )
}

fn phase_table(r: &DemoReport, clusters: &[String]) -> Block {
    let order = clusters.join("/");
    let mut head = vec![
        "phase".to_owned(),
        "day (source)".into(),
        "weights aws/gcp/azure (source)".into(),
        format!("weights {order} (this run)"),
        "start s".into(),
        "end s".into(),
        "requests".into(),
        "failed".into(),
        "P50 ms".into(),
        "P95 ms".into(),
        "P99 ms".into(),
        "max ms".into(),
    ];
    head.extend(clusters.iter().map(|c| format!("share {c}")));
    head.push("passed".into());

    let mut rows = Vec::new();
    for p in &r.phases {
        let (day, source) = source_phase(&p.name);
        let mut row = vec![
            p.name.clone(),
            day,
            source,
            clusters
                .iter()
                .map(|c| p.weights.get(c).map_or("—".into(), |w| w.to_string()))
                .collect::<Vec<_>>()
                .join("/"),
            secs(p.start_ms),
            secs(p.end_ms),
            p.requests.to_string(),
            p.failed.to_string(),
            ms(p.latency_ms.p50),
            ms(p.latency_ms.p95),
            ms(p.latency_ms.p99),
            ms(p.latency_ms.max),
        ];
        row.extend(
            clusters
                .iter()
                .map(|c| p.share.get(c).map_or("—".into(), |s| pct(*s))),
        );
        row.push(yes_no(p.passed).into());
        rows.push(row);
    }
    // The source's phases this run did not reach, so the table still reads
    // beside the source's.
    for (name, day, w) in SOURCE_PHASES {
        if r.phases.iter().any(|p| p.name == name) {
            continue;
        }
        let mut row = vec![
            name.to_owned(),
            day.to_owned(),
            format!("{}/{}/{}", w[0], w[1], w[2]),
            "not reached".into(),
        ];
        row.extend(std::iter::repeat_n(String::new(), 8 + clusters.len() + 1));
        rows.push(row);
    }
    Block::Table { head, rows }
}

fn targets_table(r: &DemoReport) -> Block {
    let p99 = r.latency_ms.p99;
    let (rollback, rollback_held) = match &r.rollback {
        Some(rb) => (
            format!("{} s", one(rb.seconds)),
            yes_no(rb.seconds <= SOURCE_ROLLBACK_TARGET_S),
        ),
        None => ("no rollback".to_owned(), "—"),
    };
    let downtime = match downtime_s(r) {
        Some(0) => format!("0 s ({} failed requests)", r.failed_requests),
        Some(s) => format!("{s} s ({} failed requests)", r.failed_requests),
        None => format!("{} failed requests (no per-second data)", r.failed_requests),
    };
    let lost = format!(
        "{} of {} acknowledged ({}), {} duplicated",
        r.orders.lost,
        r.orders.acknowledged,
        ratio_pct(r.orders.lost, r.orders.acknowledged),
        r.orders.duplicated
    );
    Block::Table {
        head: strings(&[
            "metric",
            "target (source)",
            "achieved (source)",
            "this run",
            "target held",
        ]),
        rows: vec![
            vec![
                "P99 latency".into(),
                format!("≤ {} ms", num(SOURCE_P99_TARGET_MS)),
                "9 ms".into(),
                format!("{} ms", ms(p99)),
                yes_no(p99 <= SOURCE_P99_TARGET_MS).into(),
            ],
            floor_row(r),
            vec![
                "availability zones".into(),
                SOURCE_ZONES.to_string(),
                "9".into(),
                r.zones.to_string(),
                yes_no(r.zones >= SOURCE_ZONES).into(),
            ],
            vec![
                "rollback window".into(),
                "5 min".into(),
                "2 min".into(),
                rollback,
                rollback_held.into(),
            ],
            vec![
                "downtime of the release".into(),
                "0 min (old system: 25 min)".into(),
                "0 min".into(),
                downtime,
                yes_no(r.failed_requests == 0).into(),
            ],
            vec![
                "lost orders".into(),
                "—".into(),
                "0.4 % lost to Kafka ISR churn".into(),
                lost,
                yes_no(r.orders.lost == 0 && r.orders.duplicated == 0).into(),
            ],
        ],
    }
}

/// P99 through the edge against the broker's own produce→consume time over
/// the same seconds (see [`crate::report::BrokerFloor`]).
fn floor_row(r: &DemoReport) -> Vec<String> {
    let target = format!(
        "≤ {} ms, or the broker's p99 + 3 ms where that is higher",
        num(SOURCE_P99_TARGET_MS)
    );
    match &r.broker_floor {
        Some(f) => vec![
            "P99 beside the broker's floor (same seconds)".into(),
            target,
            "—".into(),
            format!(
                "{} ms through the edge ({} requests); the broker alone: p50 {} ms, p99 {} ms; \
                 goal {} ms",
                ms(f.client_p99_ms),
                f.client_requests,
                ms(f.floor_p50_ms),
                ms(f.floor_p99_ms),
                ms(f.goal_p99_ms)
            ),
            yes_no(f.met).into(),
        ],
        None => vec![
            "P99 beside the broker's floor (same seconds)".into(),
            target,
            "—".into(),
            "not measured".into(),
            "—".into(),
        ],
    }
}

/// CPU by part while the load ran: every part shares this machine's
/// cores, so the broker's share is what the others could not use.
fn cpu_table(r: &DemoReport) -> Block {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let total: f64 = r.cpu.cpu_s.values().sum();
    let mut rows: Vec<Vec<String>> = r
        .cpu
        .cpu_s
        .iter()
        .map(|(part, s)| {
            vec![
                part.clone(),
                format!("{} s", one(*s)),
                format!("{:.2}", s / r.cpu.wall_s),
                format!("{:.0} %", 100.0 * s / total.max(f64::MIN_POSITIVE)),
            ]
        })
        .collect();
    rows.push(vec![
        "all".into(),
        format!("{} s", one(total)),
        format!("{:.2} of {cores}", total / r.cpu.wall_s),
        "100 %".into(),
    ]);
    Block::Table {
        head: vec![
            "part".into(),
            format!("CPU over {} s of load", one(r.cpu.wall_s)),
            "cores".into(),
            "share".into(),
        ],
        rows,
    }
}

fn percentile_table(r: &DemoReport) -> Block {
    let run = [r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99];
    let mut rows: Vec<Vec<String>> = SOURCE_PERCENTILES
        .iter()
        .zip(run)
        .map(|((name, old, multi), this)| {
            vec![
                (*name).to_owned(),
                format!("{} ms", num(*old)),
                format!("{} ms", num(*multi)),
                change(*multi, *old),
                format!("{} ms", ms(this)),
                change(this, *old),
            ]
        })
        .collect();
    rows.push(vec![
        "max".into(),
        "—".into(),
        "—".into(),
        "—".into(),
        format!("{} ms", ms(r.latency_ms.max)),
        "—".into(),
    ]);
    Block::Table {
        head: strings(&[
            "percentile",
            "old (source)",
            "multi-cloud (source)",
            "change (source)",
            "this run",
            "this run vs old",
        ]),
        rows,
    }
}

fn gates_table(r: &DemoReport) -> Block {
    let mut names: Vec<&String> = r.gates.keys().collect();
    for name in r.gates_changed.keys() {
        if !r.gates.contains_key(name) {
            names.push(name);
        }
    }
    names.sort();
    let rows = names
        .into_iter()
        .map(|name| {
            let changed = r.gates_changed.get(name);
            let as_run = r
                .gates
                .get(name)
                .copied()
                .or(changed.map(|c| c.1))
                .map_or("—".into(), num);
            vec![
                name.clone(),
                as_run,
                changed.map_or("same".into(), |(seed, _)| num(*seed)),
            ]
        })
        .collect();
    Block::Table {
        head: strings(&["gate", "as run", "seed (when changed)"]),
        rows,
    }
}

/// The source's day label and weights (AWS/GCP/Azure) of a phase, by name.
fn source_phase(name: &str) -> (String, String) {
    SOURCE_PHASES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or(("—".into(), "—".into()), |(_, day, w)| {
            ((*day).into(), format!("{}/{}/{}", w[0], w[1], w[2]))
        })
}

fn result_meaning(result: &str) -> String {
    match result {
        "promoted" => "promoted, every phase passed to the last".into(),
        "rolled_back" => "rolled back, a gate did not hold and the controller moved traffic \
                          back"
            .into(),
        "stopped" => "stopped before the last phase".into(),
        "failed" => "failed, the run itself did not complete".into(),
        other => other.into(),
    }
}

/// Seconds of downtime as `report.md` counts them (see its note), or
/// `None` when requests failed and there is no series to place them in.
fn downtime_s(r: &DemoReport) -> Option<u64> {
    if r.failed_requests == 0 {
        return Some(0);
    }
    if r.series.is_empty() {
        return None;
    }
    Some(r.series.iter().filter(|s| s.failed > 0).count() as u64)
}

/// The phase that holds this moment, by name.
fn phase_at(phases: &[PhaseReport], at_ms: u64) -> Option<&str> {
    phases
        .iter()
        .find(|p| p.start_ms <= at_ms && at_ms < p.end_ms)
        .map(|p| p.name.as_str())
}

/// Every cluster the report names: the source's three first in its order,
/// then any other by name.
fn cluster_order(r: &DemoReport) -> Vec<String> {
    let mut names: Vec<String> = r.clusters.keys().cloned().collect();
    let more = r
        .phases
        .iter()
        .flat_map(|p| p.weights.keys().chain(p.share.keys()))
        .chain(r.series.iter().flat_map(|s| s.clusters.keys()));
    for name in more {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let rank = |n: &str| {
        SOURCE_CLOUDS
            .iter()
            .position(|(c, _)| *c == n)
            .unwrap_or(SOURCE_CLOUDS.len())
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    names
}

// ---------------------------------------------------------------------------
// Numbers.

/// Milliseconds: two decimals below 10, one above.
fn ms(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// A fraction as a percentage with one decimal.
fn pct(f: f64) -> String {
    if f.is_finite() {
        format!("{:.1} %", f * 100.0)
    } else {
        "n/a".into()
    }
}

/// `part` of `whole` in %, with more decimals when one decimal would show
/// a nonzero count as 0.0.
fn ratio_pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "n/a".into();
    }
    let p = part as f64 / whole as f64 * 100.0;
    if part > 0 && p < 0.1 {
        format!("{p:.4} %")
    } else {
        format!("{p:.1} %")
    }
}

/// Milliseconds since the start as seconds with one decimal.
fn secs(ms: u64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

fn one(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "n/a".into()
    }
}

/// A number as short as it reads: integers without decimals, others with
/// up to six, trailing zeros dropped.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The change from `old` to `new` in whole %, with a real minus sign as
/// the source writes it.
fn change(new: f64, old: f64) -> String {
    if !new.is_finite() || old == 0.0 {
        return "n/a".into();
    }
    let c = ((new - old) / old * 100.0).round();
    if c < 0.0 {
        format!("−{} %", -c)
    } else {
        format!("+{c} %")
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------
// Markdown.

fn md_block(out: &mut String, block: &Block) {
    match block {
        Block::Heading(level, text) => {
            let _ = writeln!(out, "{} {}\n", "#".repeat(*level as usize), md_text(text));
        }
        Block::Para(text) => {
            let _ = writeln!(out, "{}\n", md_text(text));
        }
        Block::Note(text) => {
            let _ = writeln!(out, "> {}\n", md_text(text));
        }
        Block::Problems(problems) => {
            let _ = writeln!(out, "> **⚠ Problems ({}):**\n>", problems.len());
            for p in problems {
                let _ = writeln!(out, "> - {}", md_cell(p));
            }
            out.push('\n');
        }
        Block::Table { head, rows } => {
            let cells = |row: &[String]| {
                let mut line = String::from("|");
                for c in row {
                    let _ = write!(line, " {} |", md_cell(c));
                }
                line
            };
            let _ = writeln!(out, "{}", cells(head));
            let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
            for row in rows {
                let _ = writeln!(out, "{}", cells(row));
            }
            out.push('\n');
        }
        Block::Code { label, text } => {
            // A fence longer than any run of backticks in the text.
            let mut longest = 0;
            let mut run = 0;
            for ch in text.chars() {
                run = if ch == '`' { run + 1 } else { 0 };
                longest = longest.max(run);
            }
            let fence = "`".repeat((longest + 1).max(3));
            let _ = writeln!(out, "{}:\n\n{fence}\n{}\n{fence}\n", md_text(label), text);
        }
        Block::Charts(_) => {
            out.push_str("Charts of latency and traffic share over time: see `report.html`.\n\n");
        }
        Block::Section(blocks) => {
            for b in blocks {
                md_block(out, b);
            }
        }
    }
}

/// Text that renders as itself: the characters Markdown (and the HTML it
/// lets through) would act on are backslash-escaped.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '\\' | '`' | '<' | '>' | '&' | '[' | ']' | '|') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Text for one table cell or list item: one line.
fn md_cell(s: &str) -> String {
    md_text(&s.replace(['\r', '\n'], " "))
}

// ---------------------------------------------------------------------------
// HTML.

const CSS: &str = "\
body{margin:0;background:#fafafa;color:#1f2328;font:14px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:24px;margin:8px 0 12px}
h2{font-size:20px;margin:32px 0 8px;padding-top:12px;border-top:2px solid #d0d7de}
h3{font-size:15px;margin:20px 0 6px}
.result{padding:1px 8px;border-radius:4px;color:#fff}
.result.ok{background:#1a7f37}.result.warn{background:#bf8700}.result.bad{background:#cf222e}
.note{color:#57606a;font-size:13px;margin:4px 0 10px}
.problems{border:2px solid #cf222e;background:#ffebe9;border-radius:6px;padding:8px 14px;margin:10px 0}
.problems strong{color:#cf222e}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px;background:#fff}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f3f6;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#f8f9fb}
.wide{overflow-x:auto}
pre{background:#f0f3f6;border:1px solid #d0d7de;border-radius:4px;padding:8px;white-space:pre-wrap;word-break:break-all;font-size:12px}
figure{margin:12px 0;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px}
figcaption{font-weight:600;font-size:13px;margin-bottom:4px}
svg{display:block;width:100%;height:auto}
svg text{font:11px system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;fill:#1f2328}
";

fn html_block(out: &mut String, block: &Block, reports: &[DemoReport]) {
    match block {
        Block::Heading(level, text) => {
            let _ = writeln!(out, "<h{level}>{}</h{level}>", esc(text));
        }
        Block::Para(text) => {
            let _ = writeln!(out, "<p>{}</p>", esc(text));
        }
        Block::Note(text) => {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(text));
        }
        Block::Problems(problems) => {
            let _ = writeln!(
                out,
                "<div class=\"problems\"><strong>⚠ Problems ({})</strong>\n<ul>",
                problems.len()
            );
            for p in problems {
                let _ = writeln!(out, "<li>{}</li>", esc(p));
            }
            out.push_str("</ul></div>\n");
        }
        Block::Table { head, rows } => {
            // A column of figures is right-aligned; "—", "not reached" and
            // empty cells do not make it text.
            let figures: Vec<bool> = (0..head.len())
                .map(|i| {
                    let cells = rows
                        .iter()
                        .filter_map(|row| row.get(i))
                        .filter(|c| !c.is_empty() && *c != "—" && *c != "not reached");
                    let mut any = false;
                    for c in cells {
                        if !numeric(c) {
                            return false;
                        }
                        any = true;
                    }
                    any
                })
                .collect();
            out.push_str("<div class=\"wide\"><table>\n<thead><tr>");
            for h in head {
                let _ = write!(out, "<th>{}</th>", esc(h));
            }
            out.push_str("</tr></thead>\n<tbody>\n");
            for row in rows {
                out.push_str("<tr>");
                for (i, c) in row.iter().enumerate() {
                    if figures.get(i).copied().unwrap_or(false) {
                        let _ = write!(out, "<td class=\"n\">{}</td>", esc(c));
                    } else {
                        let _ = write!(out, "<td>{}</td>", esc(c));
                    }
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody>\n</table></div>\n");
        }
        Block::Code { label, text } => {
            let _ = writeln!(
                out,
                "<p>{}:</p>\n<pre><code>{}</code></pre>",
                esc(label),
                esc(text)
            );
        }
        Block::Charts(i) => {
            if let Some(r) = reports.get(*i) {
                let clusters = cluster_order(r);
                let _ = writeln!(
                    out,
                    "<figure><figcaption>Latency per second at the client, p50 and p99 per \
                     cluster</figcaption>\n{}</figure>",
                    latency_chart(r, &clusters)
                );
                let _ = writeln!(
                    out,
                    "<figure><figcaption>Traffic share per second: requests answered by each \
                     cluster</figcaption>\n{}</figure>",
                    share_chart(r, &clusters)
                );
            }
        }
        Block::Section(blocks) => {
            out.push_str("<section>\n");
            let mut rest = blocks.iter();
            // The scenario's heading carries its result as a badge.
            if let (Some(Block::Heading(2, _)), Some(r)) =
                (blocks.first(), section_report(blocks, reports))
            {
                rest.next();
                let class = match r.result.as_str() {
                    "promoted" => "ok",
                    "rolled_back" | "stopped" => "warn",
                    _ => "bad",
                };
                let _ = writeln!(
                    out,
                    "<h2>Scenario {} <span class=\"result {class}\">{}</span></h2>",
                    esc(&r.scenario),
                    esc(&r.result)
                );
            }
            for b in rest {
                html_block(out, b, reports);
            }
            out.push_str("</section>\n");
        }
    }
}

/// The report a scenario's blocks were built from (found by its charts).
fn section_report<'a>(blocks: &[Block], reports: &'a [DemoReport]) -> Option<&'a DemoReport> {
    blocks.iter().find_map(|b| match b {
        Block::Charts(i) => reports.get(*i),
        _ => None,
    })
}

/// Whether a cell holds a figure: a number, maybe signed or bounded, maybe
/// with a unit (`6.37`, `95/5/0`, `≤ 15 ms`, `−50 %`).
fn numeric(cell: &str) -> bool {
    let body = cell.trim_start_matches(['≤', '−', '+', '-']).trim_start();
    let (figure, unit) = body.split_once(' ').unwrap_or((body, ""));
    figure.starts_with(|c: char| c.is_ascii_digit())
        && figure
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '/')
        && matches!(unit, "" | "ms" | "s" | "%" | "min")
}

/// HTML-escapes text for element content and attribute values alike.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Charts: hand-written SVG in a fixed viewBox. Every coordinate is clamped
// into the plot area, so extreme values (a 10 s p99, 0 requests, one second
// of data, none) stay on the canvas.

const W: f64 = 1000.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = W - 20.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = TOP + 240.0;
/// At most this many bars per chart; longer runs group seconds.
const MAX_BARS: u64 = 600;

const STABLE_COLOURS: [(&str, &str); 3] =
    [("aws", "#e07b00"), ("gcp", "#2f6fd6"), ("azure", "#16a085")];
const PALETTE: [&str; 6] = [
    "#8e44ad", "#c0392b", "#7f8c8d", "#b8860b", "#d35490", "#2c3e50",
];
const FAILED_COLOUR: &str = "#222222";
const ROLLBACK_COLOUR: &str = "#d62728";
const FAULT_COLOUR: &str = "#6a1b9a";

/// Each cluster's colour: the source's clouds fixed, any other from the
/// palette in order.
fn colours(clusters: &[String]) -> Vec<&'static str> {
    let mut others = 0;
    clusters
        .iter()
        .map(|c| match STABLE_COLOURS.iter().find(|(n, _)| n == c) {
            Some((_, colour)) => *colour,
            None => {
                others += 1;
                PALETTE[(others - 1) % PALETTE.len()]
            }
        })
        .collect()
}

/// The time axis of one report's charts.
struct TimeAxis {
    end_s: f64,
}

impl TimeAxis {
    /// From 0 to the latest moment the report names (at least 1 s).
    fn of(r: &DemoReport) -> TimeAxis {
        let mut end = r.duration_s;
        if let Some(last) = r.series.iter().map(|s| s.t_s).max() {
            end = end.max(last as f64 + 1.0);
        }
        for p in &r.phases {
            end = end.max(p.end_ms as f64 / 1000.0);
        }
        if let Some(rb) = &r.rollback {
            end = end.max(rb.traffic_moved_ms.max(rb.weights_applied_ms) as f64 / 1000.0);
        }
        for f in &r.faults {
            end = end.max(f.at_ms as f64 / 1000.0);
        }
        if !end.is_finite() || end < 1.0 {
            end = 1.0;
        }
        TimeAxis { end_s: end }
    }

    fn x(&self, t_s: f64) -> f64 {
        clamp(LEFT + t_s / self.end_s * (RIGHT - LEFT), LEFT, RIGHT)
    }
}

fn clamp(v: f64, lo: f64, hi: f64) -> f64 {
    if v.is_nan() {
        lo
    } else {
        v.clamp(lo, hi)
    }
}

/// A step of 1, 2 or 5 times a power of ten giving at most about `n`
/// ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A legend entry's mark.
enum Mark {
    Line {
        colour: &'static str,
        dash: &'static str,
        width: f64,
    },
    Swatch(&'static str),
}

/// Lays the legend out in rows under the plot; returns the SVG and the
/// height the whole chart needs.
fn legend(items: &[(Mark, String)]) -> (String, f64) {
    let mut out = String::from("<g class=\"legend\">");
    let top = BOTTOM + 48.0;
    let (mut x, mut y) = (LEFT, top);
    for (mark, label) in items {
        let label: String = truncate(label, 40);
        let width = 28.0 + label.chars().count() as f64 * 6.2 + 18.0;
        if x + width > W - 8.0 && x > LEFT {
            x = LEFT;
            y += 18.0;
        }
        match mark {
            Mark::Line {
                colour,
                dash,
                width,
            } => {
                let _ = write!(
                    out,
                    "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" \
                     stroke-width=\"{width}\"{}/>",
                    x,
                    y - 4.0,
                    x + 22.0,
                    y - 4.0,
                    dash_attr(dash)
                );
            }
            Mark::Swatch(colour) => {
                let _ = write!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"22\" height=\"10\" fill=\"{colour}\" \
                     stroke=\"#8c959f\" stroke-width=\"0.5\"/>",
                    x,
                    y - 9.0
                );
            }
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x + 28.0,
            y,
            esc(&label)
        );
        x += width;
    }
    out.push_str("</g>");
    (out, y + 12.0)
}

fn dash_attr(dash: &str) -> String {
    if dash.is_empty() {
        String::new()
    } else {
        format!(" stroke-dasharray=\"{dash}\"")
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The phases as shaded bands with their names above the plot (staggered
/// in two rows so that short phases' names do not overlap), a phase that
/// did not pass tinted red.
fn phase_bands(out: &mut String, r: &DemoReport, axis: &TimeAxis) {
    for (i, p) in r.phases.iter().enumerate() {
        let x0 = axis.x(p.start_ms as f64 / 1000.0);
        let x1 = axis.x(p.end_ms as f64 / 1000.0).max(x0);
        let fill = if !p.passed {
            "#fbe3e3"
        } else if i % 2 == 0 {
            "#eef1f6"
        } else {
            "#e2e7ef"
        };
        let weights = p
            .weights
            .iter()
            .map(|(c, w)| format!("{c} {w}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            out,
            "<rect class=\"band\" x=\"{x0:.1}\" y=\"{TOP:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
             fill=\"{fill}\"><title>{} {}–{} s ({})</title></rect>",
            x1 - x0,
            BOTTOM - TOP,
            esc(&p.name),
            secs(p.start_ms),
            secs(p.end_ms),
            esc(&weights)
        );
        // Room for the name: the band and, staggered, the next one's.
        let room = ((x1 - x0) * 2.0 / 6.5).floor().max(1.0) as usize;
        let y = if i % 2 == 0 { TOP - 20.0 } else { TOP - 6.0 };
        let _ = write!(
            out,
            "<line x1=\"{x0:.1}\" y1=\"{:.1}\" x2=\"{x0:.1}\" y2=\"{TOP:.1}\" stroke=\"#8c959f\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
            y - 10.0,
            (x0 + 3.0).min(RIGHT),
            esc(&truncate(&p.name, room))
        );
    }
}

/// The phases' edges drawn over the data, so they show through bars.
fn phase_edges(out: &mut String, r: &DemoReport, axis: &TimeAxis) {
    for p in &r.phases {
        let x = axis.x(p.start_ms as f64 / 1000.0);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{TOP:.1}\" x2=\"{x:.1}\" y2=\"{BOTTOM:.1}\" \
             stroke=\"#57606a\" stroke-width=\"0.8\" stroke-opacity=\"0.6\"/>"
        );
    }
}

/// The rollback's three moments and the faults as vertical lines.
fn markers(out: &mut String, r: &DemoReport, axis: &TimeAxis) {
    if let Some(rb) = &r.rollback {
        for (at, dash, what) in rollback_moments(rb) {
            let x = axis.x(at as f64 / 1000.0);
            let _ = write!(
                out,
                "<line class=\"rollback\" x1=\"{x:.1}\" y1=\"{TOP:.1}\" x2=\"{x:.1}\" \
                 y2=\"{BOTTOM:.1}\" stroke=\"{ROLLBACK_COLOUR}\" stroke-width=\"2\"{}>\
                 <title>{what} at {} s</title></line>",
                dash_attr(dash),
                secs(at)
            );
        }
    }
    for f in &r.faults {
        let x = axis.x(f.at_ms as f64 / 1000.0);
        // The kind reads upwards along the line, just right of it.
        let tx = (x + 11.0).min(RIGHT);
        let ty = BOTTOM - 4.0;
        let _ = write!(
            out,
            "<line class=\"fault\" x1=\"{x:.1}\" y1=\"{TOP:.1}\" x2=\"{x:.1}\" \
             y2=\"{BOTTOM:.1}\" stroke=\"{FAULT_COLOUR}\" stroke-width=\"1.5\" \
             stroke-dasharray=\"8 3 2 3\"><title>{} at {} s: {}</title></line>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" transform=\"rotate(-90 {tx:.1} {ty:.1})\" \
             style=\"fill:{FAULT_COLOUR}\">{}</text>",
            esc(&f.kind),
            secs(f.at_ms),
            esc(&f.detail),
            esc(&truncate(&f.kind, 30))
        );
    }
}

fn rollback_moments(rb: &crate::report::Rollback) -> [(u64, &'static str, &'static str); 3] {
    [
        (rb.breach_started_ms, "", "breach started"),
        (rb.weights_applied_ms, "7 3", "weights applied"),
        (rb.traffic_moved_ms, "2 3", "traffic moved"),
    ]
}

/// The legend entries both charts share: phases, rollback, faults.
fn common_legend(r: &DemoReport, items: &mut Vec<(Mark, String)>) {
    if !r.phases.is_empty() {
        items.push((Mark::Swatch("#e2e7ef"), "phase".into()));
        if r.phases.iter().any(|p| !p.passed) {
            items.push((Mark::Swatch("#fbe3e3"), "phase not passed".into()));
        }
    }
    if let Some(rb) = &r.rollback {
        for (at, dash, what) in rollback_moments(rb) {
            items.push((
                Mark::Line {
                    colour: ROLLBACK_COLOUR,
                    dash,
                    width: 2.0,
                },
                format!("{what} {} s", secs(at)),
            ));
        }
    }
    if !r.faults.is_empty() {
        items.push((
            Mark::Line {
                colour: FAULT_COLOUR,
                dash: "8 3 2 3",
                width: 1.5,
            },
            "fault injected".into(),
        ));
    }
}

/// The x axis: ticks, their labels and the axis title.
fn time_axis(out: &mut String, axis: &TimeAxis) {
    let step = nice_step(axis.end_s, 10.0);
    let mut t = 0.0;
    while t <= axis.end_s + step * 1e-9 {
        let x = axis.x(t);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{BOTTOM:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#57606a\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            BOTTOM + 5.0,
            BOTTOM + 17.0,
            num((t * 1000.0).round() / 1000.0)
        );
        t += step;
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT:.1}\" y1=\"{BOTTOM:.1}\" x2=\"{RIGHT:.1}\" y2=\"{BOTTOM:.1}\" \
         stroke=\"#57606a\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since the run's start</text>",
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 33.0
    );
}

fn y_title(out: &mut String, title: &str) {
    let (x, y) = (16.0, (TOP + BOTTOM) / 2.0);
    let _ = write!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" transform=\"rotate(-90 {x:.1} {y:.1})\" \
         text-anchor=\"middle\">{}</text>",
        esc(title)
    );
}

fn svg_open(out: &mut String, height: f64, label: &str) {
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {W:.0} {height:.0}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
}

/// A message in the middle of an empty plot.
fn no_data(out: &mut String) {
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"fill:#57606a\">\
         no per-second data</text>",
        (LEFT + RIGHT) / 2.0,
        (TOP + BOTTOM) / 2.0
    );
}

/// Latency per second: p50 (solid) and p99 (dashed) per cluster on a log
/// axis, so that a slow canary at 100 ms and more stays readable beside
/// stable clusters at a few ms. A second in which a cluster answered
/// nothing breaks its line.
fn latency_chart(r: &DemoReport, clusters: &[String]) -> String {
    let axis = TimeAxis::of(r);
    let colour = colours(clusters);
    let gate = r
        .gates
        .get("latency_p99_ms_max")
        .copied()
        .filter(|g| g.is_finite() && *g > 0.0);

    // The y range: whole decades around every value drawn.
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for s in &r.series {
        for c in s.clusters.values().filter(|c| c.requests > 0) {
            for v in [c.p50_ms, c.p99_ms] {
                if v.is_finite() && v > 0.0 {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
    }
    if let Some(g) = gate {
        lo = lo.min(g);
        hi = hi.max(g);
    }
    // The y range in log10: the values with a little room, at least one
    // decade, within 1 µs and 10⁷ ms.
    let (mut lo_l, mut hi_l) = if lo.is_finite() && hi.is_finite() {
        (lo.log10() - 0.15, hi.log10() + 0.15)
    } else {
        (0.0, 2.0)
    };
    lo_l = lo_l.clamp(-3.0, 6.0);
    hi_l = hi_l.clamp(-2.0, 7.0);
    if hi_l - lo_l < 1.0 {
        let mid = (hi_l + lo_l) / 2.0;
        lo_l = mid - 0.5;
        hi_l = mid + 0.5;
    }
    let y = |v: f64| {
        let l = if v > 0.0 && v.is_finite() {
            v.log10()
        } else {
            lo_l
        };
        clamp(
            BOTTOM - (l - lo_l) / (hi_l - lo_l) * (BOTTOM - TOP),
            TOP,
            BOTTOM,
        )
    };

    let mut items: Vec<(Mark, String)> = clusters
        .iter()
        .zip(&colour)
        .map(|(c, col)| {
            (
                Mark::Line {
                    colour: col,
                    dash: "",
                    width: 2.0,
                },
                c.clone(),
            )
        })
        .collect();
    items.push((
        Mark::Line {
            colour: "#57606a",
            dash: "",
            width: 1.5,
        },
        "p50".into(),
    ));
    items.push((
        Mark::Line {
            colour: "#57606a",
            dash: "5 3",
            width: 1.5,
        },
        "p99".into(),
    ));
    if let Some(g) = gate {
        items.push((
            Mark::Line {
                colour: "#8c959f",
                dash: "2 2",
                width: 1.0,
            },
            format!("p99 gate {} ms", num(g)),
        ));
    }
    common_legend(r, &mut items);
    let (legend_svg, height) = legend(&items);

    let mut out = String::new();
    svg_open(&mut out, height, "latency per second per cluster");
    phase_bands(&mut out, r, &axis);

    // The y axis: a tick at every decade in range, and at 2 and 5 times
    // it when there are few decades.
    let marks: &[f64] = if hi_l - lo_l <= 3.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    for e in lo_l.floor() as i32..=hi_l.ceil() as i32 {
        for m in marks {
            let v = 10f64.powi(e) * m;
            if v.log10() < lo_l || v.log10() > hi_l {
                continue;
            }
            let yy = y(v);
            let _ = write!(
                out,
                "<line x1=\"{LEFT:.1}\" y1=\"{yy:.1}\" x2=\"{RIGHT:.1}\" y2=\"{yy:.1}\" \
                 stroke=\"#d0d7de\" stroke-width=\"{}\"/>\
                 <line x1=\"{:.1}\" y1=\"{yy:.1}\" x2=\"{LEFT:.1}\" y2=\"{yy:.1}\" stroke=\"#57606a\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                if *m == 1.0 { 0.8 } else { 0.4 },
                LEFT - 5.0,
                LEFT - 7.0,
                yy + 4.0,
                ms_tick(v)
            );
        }
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT:.1}\" y1=\"{TOP:.1}\" x2=\"{LEFT:.1}\" y2=\"{BOTTOM:.1}\" stroke=\"#57606a\"/>"
    );
    y_title(&mut out, "latency, ms (log scale)");
    time_axis(&mut out, &axis);

    if let Some(g) = gate {
        let yy = y(g);
        let _ = write!(
            out,
            "<line class=\"gate\" x1=\"{LEFT:.1}\" y1=\"{yy:.1}\" x2=\"{RIGHT:.1}\" \
             y2=\"{yy:.1}\" stroke=\"#8c959f\" stroke-width=\"1\" stroke-dasharray=\"2 2\"/>"
        );
    }

    if r.series.is_empty() {
        no_data(&mut out);
    }
    let mut series: Vec<&Second> = r.series.iter().collect();
    series.sort_by_key(|s| s.t_s);
    for (c, col) in clusters.iter().zip(&colour) {
        for (pick, dash) in [(0, ""), (1, "5 3")] {
            let value = |s: &Second| {
                s.clusters.get(c).filter(|cs| cs.requests > 0).map(|cs| {
                    if pick == 0 {
                        cs.p50_ms
                    } else {
                        cs.p99_ms
                    }
                })
            };
            let mut segment: Vec<(f64, f64)> = Vec::new();
            let mut last_t: Option<u64> = None;
            for s in &series {
                let v = value(s);
                let consecutive = last_t.is_some_and(|t| t + 1 == s.t_s);
                if v.is_none() || !consecutive {
                    draw_segment(&mut out, &segment, col, dash);
                    segment.clear();
                }
                if let Some(v) = v {
                    segment.push((axis.x(s.t_s as f64 + 0.5), y(v)));
                    last_t = Some(s.t_s);
                } else {
                    last_t = None;
                }
            }
            draw_segment(&mut out, &segment, col, dash);
        }
    }

    markers(&mut out, r, &axis);
    out.push_str(&legend_svg);
    out.push_str("</svg>");
    out
}

/// A run of consecutive seconds as a line; a lone second as a dot.
fn draw_segment(out: &mut String, points: &[(f64, f64)], colour: &str, dash: &str) {
    match points {
        [] => {}
        [(x, y)] => {
            let _ = write!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{colour}\"/>"
            );
        }
        _ => {
            let pts: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = write!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\" \
                 stroke-linejoin=\"round\"{}/>",
                pts.join(" "),
                dash_attr(dash)
            );
        }
    }
}

/// An axis label for a latency in ms: seconds from 1000 ms on.
fn ms_tick(v: f64) -> String {
    if v >= 1000.0 {
        format!("{} s", num(v / 1000.0))
    } else {
        num((v * 1000.0).round() / 1000.0)
    }
}

/// Traffic share per second as stacked bars: each cluster's part of the
/// second's requests, failed requests on top, and the plan's weights per
/// phase as dashed lines at the same stacking, so the measured split reads
/// against the planned one.
fn share_chart(r: &DemoReport, clusters: &[String]) -> String {
    let axis = TimeAxis::of(r);
    let colour = colours(clusters);

    let mut items: Vec<(Mark, String)> = clusters
        .iter()
        .zip(&colour)
        .map(|(c, col)| (Mark::Swatch(col), c.clone()))
        .collect();
    if r.series.iter().any(|s| s.failed > 0) {
        items.push((Mark::Swatch(FAILED_COLOUR), "failed (no answer)".into()));
    }
    if !r.phases.is_empty() {
        items.push((
            Mark::Line {
                colour: "#111111",
                dash: "6 3",
                width: 1.2,
            },
            "planned weights".into(),
        ));
    }
    common_legend(r, &mut items);
    let (legend_svg, height) = legend(&items);

    let mut out = String::new();
    svg_open(&mut out, height, "traffic share per second per cluster");
    phase_bands(&mut out, r, &axis);
    let y = |f: f64| clamp(BOTTOM - f * (BOTTOM - TOP), TOP, BOTTOM);

    // Bars: seconds grouped so that there are at most MAX_BARS.
    let span = r.series.iter().map(|s| s.t_s + 1).max().unwrap_or(0);
    let group = span.div_ceil(MAX_BARS).max(1);
    let mut buckets: BTreeMap<u64, (Vec<u64>, u64)> = BTreeMap::new();
    for s in &r.series {
        let b = buckets
            .entry(s.t_s / group)
            .or_insert_with(|| (vec![0; clusters.len()], 0));
        for (i, c) in clusters.iter().enumerate() {
            b.0[i] += s.clusters.get(c).map_or(0, |cs| cs.requests);
        }
        b.1 += s.failed;
    }
    out.push_str("<g class=\"bars\">");
    for (key, (per_cluster, failed)) in &buckets {
        let total: u64 = per_cluster.iter().sum::<u64>() + failed;
        if total == 0 {
            continue;
        }
        let x0 = axis.x((key * group) as f64);
        let x1 = axis.x(((key + 1) * group) as f64).max(x0);
        let mut below = 0.0;
        let parts = per_cluster
            .iter()
            .zip(&colour)
            .map(|(n, col)| (*n, *col))
            .chain(std::iter::once((*failed, FAILED_COLOUR)));
        for (n, col) in parts {
            if n == 0 {
                continue;
            }
            let frac = n as f64 / total as f64;
            let top = y(below + frac);
            let bottom = y(below);
            below += frac;
            let _ = write!(
                out,
                "<rect x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                 fill=\"{col}\"/>",
                // A little wider than the second, so neighbours leave no
                // hairline gap.
                (x1 + 0.6).min(RIGHT) - x0,
                (bottom - top).max(0.0)
            );
        }
    }
    out.push_str("</g>");
    if r.series.is_empty() {
        no_data(&mut out);
    }

    // The plan: per phase, the stacked weights' boundaries.
    for p in &r.phases {
        let total: u32 = clusters.iter().filter_map(|c| p.weights.get(c)).sum();
        if total == 0 {
            continue;
        }
        let x0 = axis.x(p.start_ms as f64 / 1000.0);
        let x1 = axis.x(p.end_ms as f64 / 1000.0).max(x0);
        let mut below = 0u32;
        for c in &clusters[..clusters.len().saturating_sub(1)] {
            below += p.weights.get(c).copied().unwrap_or(0);
            if below == 0 || below == total {
                continue;
            }
            let yy = y(f64::from(below) / f64::from(total));
            let _ = write!(
                out,
                "<line class=\"plan\" x1=\"{x0:.1}\" y1=\"{yy:.1}\" x2=\"{x1:.1}\" y2=\"{yy:.1}\" \
                 stroke=\"#111111\" stroke-width=\"1.2\" stroke-dasharray=\"6 3\"/>"
            );
        }
    }
    phase_edges(&mut out, r, &axis);

    for f in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let yy = y(f);
        let _ = write!(
            out,
            "<line x1=\"{:.1}\" y1=\"{yy:.1}\" x2=\"{LEFT:.1}\" y2=\"{yy:.1}\" stroke=\"#57606a\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} %</text>",
            LEFT - 5.0,
            LEFT - 7.0,
            yy + 4.0,
            f * 100.0
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT:.1}\" y1=\"{TOP:.1}\" x2=\"{LEFT:.1}\" y2=\"{BOTTOM:.1}\" stroke=\"#57606a\"/>"
    );
    y_title(
        &mut out,
        if group > 1 {
            "share of requests (bars of several seconds)"
        } else {
            "share of requests per second"
        },
    );
    time_axis(&mut out, &axis);
    markers(&mut out, r, &axis);
    out.push_str(&legend_svg);
    out.push_str("</svg>");
    out
}
