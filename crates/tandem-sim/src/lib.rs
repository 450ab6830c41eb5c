//! A seeded simulation of Tandem's data plane, in the spirit of
//! TigerBeetle's VOPR and FoundationDB's simulator: nodes (the real
//! replica and the node's real idempotency logic) over one simulated log,
//! an edge (the real routing and retry rules), and clients, all driven by
//! one scheduler on a virtual clock from one seed, with faults: failed and
//! slow appends, lost acknowledgements, lost and reordered responses,
//! crashes and restarts from snapshot, weight changes mid-request.
//! Invariants are checked after every step; a failing seed is replayed by
//! one command (see the crate's README section in ARCHITECTURE.md).

pub mod rng;
pub mod sched;
pub mod simlog;
pub mod world;

pub use world::{Faults, Options, Summary, Violation, World};

/// Runs the simulation of `seed`, with its snapshots under `dir`.
pub fn run_seed(seed: u64, dir: &std::path::Path) -> Result<Summary, Violation> {
    run_seed_with(seed, dir, |_| {})
}

/// Runs `seed` with its options changed by `change` first (a fix turned
/// off, to show the simulation finds the bug it fixes).
pub fn run_seed_with(
    seed: u64,
    dir: &std::path::Path,
    change: impl FnOnce(&mut Options),
) -> Result<Summary, Violation> {
    let mut opts = Options::from_seed(seed, dir.join(format!("seed-{seed}")));
    change(&mut opts);
    World::new(opts).run()
}

/// The fixes the simulation can be run without, by name: each turns off
/// what closed a bug it must be able to find.
pub fn revert(name: &str, opts: &mut Options) -> Result<(), String> {
    match name {
        // Cancels and amends not deduplicated by the nodes (before: a
        // cancel retried on another node answered `unknown_order`).
        "change-window" => opts.change_window = 0,
        // A SIGHUP reload takes the file's weights (before: it undid an
        // admin rollback).
        "reload-weights" => opts.reload_takes_file_weights = true,
        // Weight writes based on no generation: two writers that read the
        // same table overwrite each other (the lost update generations
        // close).
        "generation" => opts.writes_without_generation = true,
        // Amends appended without a base, while the edge and clients
        // repeat them: an amend whose first copy also reached the log
        // applies twice.
        "retry-safe-amends" => opts.retry_safe_amends = false,
        other => {
            return Err(format!(
            "unknown fix {other:?}: change-window, reload-weights, generation, retry-safe-amends"
        ))
        }
    }
    Ok(())
}
