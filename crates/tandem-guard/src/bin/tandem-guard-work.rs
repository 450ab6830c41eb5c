//! The guard's workloads, run under `valgrind --tool=callgrind` by
//! `tests/guard.rs`: `tandem-guard-work WORKLOAD N`.
//!
//! Each workload builds its seeded inputs first, then calls one
//! `#[inline(never)]` function named `guard_region_<workload>`; callgrind
//! counts only inside it (`--toggle-collect`), so setup, allocation of the
//! inputs and process start are not counted. Nothing in a region reads the
//! clock or a random source. The last line printed is a digest of the
//! region's output, so a workload that stops doing its work is seen.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::ExitCode;

use tandem_codec::Op;
use tandem_core::{
    Cancel, Command, Config, Engine, Event, OrderKind, Place, Price, Qty, Side, Sym, Tif,
};
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_route::{Cluster, Request, Role};

/// splitmix64 from a fixed seed: the same stream on every machine.
struct Rng(u64);

impl Rng {
    fn below(&mut self, m: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % m
    }
}

/// `n` commands on one market from 1,000 accounts: 70 % limit places
/// around a mid price (some cross), 20 % cancels of live orders, 10 %
/// market orders; the flow of the README's core benchmark.
fn flow(n: usize) -> Vec<Command> {
    let mut rng = Rng(0x7a6e_6465_6d67_7561);
    let market = Sym::new("BTC-USD");
    let mut live: Vec<(Sym, Sym)> = Vec::new();
    let mut cmds = Vec::with_capacity(n);
    for i in 0..n {
        let r = rng.below(100);
        let account = Sym::new(&format!("acct{}", rng.below(1000)));
        let side = if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        if r < 70 || live.is_empty() {
            let off = rng.below(11);
            let ticks = match side {
                Side::Buy => 1_000_000 + off - 6,
                Side::Sell => 1_000_000 - off + 6,
            };
            let id = Sym::new(&format!("o{i}"));
            live.push((id.clone(), account.clone()));
            cmds.push(Command::Place(Place {
                market: market.clone(),
                id,
                account,
                side,
                kind: OrderKind::Limit(Price::from_units(ticks * 1_000_000).expect("price")),
                qty: Qty::from_units((1 + rng.below(100)) * 100_000_000).expect("qty"),
                tif: Tif::Gtc,
                post_only: false,
            }));
        } else if r < 90 {
            let k = rng.below(live.len() as u64) as usize;
            let (id, account) = live.swap_remove(k);
            cmds.push(Command::Cancel(Cancel {
                market: market.clone(),
                id,
                account,
            }));
        } else {
            cmds.push(Command::Place(Place {
                market: market.clone(),
                id: Sym::new(&format!("m{i}")),
                account,
                side,
                kind: OrderKind::Market,
                qty: Qty::from_units((1 + rng.below(200)) * 100_000_000).expect("qty"),
                tif: Tif::Ioc,
                post_only: false,
            }));
        }
    }
    cmds
}

fn engine(n: usize) -> Engine {
    Engine::new(Config {
        reserve_ids: n,
        reserve_orders: n,
        ..Config::default()
    })
}

/// Each command as the codec's canonical JSON line (no newline).
fn lines(cmds: &[Command]) -> Vec<Vec<u8>> {
    cmds.iter()
        .map(|c| {
            let mut l = Vec::new();
            assert!(
                tandem_codec::write_command(c, &mut l),
                "generated command is valid"
            );
            l
        })
        .collect()
}

fn fnv(acc: u64, bytes: &[u8]) -> u64 {
    // FNV-1a: a digest of the region's output, computed after it.
    bytes
        .iter()
        .fold(acc, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

#[inline(never)]
fn guard_region_core(eng: &mut Engine, cmds: &[Command], out: &mut Vec<Event>) -> usize {
    let mut events = 0;
    for (i, c) in cmds.iter().enumerate() {
        out.clear();
        eng.apply(i as u64 + 1, c, out);
        events += out.len();
    }
    events
}

fn core(n: usize) -> String {
    let cmds = flow(n);
    let mut eng = engine(n);
    let mut out = Vec::with_capacity(256);
    let events = guard_region_core(&mut eng, &cmds, &mut out);
    format!(
        "core ops={n} events={events} live={} chain={}",
        eng.live_orders(),
        tandem_core::chain_hex(eng.chain())
    )
}

/// One JSONL line in, its events out, as `tandem match` does per line.
#[inline(never)]
fn guard_region_codec(
    eng: &mut Engine,
    lines: &[Vec<u8>],
    evs: &mut Vec<Event>,
    out: &mut Vec<u8>,
) {
    for (i, line) in lines.iter().enumerate() {
        let seq = i as u64 + 1;
        let cmd = tandem_codec::decode_command(line);
        evs.clear();
        eng.apply(seq, &cmd, evs);
        for ev in evs.iter() {
            tandem_codec::write_event(eng, Some(seq), ev, out);
            out.push(b'\n');
        }
    }
}

fn codec(n: usize) -> String {
    let lines = lines(&flow(n));
    let mut eng = engine(n);
    let mut evs = Vec::with_capacity(256);
    let mut out = Vec::with_capacity(n * 160);
    guard_region_codec(&mut eng, &lines, &mut evs, &mut out);
    format!(
        "codec lines={n} out_bytes={} digest={:016x} chain={}",
        out.len(),
        fnv(0xcbf2_9ce4_8422_2325, &out),
        tandem_core::chain_hex(eng.chain())
    )
}

/// The node's order path without HTTP or threads: the request body
/// decoded with the route's op, the log record encoded, appended to a
/// file log (fsync off), decoded again from the appended bytes and
/// applied as the appender does when its batch directly follows the
/// applied seq (`Replica::apply_appended`: no read back), and the
/// answer's `{"seq":N,"events":[...]}` written.
#[inline(never)]
fn guard_region_node(
    log: &FileLog,
    eng: &mut Engine,
    bodies: &[(Op, Vec<u8>)],
    answer: &mut Vec<u8>,
) -> u64 {
    let mut digest = 0xcbf2_9ce4_8422_2325;
    let mut payload = Vec::with_capacity(256);
    let mut evs = Vec::with_capacity(64);
    for (op, body) in bodies {
        let cmd = tandem_codec::decode_with_op(body, *op);
        payload.clear();
        assert!(
            tandem_codec::write_command(&cmd, &mut payload),
            "body decodes"
        );
        let seq = log.append(&[&payload]).expect("append");
        let logged = tandem_codec::decode_record(&payload);
        evs.clear();
        eng.apply(seq, &logged, &mut evs);
        answer.clear();
        answer.extend_from_slice(b"{\"seq\":");
        answer.extend_from_slice(seq.to_string().as_bytes());
        answer.extend_from_slice(b",\"events\":[");
        for (k, ev) in evs.iter().enumerate() {
            if k > 0 {
                answer.push(b',');
            }
            tandem_codec::write_event(eng, None, ev, answer);
        }
        answer.extend_from_slice(b"]}");
        digest = fnv(digest, answer);
    }
    digest
}

fn node(n: usize) -> String {
    let cmds = flow(n);
    let bodies: Vec<(Op, Vec<u8>)> = cmds
        .iter()
        .zip(lines(&cmds))
        .map(|(c, l)| {
            (
                if matches!(c, Command::Cancel(_)) {
                    Op::Cancel
                } else {
                    Op::Place
                },
                l,
            )
        })
        .collect();
    let dir = std::env::var_os("GUARD_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("tandem-guard-node-{:010}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log = FileLog::open(
        &dir,
        FileLogConfig {
            fsync: FsyncPolicy::Never,
            ..FileLogConfig::default()
        },
    )
    .expect("open file log");
    let mut eng = engine(n);
    let mut answer = Vec::with_capacity(1024);
    let digest = guard_region_node(&log, &mut eng, &bodies, &mut answer);
    let last = log.last_seq();
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    format!(
        "node orders={n} last_seq={last} digest={digest:016x} chain={}",
        tandem_core::chain_hex(eng.chain())
    )
}

/// The edge's routing decision per request: the `x-dex-version` header
/// parsed and the cluster chosen by weighted rendezvous over three
/// clusters (stable 34, canary 33, stable 33), as `tandem_route` does
/// inside the proxy. Not the HTTP forwarding (see the README).
#[inline(never)]
fn guard_region_edge(clusters: &[Cluster<'_>], reqs: &[(Vec<u8>, Vec<u8>)]) -> [u64; 4] {
    let mut hits = [0u64; 4];
    for (k, (pin, account)) in reqs.iter().enumerate() {
        let req = Request {
            pin: Role::from_header(pin),
            account: if account.is_empty() {
                None
            } else {
                Some(account)
            },
            key: k as u64,
        };
        let ci = tandem_route::route(clusters, &req).map_or(3, |c| c);
        hits[ci] += 1;
    }
    hits
}

fn edge(n: usize) -> String {
    let mut rng = Rng(0x6564_6765);
    let clusters = [
        Cluster {
            name: "blue",
            role: Role::Stable,
            weight: 34,
        },
        Cluster {
            name: "green",
            role: Role::Canary,
            weight: 33,
        },
        Cluster {
            name: "red",
            role: Role::Stable,
            weight: 33,
        },
    ];
    let reqs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|_| {
            let pin: &[u8] = match rng.below(10) {
                0 => b"canary",
                1 => b" Stable",
                _ => b"",
            };
            let account = match rng.below(20) {
                0 => Vec::new(),
                _ => format!("0x{:040x}", rng.below(100_000)).into_bytes(),
            };
            (pin.to_vec(), account)
        })
        .collect();
    let hits = black_box(guard_region_edge(&clusters, &reqs));
    format!("edge requests={n} hits={hits:?}")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(which), Some(n)) = (
        args.get(1),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: tandem-guard-work core|codec|node|edge N");
        return ExitCode::from(2);
    };
    let line = match which.as_str() {
        "core" => core(n),
        "codec" => codec(n),
        "node" => node(n),
        "edge" => edge(n),
        other => {
            eprintln!("unknown workload {other:?}: core, codec, node or edge");
            return ExitCode::from(2);
        }
    };
    println!("{line}");
    ExitCode::SUCCESS
}
