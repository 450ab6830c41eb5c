//! `tandem-bench match`: the `tandem match` job (`tandem_codec::run_match`:
//! JSONL decode + matching + JSONL encode) over the `core` workload.
//!
//! The seeded stream of `core` (its warm-up resting orders, then the
//! 70 % limit / 20 % cancel / 10 % market ops; see [`crate::workload`]) is
//! rendered, untimed, into one in-memory buffer of contract command lines
//! (`contracts/match-jsonl.md`), one per op, all in market `BTC-USD`:
//! ```text
//! {"op":"place","market":"BTC-USD","id":"o17","account":"a42","side":"buy","type":"limit","price":"9999.95","qty":"37","tif":"gtc"}
//! {"op":"place","market":"BTC-USD","id":"o18","account":"a7","side":"sell","type":"market","qty":"120","tif":"ioc"}
//! {"op":"cancel","market":"BTC-USD","id":"o17","account":"a42"}
//! ```
//! Prices are the workload's ticks / 100 with two decimals, quantities its
//! lots as integers, ids and accounts are spelled as the `core` Tandem
//! adapter spells them, so the chain must equal that of applying the
//! adapter's commands directly (checked, untimed).
//!
//! Timed: `run_match(&bytes[..], io::sink(), Config::default())` end to end
//! (both of its threads, the final `book` event included; dropping the
//! returned engine excluded), `--reps` times, median reported; then one
//! more run into a `Vec<u8>` to measure the output. `--write-flow FILE`
//! writes the lines to a file instead, for timing the `tandem match`
//! binary from the shell.

use std::io::Write as _;
use std::time::Instant;

use tandem_core::{chain_hex, Config, Engine};

use crate::args::MatchArgs;
use crate::engine::BenchEngine;
use crate::report::{self, mib, process_cpu_secs, thousands, Json, MachineInfo, ThreadCpu};
use crate::tandem::{Tandem, MARKET};
use crate::workload::{self, Op, Side, Workload, WorkloadConfig};

/// Target throughput of `run_match`, commands per second.
pub const TARGET_COMMANDS_PER_SEC: f64 = 1_000_000.0;

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// Appends `op` as one contract command line, newline included.
pub fn render_op(op: &Op, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = match *op {
        Op::Limit {
            id,
            account,
            side,
            price,
            qty,
        } => writeln!(
            out,
            r#"{{"op":"place","market":"{MARKET}","id":"o{id}","account":"a{account}","side":"{}","type":"limit","price":"{}.{:02}","qty":"{qty}","tif":"gtc"}}"#,
            side_str(side),
            price / 100,
            price % 100,
        ),
        Op::Market {
            id,
            account,
            side,
            qty,
        } => writeln!(
            out,
            r#"{{"op":"place","market":"{MARKET}","id":"o{id}","account":"a{account}","side":"{}","type":"market","qty":"{qty}","tif":"ioc"}}"#,
            side_str(side),
        ),
        Op::Cancel { id, account } => writeln!(
            out,
            r#"{{"op":"cancel","market":"{MARKET}","id":"o{id}","account":"a{account}"}}"#,
        ),
    };
}

/// The whole flow (warm-up orders, then the ops) as JSONL.
pub fn render(w: &Workload) -> Vec<u8> {
    let n = w.warmup.len() + w.ops.len();
    let mut out = Vec::with_capacity(n * 140);
    for op in w.warmup.iter().chain(w.ops.iter()) {
        render_op(op, &mut out);
    }
    out
}

/// One stage of `run_match` timed on its own, single-threaded.
#[derive(Debug, Clone, Copy)]
struct Stage {
    secs: f64,
    cpu: ThreadCpu,
}

impl Stage {
    fn time(f: impl FnOnce()) -> Self {
        let c0 = ThreadCpu::read();
        let t0 = Instant::now();
        f();
        let secs = t0.elapsed().as_secs_f64();
        Self {
            secs,
            cpu: ThreadCpu::read().since(c0),
        }
    }

    /// Commands per second of on-CPU time (what a free core would do).
    fn cpu_rate(&self, n: u64) -> f64 {
        n as f64 / (self.cpu.run_ns as f64 / 1e9)
    }

    fn label(&self, n: u64) -> String {
        format!(
            "{:.3} s wall = {} commands/s ({}; {} commands per on-CPU second)",
            self.secs,
            thousands(n as f64 / self.secs),
            self.cpu.label(),
            thousands(self.cpu_rate(n))
        )
    }

    fn json(&self, n: u64) -> Json {
        Json::Obj(vec![
            ("wall_secs", Json::Num(self.secs)),
            ("scheduler", self.cpu.json()),
            ("commands_per_on_cpu_sec", Json::Num(self.cpu_rate(n))),
        ])
    }
}

/// The two halves of `run_match`, each timed alone on this thread: the
/// reader's work (split lines, `decode_command`) and the engine thread's
/// (`Engine::apply`, then also `write_event` into a 32 KiB-flushed buffer).
fn stages(bytes: &[u8], lines: usize) -> [Stage; 3] {
    let mut cmds = Vec::with_capacity(lines);
    let decode = Stage::time(|| {
        for line in bytes.split(|&b| b == b'\n') {
            if !tandem_codec::is_blank(line) {
                cmds.push(tandem_codec::decode_command(line));
            }
        }
    });
    let mut events = Vec::with_capacity(64);
    let apply = Stage::time(|| {
        let mut eng = Engine::new(Config::default());
        for (i, c) in cmds.iter().enumerate() {
            events.clear();
            eng.apply(i as u64 + 1, c, &mut events);
            std::hint::black_box(&events);
        }
        std::mem::forget(eng); // dropping is not part of the stage
    });
    let encode = Stage::time(|| {
        let mut eng = Engine::new(Config::default());
        let mut buf = Vec::with_capacity(1 << 16);
        for (i, c) in cmds.iter().enumerate() {
            let seq = i as u64 + 1;
            events.clear();
            eng.apply(seq, c, &mut events);
            for ev in &events {
                tandem_codec::write_event(&eng, Some(seq), ev, &mut buf);
                buf.push(b'\n');
            }
            if buf.len() >= 1 << 15 {
                std::hint::black_box(&buf);
                buf.clear();
            }
        }
        std::mem::forget(eng);
    });
    [decode, apply, encode]
}

/// Runs `tandem-bench match`.
pub fn run(a: &MatchArgs) -> Result<(), String> {
    let machine = MachineInfo::detect();
    let t_gen = Instant::now();
    let w = workload::generate(&WorkloadConfig {
        seed: a.seed,
        ops: a.ops,
        warmup_orders: a.warmup,
        accounts: a.accounts,
    });
    let gen_secs = t_gen.elapsed().as_secs_f64();
    let t_render = Instant::now();
    let bytes = render(&w);
    let render_secs = t_render.elapsed().as_secs_f64();
    let lines = (w.warmup.len() + w.ops.len()) as u64;
    eprintln!(
        "generated {} warm-up + {} ops in {:.2} s, rendered {} lines / {} bytes in {:.2} s (untimed)",
        w.warmup.len(),
        w.ops.len(),
        gen_secs,
        lines,
        bytes.len(),
        render_secs
    );

    if let Some(path) = &a.write_flow {
        std::fs::write(path, &bytes).map_err(|e| format!("writing {path}: {e}"))?;
        println!(
            "wrote {} command lines, {} bytes ({:.1} MiB) to {path}",
            thousands(lines as f64),
            bytes.len(),
            mib(bytes.len() as u64)
        );
        println!(
            "time it with: time ./target/release/tandem match --input {path} --output /dev/null"
        );
        return Ok(());
    }

    let mut passes = Vec::with_capacity(a.reps);
    let mut cpu = Vec::with_capacity(a.reps);
    let mut sink_chain = None;
    for rep in 0..a.reps {
        let c0 = process_cpu_secs();
        let t0 = Instant::now();
        let eng = tandem_codec::run_match(&bytes[..], std::io::sink(), Config::default())
            .map_err(|e| format!("run_match: {e}"))?;
        let s = t0.elapsed().as_secs_f64();
        let c = process_cpu_secs().zip(c0).map(|(c1, c0)| c1 - c0);
        eprintln!(
            "  run_match -> io::sink() pass {}/{}: {:.3} s  {:>12} commands/s",
            rep + 1,
            a.reps,
            s,
            thousands(lines as f64 / s)
        );
        passes.push(s);
        cpu.push(c);
        sink_chain = Some(eng.chain());
        drop(eng); // outside the timed region
    }
    let mut sorted = passes.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let rate = lines as f64 / median;
    let mb_per_sec = bytes.len() as f64 / 1e6 / median;

    let mut output = Vec::new();
    let t_vec = Instant::now();
    let eng = tandem_codec::run_match(&bytes[..], &mut output, Config::default())
        .map_err(|e| format!("run_match: {e}"))?;
    let vec_secs = t_vec.elapsed().as_secs_f64();
    let out_lines = output.iter().filter(|&&b| b == b'\n').count();
    let out_len = output.len();
    drop(output);

    eprintln!("timing the stages of run_match one by one ...");
    let [decode, apply, encode] = stages(&bytes, lines as usize);
    let bound = decode.cpu_rate(lines).min(encode.cpu_rate(lines));

    // Cross-check, untimed: the same commands applied directly.
    let mut direct = Engine::new(Config::default());
    let mut events = Vec::new();
    for (i, op) in w.warmup.iter().chain(w.ops.iter()).enumerate() {
        events.clear();
        direct.apply(i as u64 + 1, &Tandem::prepare(op), &mut events);
    }
    let chains_agree = direct.chain() == eng.chain() && sink_chain == Some(eng.chain());
    let ok = rate >= TARGET_COMMANDS_PER_SEC;

    let s = &w.stats;
    println!("tandem-bench match — tandem_codec::run_match over the `core` stream rendered as contract JSONL");
    report::print_machine(&machine);
    println!(
        "workload: seed {:#x}; {} warm-up resting limit orders, then {} ops: {} limit, {} cancel, {} market ({} accounts, one market {MARKET:?})",
        a.seed,
        thousands(w.warmup.len() as f64),
        thousands(w.ops.len() as f64),
        thousands(s.limits as f64),
        thousands(s.cancels as f64),
        thousands(s.markets as f64),
        a.accounts,
    );
    println!(
        "input   : {} command lines, {} bytes ({:.1} MiB, {:.1} B/line), rendered into one Vec<u8> before timing",
        thousands(lines as f64),
        bytes.len(),
        mib(bytes.len() as u64),
        bytes.len() as f64 / lines.max(1) as f64
    );
    println!(
        "method  : wall time of run_match(&bytes[..], io::sink(), Config::default()) — reader/decoder thread + engine/encoder thread, final book event included, engine drop excluded; median of {} pass(es)",
        a.reps
    );
    println!(
        "run     : passes {} s; median {:.3} s = {} commands/s, {:.1} MB/s of input (MB = 10^6 bytes)",
        passes
            .iter()
            .map(|p| format!("{p:.3}"))
            .collect::<Vec<_>>()
            .join(" / "),
        median,
        thousands(rate),
        mb_per_sec
    );
    println!(
        "cpu     : process CPU time (user+sys, both threads; /proc/self/stat, 10 ms ticks) per pass: {} s — {} cores' worth busy on average",
        cpu.iter()
            .map(|c| c.map_or_else(|| "?".to_string(), |c| format!("{c:.2}")))
            .collect::<Vec<_>>()
            .join(" / "),
        cpu.iter()
            .zip(&passes)
            .filter_map(|(c, p)| c.map(|c| c / p))
            .map(|u| format!("{u:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!(
        "target  : >= {} commands/s: {}",
        thousands(TARGET_COMMANDS_PER_SEC),
        if ok { "MET" } else { "MISSED" }
    );
    println!(
        "output  : one more run into a Vec<u8> (growth included): {:.3} s = {} commands/s; {} bytes ({:.1} MiB), {} event lines",
        vec_secs,
        thousands(lines as f64 / vec_secs),
        out_len,
        mib(out_len as u64),
        thousands(out_lines as f64)
    );
    println!(
        "stages  : each half of run_match alone, single-threaded on the main thread, over the same lines:"
    );
    println!(
        "          reader: split lines + decode_command        {}",
        decode.label(lines)
    );
    println!(
        "          engine: Engine::apply only                   {}",
        apply.label(lines)
    );
    println!(
        "          engine: Engine::apply + write_event          {}",
        encode.label(lines)
    );
    println!(
        "          run_match overlaps reader and engine threads, so with a free core for each it is bounded by the slower half: ~{} commands/s",
        thousands(bound)
    );
    println!(
        "chain   : {} after seq {} ({} market(s), {} live orders at the end)",
        chain_hex(eng.chain()),
        eng.seq(),
        eng.market_count(),
        eng.live_orders()
    );
    println!(
        "check   : same commands applied with Engine::apply directly (no JSON): chain {} -> {}",
        chain_hex(direct.chain()),
        if chains_agree {
            "equal (and every run_match pass agrees)"
        } else {
            "DIFFERENT"
        }
    );

    if let Some(path) = &a.json {
        let j = Json::Obj(vec![
            ("tool", Json::Str("tandem-bench".into())),
            ("scenario", Json::Str("match".into())),
            ("machine", report::machine_json(&machine)),
            (
                "workload",
                Json::Obj(vec![
                    ("seed", Json::Int(a.seed)),
                    ("seed_hex", Json::Str(format!("{:#x}", a.seed))),
                    ("warmup_orders", Json::Int(w.warmup.len() as u64)),
                    ("ops", Json::Int(w.ops.len() as u64)),
                    ("accounts", Json::Int(u64::from(a.accounts))),
                    ("command_lines", Json::Int(lines)),
                    ("input_bytes", Json::Int(bytes.len() as u64)),
                ]),
            ),
            (
                "run",
                Json::Obj(vec![
                    (
                        "method",
                        Json::Str(
                            "wall time of tandem_codec::run_match(&bytes[..], io::sink(), Config::default()); median of passes".into(),
                        ),
                    ),
                    (
                        "passes_secs",
                        Json::Arr(passes.iter().map(|&p| Json::Num(p)).collect()),
                    ),
                    ("median_secs", Json::Num(median)),
                    (
                        "passes_process_cpu_secs",
                        Json::Arr(
                            cpu.iter()
                                .map(|c| c.map_or(Json::Str("unknown".into()), Json::Num))
                                .collect(),
                        ),
                    ),
                    ("commands_per_sec", Json::Num(rate)),
                    ("input_mb_per_sec", Json::Num(mb_per_sec)),
                    ("target_commands_per_sec", Json::Num(TARGET_COMMANDS_PER_SEC)),
                    ("target_met", Json::Bool(ok)),
                    ("vec_output_secs", Json::Num(vec_secs)),
                    ("output_bytes", Json::Int(out_len as u64)),
                    ("output_lines", Json::Int(out_lines as u64)),
                    ("stage_decode", decode.json(lines)),
                    ("stage_apply", apply.json(lines)),
                    ("stage_apply_encode", encode.json(lines)),
                    ("two_core_bound_commands_per_sec", Json::Num(bound)),
                    ("chain", Json::Str(chain_hex(eng.chain()))),
                    ("seq", Json::Int(eng.seq())),
                    ("chain_equals_direct_apply", Json::Bool(chains_agree)),
                ]),
            ),
        ]);
        std::fs::write(path, j.to_pretty()).map_err(|e| format!("writing {path}: {e}"))?;
        println!();
        println!("wrote {path}");
    }
    if chains_agree {
        Ok(())
    } else {
        Err("run_match's chain differs from applying the commands directly".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_decode_and_match_direct_apply() {
        let w = workload::generate(&WorkloadConfig {
            seed: 5,
            ops: 3_000,
            warmup_orders: 200,
            accounts: 50,
        });
        let bytes = render(&w);
        let all: Vec<&Op> = w.warmup.iter().chain(w.ops.iter()).collect();
        let lines: Vec<&[u8]> = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), all.len());
        for (line, op) in lines.iter().zip(&all) {
            assert_eq!(tandem_codec::decode_command(line), Tandem::prepare(op));
        }
        let eng = tandem_codec::run_match(&bytes[..], std::io::sink(), Config::default()).unwrap();
        let mut direct = Engine::new(Config::default());
        let mut ev = Vec::new();
        for (i, op) in all.iter().enumerate() {
            direct.apply(i as u64 + 1, &Tandem::prepare(op), &mut ev);
        }
        assert_eq!(eng.chain(), direct.chain());
        assert_eq!(eng.seq(), all.len() as u64);
    }

    #[test]
    fn price_format() {
        let mut v = Vec::new();
        render_op(
            &Op::Limit {
                id: 1,
                account: 2,
                side: Side::Sell,
                price: 1_000_005,
                qty: 3,
            },
            &mut v,
        );
        assert_eq!(
            std::str::from_utf8(&v).unwrap(),
            "{\"op\":\"place\",\"market\":\"BTC-USD\",\"id\":\"o1\",\"account\":\"a2\",\"side\":\"sell\",\"type\":\"limit\",\"price\":\"10000.05\",\"qty\":\"3\",\"tif\":\"gtc\"}\n"
        );
    }
}
