//! A minimal, dependency-free hot loop over the engine for profiling
//! (`valgrind --tool=callgrind`, `perf`): a seeded 70 % add / 20 % cancel /
//! 10 % market stream on one market, commands built before the loop. The
//! real benchmark, with peers, is `tandem-bench core`.
//!
//! `hot_loop N` applies one command at a time; `hot_loop N batch` calls
//! `Engine::look_ahead` before each `apply`, as a replica does over a log
//! batch.

use std::time::Instant;

use tandem_core::{Cancel, Command, Config, Engine, OrderKind, Place, Price, Qty, Side, Sym, Tif};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let batch = std::env::args().nth(2).as_deref() == Some("batch");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |m: u64| {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % m
    };
    let market = Sym::new("BTC-USD");
    let mut live: Vec<(Sym, Sym)> = Vec::new();
    let mut cmds = Vec::with_capacity(n);
    for i in 0..n {
        let r = rnd(100);
        let account = Sym::new(&format!("a{}", rnd(1000)));
        if r < 70 || live.is_empty() {
            let side = if rnd(2) == 0 { Side::Buy } else { Side::Sell };
            let off = rnd(11);
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
                kind: OrderKind::Limit(Price::from_units(ticks * 1_000_000).unwrap()),
                qty: Qty::from_units((1 + rnd(100)) * 100_000_000).unwrap(),
                tif: Tif::Gtc,
                post_only: false,
            }));
        } else if r < 90 {
            let k = rnd(live.len() as u64) as usize;
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
                side: if rnd(2) == 0 { Side::Buy } else { Side::Sell },
                kind: OrderKind::Market,
                qty: Qty::from_units((1 + rnd(200)) * 100_000_000).unwrap(),
                tif: Tif::Ioc,
                post_only: false,
            }));
        }
    }
    let mut eng = Engine::new(Config {
        reserve_ids: n,
        reserve_orders: n,
        ..Config::default()
    });
    let mut out = Vec::with_capacity(256);
    let cpu0 = thread_cpu_ns();
    let t = Instant::now();
    for (seq, c) in cmds.iter().enumerate() {
        if batch {
            eng.look_ahead(|k| cmds.get(seq + k));
        }
        out.clear();
        eng.apply(seq as u64 + 1, c, &mut out);
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = thread_cpu_ns().zip(cpu0).map(|(b, a)| (b - a) as f64 / 1e9);
    println!(
        "{n} commands in {secs:.3} s: {:.0} ops/s; on the CPU {}; live {} chain {}",
        n as f64 / secs,
        cpu.map_or("(unknown)".to_owned(), |c| format!(
            "{c:.3} s: {:.0} ops/s",
            n as f64 / c
        )),
        eng.live_orders(),
        tandem_core::chain_hex(eng.chain())
    );
}

/// Time this thread has run on a CPU, in ns (Linux's schedstat): on a
/// shared machine it leaves out the time the thread waited for a core.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}
