//! `tandem-bench`: benchmarks of Tandem's matching core, against peers and
//! at scale.
//!
//! * `tandem-bench core [--ops N] [--seed S] [--json FILE] [--engines LIST] ...`
//!   generates one seeded single-market operation stream (see [`workload`]),
//!   then for every engine in [`ENGINES`] (Tandem, `lobster` 0.7.0 and
//!   `orderbook-rs` 0.15.3 from crates.io) measures throughput and per-op
//!   latency (see [`measure`]) and prints a table with machine info and the
//!   ratio of Tandem to each peer (see [`report`]). Neither peer does
//!   self-trade prevention; Tandem does. See the adapter modules for the
//!   exact mapping of add / cancel / market onto each engine's API.
//! * `tandem-bench capacity [--markets N] [--orders N] [--snapshot FILE] ...`
//!   fills one `tandem_core::Engine` with millions of markets and resting
//!   orders and reports build rate, RSS, snapshot size / write time and
//!   restore time against their targets (see [`capacity`]).
//! * `tandem-bench match [--ops N] [--write-flow FILE] ...` times
//!   `tandem_codec::run_match` (JSONL in, JSONL out) over the `core` stream
//!   rendered as contract command lines (see [`match_flow`]).
//! * `tandem-bench recovery [--orders N] [--markets M] [--tail T] ...`
//!   writes the capacity workload as command records to a `tandem_log::FileLog`
//!   and times a `tandem_replica::Replica` recovering it from empty, and
//!   from a snapshot plus a log tail (see [`recovery`]).
//! * `tandem-bench node [--rates LIST] [--kafka] ...` runs order entry
//!   through real nodes with the open-loop load generator, beside the disk's
//!   fsync floor and the server's `/healthz` floor (see [`node_bench`]).
//! * `tandem-bench edge [--rates LIST] [--upstream mock|node|both] ...` runs
//!   the same loadgen against three upstreams directly, through Tandem's
//!   edge and through nginx, and measures the edge's split (see
//!   [`edge_bench`]).
//! * `tandem-bench signed [--ops N] [--rates LIST] ...` times signing and
//!   verification per scheme per core (and Ed25519 batches), and runs node
//!   order entry with verification off beside on (see [`signed_bench`]).

mod args;
mod capacity;
mod edge_bench;
mod engine;
mod match_flow;
mod measure;
mod node_bench;
mod peer_lobster;
mod peer_orderbook_rs;
mod recovery;
mod report;
mod signed_bench;
mod tandem;
mod workload;

use std::process::ExitCode;
use std::time::Instant;

use args::{Cli, CoreArgs};
use measure::{run_engine, timer_overhead, EngineResult};
use report::MachineInfo;
use workload::{Workload, WorkloadConfig};

/// Runs one engine over a workload with `reps` throughput passes.
type Runner = fn(&Workload, usize) -> EngineResult;

/// Every engine compiled into this binary, in run order. To add an engine,
/// implement [`engine::BenchEngine`] and append `(NAME, run_engine::<Type>)`.
const ENGINES: &[(&str, Runner)] = &[
    (
        <tandem::Tandem as engine::BenchEngine>::NAME,
        run_engine::<tandem::Tandem>,
    ),
    (
        <peer_lobster::Lobster as engine::BenchEngine>::NAME,
        run_engine::<peer_lobster::Lobster>,
    ),
    (
        <peer_orderbook_rs::OrderbookRs as engine::BenchEngine>::NAME,
        run_engine::<peer_orderbook_rs::OrderbookRs>,
    ),
];

fn engine_names() -> Vec<&'static str> {
    ENGINES.iter().map(|(n, _)| *n).collect()
}

fn run_core(a: &CoreArgs) -> Result<(), String> {
    let mut selected: Vec<&(&str, Runner)> = Vec::new();
    for want in &a.engines {
        match ENGINES.iter().find(|(n, _)| n == want) {
            Some(e) => selected.push(e),
            None => {
                return Err(format!(
                    "unknown engine {want:?}; available: {}",
                    engine_names().join(", ")
                ))
            }
        }
    }
    if selected.is_empty() {
        selected = ENGINES.iter().collect();
    }

    let machine = MachineInfo::detect();
    let t_gen = Instant::now();
    let w = workload::generate(&WorkloadConfig {
        seed: a.seed,
        ops: a.ops,
        warmup_orders: a.warmup,
        accounts: a.accounts,
    });
    eprintln!(
        "generated {} warm-up + {} timed ops in {:.2} s (untimed)",
        w.warmup.len(),
        w.ops.len(),
        t_gen.elapsed().as_secs_f64()
    );
    let timer = timer_overhead(1_000_000);

    let mut results = Vec::new();
    for (name, run) in selected {
        eprintln!("running {name} ...");
        results.push(run(&w, a.reps));
    }

    report::print_header(&machine, &w, a.reps, &timer);
    report::print_results(&results);

    if let Some(path) = &a.json {
        let j = report::to_json(&machine, &w, a.reps, &timer, &results);
        std::fs::write(path, j.to_pretty()).map_err(|e| format!("writing {path}: {e}"))?;
        println!();
        println!("wrote {path}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match args::parse(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e}\n");
            eprint!("{}", args::usage(&engine_names()));
            return ExitCode::from(2);
        }
    };
    let r = match cli {
        Cli::Help => {
            print!("{}", args::usage(&engine_names()));
            return ExitCode::SUCCESS;
        }
        Cli::Core(a) => run_core(&a),
        Cli::Capacity(a) => capacity::run(&a),
        Cli::Match(a) => match_flow::run(&a),
        Cli::Recovery(a) => recovery::run(&a),
        Cli::Node(a) => node_bench::run(&a),
        Cli::Edge(a) => edge_bench::run(&a),
        Cli::Signed(a) => signed_bench::run(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
