//! Prints how the plan's weight steps split accounts and how many accounts
//! each step moves, beside the least any split could move.
//!
//! `cargo run --release -p tandem-route --example split [accounts]`
//! (default 100 000 accounts named `acct-0` …). A figure, not a test: the
//! tests in `src/tests.rs` assert the bounds.

use std::time::Instant;

use tandem_route::{route, Cluster, Request, Role};

const STEPS: [(&str, [u32; 3]); 6] = [
    ("D0 warm-up", [100, 0, 0]),
    ("D1 canary", [95, 5, 0]),
    ("D2-D3 expand", [70, 30, 0]),
    ("D4 balance", [45, 45, 10]),
    ("D5 done", [34, 33, 33]),
    ("rollback", [100, 0, 0]),
];

fn clusters(w: [u32; 3]) -> [Cluster<'static>; 3] {
    [
        Cluster {
            name: "aws",
            role: Role::Stable,
            weight: w[0],
        },
        Cluster {
            name: "gcp",
            role: Role::Canary,
            weight: w[1],
        },
        Cluster {
            name: "azure",
            role: Role::Canary,
            weight: w[2],
        },
    ]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("accounts: a number"))
        .unwrap_or(100_000);
    let accounts: Vec<String> = (0..n).map(|i| format!("acct-{i}")).collect();

    println!("{n} accounts, clusters aws (stable), gcp and azure (canary)");
    println!(
        "{:<12} {:>12} {:>20} {:>8} {:>8}",
        "step", "weights", "shares aws/gcp/azure", "moved", "minimum"
    );
    let mut prev: Option<(Vec<usize>, [u32; 3])> = None;
    let started = Instant::now();
    let mut decisions = 0u64;
    for (name, w) in STEPS {
        let c = clusters(w);
        let chosen: Vec<usize> = accounts
            .iter()
            .map(|a| {
                let req = Request {
                    pin: None,
                    account: Some(a.as_bytes()),
                    key: 0,
                };
                route(&c, &req).expect("a weighted cluster")
            })
            .collect();
        decisions += n as u64;
        let mut counts = [0usize; 3];
        for &i in &chosen {
            counts[i] += 1;
        }
        let pct = |x: usize| 100.0 * x as f64 / n as f64;
        let shares = format!(
            "{:.2}/{:.2}/{:.2}",
            pct(counts[0]),
            pct(counts[1]),
            pct(counts[2])
        );
        let (moved, minimum) = match &prev {
            Some((before, pw)) => {
                let m = before.iter().zip(&chosen).filter(|(a, b)| a != b).count();
                let min: u32 = pw.iter().zip(&w).map(|(a, b)| b.saturating_sub(*a)).sum();
                (format!("{:.2}%", pct(m)), format!("{min}%"))
            }
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<12} {:>12} {:>20} {:>8} {:>8}",
            name,
            format!("{}/{}/{}", w[0], w[1], w[2]),
            shares,
            moved,
            minimum
        );
        prev = Some((chosen, w));
    }

    // Requests without an account: the per-request key is a counter.
    let c = clusters([45, 45, 10]);
    let mut counts = [0usize; 3];
    for key in 0..n as u64 {
        let req = Request {
            pin: None,
            account: None,
            key,
        };
        counts[route(&c, &req).expect("a weighted cluster")] += 1;
    }
    decisions += n as u64;
    let pct = |x: usize| 100.0 * x as f64 / n as f64;
    println!(
        "no account, counter keys, 45/45/10: {:.2}/{:.2}/{:.2}",
        pct(counts[0]),
        pct(counts[1]),
        pct(counts[2])
    );
    let ns = started.elapsed().as_nanos() as f64 / decisions as f64;
    println!("{ns:.0} ns per decision over 3 clusters (this machine, one thread)");
}
