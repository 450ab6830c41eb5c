//! `tandem-bench signed`: what signed orders cost (`docs/signing.md`).
//!
//! 1. Verifications per second per core, one thread, for each scheme, over
//!    `--ops` distinct signed places (the node's whole per-request check:
//!    account parsing, the canonical fields, the message or EIP-712 digest,
//!    the signature), beside signing (the client's cost) and Ed25519 batch
//!    verification (batches of 64, as `tandem verify-log` uses). Then the
//!    same verifications spread over every core.
//! 2. The node's order entry with verification off beside on, in one run:
//!    one node per case (file log, fsync off, so that the CPU is what is
//!    measured), the open-loop load generator in this process, unsigned
//!    orders to an `auth = "none"` node, then Ed25519- and EIP-712-signed
//!    orders to `auth = "signed"` nodes, at `--rates`; then a search for
//!    the highest sustained rate of each. The load generator signs each
//!    request when it builds it, on the same cores as the node: that
//!    client cost is in the signed runs' latency and throughput, and the
//!    signing figures of part 1 say how much it is.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tandem_core::Command;
use tandem_loadgen::{LoadgenConfig, Report};
use tandem_node::auth::keys::SecretKey;
use tandem_node::auth::{Credentials, Policy, Scheme};
use tandem_node::config::AuthMode;

use crate::node_bench::{node_config, RunningNode};

/// Flags of `tandem-bench signed`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedArgs {
    /// Signed commands per scheme in part 1.
    pub ops: usize,
    pub rates: Vec<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub search: bool,
    pub max_p99_ms: f64,
    pub connections: usize,
    pub dir: PathBuf,
    pub json: Option<String>,
}

impl Default for SignedArgs {
    fn default() -> Self {
        SignedArgs {
            ops: 20_000,
            rates: vec![10_000.0],
            duration_s: 10.0,
            warmup_s: 2.0,
            search: true,
            max_p99_ms: 100.0,
            connections: 64,
            dir: std::env::temp_dir().join("tandem-bench-signed"),
            json: None,
        }
    }
}

const CHAIN_ID: u64 = 1;
const KEYS: u64 = 1000;
const BATCH: usize = 64;

/// `ops` distinct places signed by `KEYS` keys of `scheme`.
fn signed_flow(scheme: Scheme, ops: usize, policy: &Policy) -> (Vec<Command>, Vec<SecretKey>) {
    let keys: Vec<SecretKey> = (0..KEYS)
        .map(|i| SecretKey::derive(scheme, 77, i))
        .collect();
    let cmds = (0..ops)
        .map(|i| {
            let k = &keys[i % keys.len()];
            let line = format!(
                r#"{{"op":"place","market":"MKT{}","id":"b{i}","account":"{}","side":"{}","price":"{}.{:02}","qty":"{}"}}"#,
                i % 10,
                k.account(),
                if i % 2 == 0 { "buy" } else { "sell" },
                100 + i % 50,
                i % 100,
                1 + i % 9
            );
            let cmd = tandem_codec::decode_command(line.as_bytes());
            assert!(policy.verify(&cmd, &sign_one(k, &cmd, policy)).is_ok());
            cmd
        })
        .collect();
    (cmds, keys)
}

fn sign_one(k: &SecretKey, cmd: &Command, policy: &Policy) -> Credentials {
    k.sign(cmd, 2_000_000_000, policy).expect("a valid command")
}

/// Figures of one scheme in part 1.
struct Cpu {
    scheme: &'static str,
    sign_us: f64,
    verify_us: f64,
    batch_us: Option<f64>,
    all_cores_per_s: f64,
    threads: usize,
}

/// Median of `reps` timings of `f`, in µs per item of `n`.
fn per_item_us(reps: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn cpu(scheme: Scheme, ops: usize, policy: &Policy) -> Cpu {
    let (cmds, keys) = signed_flow(scheme, ops, policy);
    let owner = |i: usize| &keys[i % keys.len()];
    let mut creds = Vec::with_capacity(ops);
    let sign_us = per_item_us(3, ops, || {
        creds = cmds
            .iter()
            .enumerate()
            .map(|(i, c)| sign_one(owner(i), c, policy))
            .collect();
    });
    let verify_us = per_item_us(3, ops, || {
        for (c, s) in cmds.iter().zip(&creds) {
            assert!(policy.verify(c, s).is_ok());
        }
    });
    let batch_us = (scheme == Scheme::Ed25519).then(|| {
        let items: Vec<(&Command, &Credentials)> = cmds.iter().zip(&creds).collect();
        per_item_us(3, ops, || {
            for chunk in items.chunks(BATCH) {
                assert!(policy.verify_ed25519_batch(chunk));
            }
        })
    });
    // Every core: the flow split into one share per thread.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (cmds, creds) = (&cmds, &creds);
            s.spawn(move || {
                for i in (t..cmds.len()).step_by(threads) {
                    assert!(policy.verify(&cmds[i], &creds[i]).is_ok());
                }
            });
        }
    });
    let all_cores_per_s = ops as f64 / start.elapsed().as_secs_f64();
    Cpu {
        scheme: scheme.as_str(),
        sign_us,
        verify_us,
        batch_us,
        all_cores_per_s,
        threads,
    }
}

/// One node case of part 2.
struct Case {
    name: &'static str,
    auth: AuthMode,
    sign: Option<&'static str>,
}

const CASES: [Case; 3] = [
    Case {
        name: "unsigned, auth=none",
        auth: AuthMode::None,
        sign: None,
    },
    Case {
        name: "ed25519, auth=signed",
        auth: AuthMode::Signed,
        sign: Some("ed25519"),
    },
    Case {
        name: "eip712, auth=signed",
        auth: AuthMode::Signed,
        sign: Some("eip712"),
    },
];

fn load(
    target: &str,
    rate: f64,
    a: &SignedArgs,
    sign: Option<&str>,
    seed: u64,
) -> Result<Report, String> {
    let cfg = LoadgenConfig {
        targets: vec![target.to_owned()],
        rate,
        duration_s: a.duration_s,
        warmup_s: a.warmup_s,
        connections: a.connections,
        seed,
        id_prefix: Some(format!("s{seed}r{}", rate as u64)),
        verify: true,
        sign: sign.map(str::to_owned),
        sign_chain_id: CHAIN_ID,
        ..LoadgenConfig::default()
    };
    tandem_loadgen::run(&cfg).map_err(|e| e.to_string())
}

fn sustained(r: &Report, a: &SignedArgs) -> bool {
    let bad = r
        .verify
        .as_ref()
        .is_some_and(|v| v.lost + v.duplicated + v.inconsistent > 0);
    r.achieved_rate >= 0.97 * r.target_rate
        && r.errors.total() == 0
        && !bad
        && r.latency_us.p99 <= a.max_p99_ms * 1000.0
}

fn print_row(case: &str, what: &str, r: &Report) {
    let l = &r.latency_us;
    let (lost, dup) = r.verify.as_ref().map_or(("-".into(), "-".into()), |v| {
        (v.lost.to_string(), v.duplicated.to_string())
    });
    println!(
        "{case:<22} {what:<12} {:>9.0} {:>9.0} {:>8.0} {:>8.0} {:>9.0} {:>9.0} {:>7} {:>5} {:>4}",
        r.target_rate,
        r.achieved_rate,
        l.p50,
        l.p99,
        l.p99_9,
        l.max,
        r.errors.total(),
        lost,
        dup
    );
}

pub fn run(a: &SignedArgs) -> Result<(), String> {
    let policy = Policy::new(CHAIN_ID, 300, 5);
    println!(
        "tandem-bench signed: {} cpus; load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    );
    println!(
        "\npart 1: {} distinct signed places per scheme ({KEYS} keys), one thread unless said; \
         median of 3 passes",
        a.ops
    );
    println!(
        "{:<8} {:>9} {:>11} {:>9} {:>11} {:>13} {:>13} {:>16}",
        "scheme",
        "sign us",
        "sign/s",
        "verify us",
        "verify/s",
        "batch64 us",
        "batch64/s",
        "verify/s, cores"
    );
    let mut cpus = Vec::new();
    for scheme in [Scheme::Ed25519, Scheme::Eip712] {
        let c = cpu(scheme, a.ops, &policy);
        println!(
            "{:<8} {:>9.1} {:>11.0} {:>9.1} {:>11.0} {:>13} {:>13} {:>16}",
            c.scheme,
            c.sign_us,
            1e6 / c.sign_us,
            c.verify_us,
            1e6 / c.verify_us,
            c.batch_us.map_or("-".into(), |b| format!("{b:.1}")),
            c.batch_us.map_or("-".into(), |b| format!("{:.0}", 1e6 / b)),
            format!("{:.0} ({} thr)", c.all_cores_per_s, c.threads),
        );
        cpus.push(c);
    }

    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).map_err(|e| e.to_string())?;
    println!(
        "\npart 2: one node per case (file log, fsync off), loadgen in this process \
         ({} connections, {} s after {} s warm-up; signed runs sign in the loadgen)",
        a.connections, a.duration_s, a.warmup_s
    );
    println!(
        "{:<22} {:<12} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>7} {:>5} {:>4}",
        "case",
        "load",
        "target/s",
        "got/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors",
        "lost",
        "dup"
    );
    let mut runs = Vec::new();
    let mut seed = 0u64;
    for case in &CASES {
        let mut cfg = node_config(&a.dir, &format!("n-{seed}"), false);
        cfg.auth = Some(case.auth);
        cfg.signing.chain_id = CHAIN_ID;
        let node = RunningNode::start(cfg)?;
        let url = format!("http://{}", node.addr);
        for &rate in &a.rates {
            seed += 1;
            let r = load(&url, rate, a, case.sign, seed)?;
            print_row(case.name, "orders", &r);
            runs.push((case.name, "orders", r));
        }
        if a.search {
            let mut rate = a.rates.iter().copied().fold(5_000.0, f64::max) * 1.5;
            let mut best = None;
            while rate <= 200_000.0 {
                seed += 1;
                let r = load(&url, rate, a, case.sign, seed)?;
                let ok = sustained(&r, a);
                print_row(case.name, if ok { "search ok" } else { "search miss" }, &r);
                runs.push((case.name, if ok { "search ok" } else { "search miss" }, r));
                if !ok {
                    break;
                }
                best = Some(rate);
                rate *= 1.3;
            }
            match best {
                Some(b) => println!(
                    "{}: highest sustained rate tried: {b:.0} orders/s",
                    case.name
                ),
                None => println!("{}: no searched rate was sustained", case.name),
            }
        }
        drop(node);
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "\nlatency from each request's intended send time (open loop); a signed run's \
         latency includes the loadgen's signing (part 1: sign us) and the node's check \
         (part 1: verify us)"
    );
    if let Some(path) = &a.json {
        let cpu_json: Vec<String> = cpus
            .iter()
            .map(|c| {
                format!(
                    "{{\"scheme\":{:?},\"sign_us\":{},\"verify_us\":{},\"batch64_us\":{},\"verify_per_s_all_cores\":{},\"threads\":{}}}",
                    c.scheme,
                    c.sign_us,
                    c.verify_us,
                    c.batch_us.map_or("null".into(), |b| b.to_string()),
                    c.all_cores_per_s,
                    c.threads
                )
            })
            .collect();
        let run_json: Vec<String> = runs
            .iter()
            .map(|(c, w, r)| {
                format!(
                    "{{\"case\":{c:?},\"load\":{w:?},\"report\":{}}}",
                    r.to_json()
                )
            })
            .collect();
        let j = format!(
            "{{\"cpu\":[{}],\"runs\":[{}]}}",
            cpu_json.join(","),
            run_json.join(",")
        );
        std::fs::write(path, j).map_err(|e| format!("write {path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}
