//! Property tests of `tandem_core::Engine` against the naive reference
//! model in `common` (written from the `tandem match` contract alone), plus
//! determinism across hash seeds, snapshot/restore continuation, and
//! `Engine::restore` on corrupt, truncated, padded or arbitrary bytes.
//!
//! Streams are drawn from a small universe so that collisions are common:
//! 1–3 markets, 2–4 accounts, ids mostly from 12 names, prices within a few
//! ticks, quantities of 1–5 with occasional fractions, every TIF, market
//! orders, post-only (valid and invalid), all amend shapes and
//! `Command::Invalid`; most cancels and amends are aimed at live orders. A
//! second generator builds deep books (150 levels a side, many cancels) to
//! reach the ladder's lazy level removal and compaction. Besides events and
//! books, the model check compares `Engine::order` for every taken id and
//! calls `check_invariants` after every command. `PROPTEST_CASES` scales
//! the case counts (see `config`).

mod common;

use common::{engine_books, engine_events, Books, Model, ModelEvent};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError};
use tandem_core::write_units;
use tandem_core::{
    Amend, Cancel, Command, Config, Engine, Event, Invalid, OrderKind, Place, Price, Qty, Side,
    Sym, Tif, MAX_UNITS, SCALE,
};

/// Not in byte order; the last is non-ASCII and longer than `Sym` keeps
/// inline.
const MARKETS: [&str; 3] = ["ETH-USD", "BTC-USD", "Ärger-market-with-a-long-name"];
const ACCOUNTS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const IDS: [&str; 12] = [
    "o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8", "o9", "o10", "o11", "o12",
];

/// `default` cases, scaled by `PROPTEST_CASES / 512` when that is set (so
/// it is the main property's count and the heavier ones keep their
/// proportion); never writes regression files.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(default, |n| {
            (n.saturating_mul(u64::from(default)) / 512).clamp(1, u64::from(u32::MAX)) as u32
        });
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bucket of `v` (0..=255) when the byte range is split in proportion to
/// `weights`. Byte 0 always falls in bucket 0, so shrinking a byte toward
/// 0 moves toward the first (simplest) choice.
fn pick(v: u8, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut at = u32::from(v) * total / 256;
    for (i, &w) in weights.iter().enumerate() {
        if at < w {
            return i;
        }
        at -= w;
    }
    weights.len() - 1
}

/// Bytes that `decode` turns into one command (plus where to aim it).
/// Generating flat bytes and decoding them with plain code is ~10x faster
/// in debug builds than composing proptest strategies, and still shrinks
/// well: a shorter stream, and each byte toward 0 (the simplest choice).
type Genome = [u8; 20];

/// Whole units 1..=6, sometimes halves, rarely one unit of 1e-8 above a
/// whole, or the extremes (1e-8 and 10,000,000,000).
fn gen_price(class: u8, v: u8) -> Price {
    let units = match (pick(class, &[12, 2, 1]), v % 4) {
        (0, _) => (u64::from(v) % 6 + 1) * SCALE,
        (1, _) => (u64::from(v) % 12 + 1) * SCALE / 2,
        (_, 0) => 1,
        (_, 1) => MAX_UNITS,
        _ => (u64::from(v) % 6 + 1) * SCALE + 1,
    };
    Price::from_units(units).expect("in range")
}

/// Whole units 1..=5, sometimes quarters, rarely any count of units up
/// to 5, or the largest quantity (10,000,000,000).
fn gen_qty(class: u8, v: u8, w: u8) -> Qty {
    let units = match pick(class, &[60, 12, 6, 1]) {
        0 => (u64::from(v) % 5 + 1) * SCALE,
        1 => (u64::from(v) % 20 + 1) * SCALE / 4,
        2 => 1 + u64::from(u16::from_le_bytes([v, w])) * 7_629,
        _ => MAX_UNITS,
    };
    Qty::from_units(units).expect("in range")
}

/// One command of the small universe (`markets` markets, `accounts`
/// accounts), and whether `aim` should point it at a live order.
///
/// Ids: mostly the 12 shared names (collisions), sometimes one of 87
/// others so that long streams keep placing new orders, rarely an id too
/// long to be stored inline, rarely "". The account is usually the id's
/// "owner" (a fixed account per id name, so cancels and amends by name
/// often find their order), otherwise any account, rarely "".
fn decode(g: &Genome, markets: usize, accounts: usize) -> (Command, Option<u8>) {
    let market = match pick(g[1], &[60, 1]) {
        0 => MARKETS[usize::from(g[1]) % markets].to_owned(),
        _ => String::new(),
    };
    let id = match pick(g[2], &[40, 20, 2, 1]) {
        0 => IDS[usize::from(g[3]) % IDS.len()].to_owned(),
        1 => format!("o{}", 13 + usize::from(g[3]) % 87),
        2 => format!("an-id-too-long-to-be-inline-{}", g[3] % 4),
        _ => String::new(),
    };
    let account = match (pick(g[4], &[60, 1]), pick(g[5], &[7, 3])) {
        (1, _) => String::new(),
        (_, 0) => ACCOUNTS[id.bytes().map(usize::from).sum::<usize>() % accounts].to_owned(),
        _ => ACCOUNTS[usize::from(g[4]) % accounts].to_owned(),
    };
    let (market, id, account) = (Sym::new(&market), Sym::new(&id), Sym::new(&account));
    let price = gen_price(g[8], g[9]);
    let qty = gen_qty(g[10], g[11], g[12]);
    let cmd = match pick(g[0], &[12, 3, 5, 1]) {
        0 => Command::Place(Place {
            market,
            id,
            account,
            side: if g[6] & 1 == 0 { Side::Buy } else { Side::Sell },
            kind: match pick(g[7], &[6, 1]) {
                0 => OrderKind::Limit(price),
                _ => OrderKind::Market,
            },
            qty,
            tif: [Tif::Gtc, Tif::Ioc, Tif::Fok][pick(g[13], &[6, 2, 2])],
            post_only: pick(g[14], &[85, 15]) == 1,
        }),
        1 => Command::Cancel(Cancel {
            market,
            id,
            account,
        }),
        2 => {
            let (price, qty) = match pick(g[15], &[4, 4, 4, 1]) {
                0 => (Some(price), None),
                1 => (None, Some(qty)),
                2 => (Some(price), Some(qty)),
                _ => (None, None),
            };
            Command::Amend(Amend {
                market,
                id,
                account,
                price,
                qty,
                // A node's amend; `aim` gives most of them the base a node
                // would read.
                base: (g[16] & 1 == 1).then_some(u16::from(g[16] >> 6)),
            })
        }
        _ => Command::Invalid(Invalid {
            market: (g[16] & 1 == 0).then_some(market),
            id: (g[16] & 2 == 0).then_some(id),
            field: "op",
        }),
    };
    (cmd, (pick(g[17], &[6, 4]) == 0).then_some(g[18]))
}

/// 1..200 commands over 1–3 markets and 2–4 accounts, with most cancels
/// and amends pointed at live orders (`aim`).
fn stream() -> impl Strategy<Value = Vec<Command>> {
    (1usize..=3, 2usize..=4, vec(any::<Genome>(), 1..200))
        .prop_map(|(m, a, genes)| aim(genes.iter().map(|g| decode(g, m, a)).collect()))
}

/// Up to `n` commands of the full universe (3 markets, 4 accounts).
fn commands(n: usize) -> impl Strategy<Value = Vec<Command>> {
    vec(any::<Genome>(), 0..n).prop_map(|genes| genes.iter().map(|g| decode(g, 3, 4).0).collect())
}

/// Points each cancel or amend paired with `Some(v)` at an order that is
/// live at that point (found by replaying the model; `v` picks which),
/// keeping its change, so that they often reach one. The rest keep their
/// random names. An amend with a base (a node's) and an odd `v` is instead
/// a copy of the last such amend (a client's retry, or a copy delayed in a
/// node's queue, often after fills or other amends); one with `v & 2` keeps
/// its random base (a node that had not seen the latest amend); the others
/// get the base a node would read now.
fn aim(cmds: Vec<(Command, Option<u8>)>) -> Vec<Command> {
    let mut model = Model::new();
    let mut last_based: Option<Command> = None;
    cmds.into_iter()
        .map(|(mut cmd, target)| {
            let based = matches!(&cmd, Command::Amend(a) if a.base.is_some());
            match (target, &last_based) {
                (Some(v), Some(last)) if based && v & 1 == 1 => cmd = last.clone(),
                (Some(v), _) => {
                    if let Command::Cancel(_) | Command::Amend(_) = &cmd {
                        let live = model.live();
                        if !live.is_empty() {
                            let (m, id, a) = &live[usize::from(v) * live.len() / 256];
                            let (m, id, a) = (Sym::new(m), Sym::new(id), Sym::new(a));
                            match &mut cmd {
                                Command::Cancel(c) => (c.market, c.id, c.account) = (m, id, a),
                                Command::Amend(c) => (c.market, c.id, c.account) = (m, id, a),
                                _ => {}
                            }
                        }
                    }
                    if let Command::Amend(a) = &mut cmd {
                        if a.base.is_some() && v & 2 == 0 {
                            a.base = Some(model.changes(
                                a.market.as_str(),
                                a.id.as_str(),
                                a.account.as_str(),
                            ));
                        }
                    }
                }
                _ => {}
            }
            if matches!(&cmd, Command::Amend(a) if a.base.is_some()) {
                last_based = Some(cmd.clone());
            }
            model.apply(&cmd);
            cmd
        })
        .collect()
}

/// Either kind of stream.
fn any_stream() -> impl Strategy<Value = Vec<Command>> {
    prop_oneof![3 => stream(), 1 => deep_stream()]
}

/// One command of a deep-book stream (see `deep_stream`).
fn decode_deep(g: &[u8; 10]) -> (Command, Option<u8>) {
    let (market, account) = (Sym::new("DEEP"), Sym::new(ACCOUNTS[usize::from(g[2]) % 3]));
    let id = Sym::new(&format!("d{}", u16::from_le_bytes([g[0], g[1]]) % 3000));
    let side = if g[3] & 1 == 0 { Side::Buy } else { Side::Sell };
    let tick = u64::from(g[4]) % 150 + 1;
    let cmd = match pick(g[9], &[10, 9, 1]) {
        0 => Command::Place(Place {
            market,
            id,
            account,
            side,
            kind: match (pick(g[5], &[40, 1]), side) {
                (1, _) => OrderKind::Market,
                (_, Side::Buy) => OrderKind::Limit(Price::from_units(tick * SCALE).expect("price")),
                (_, Side::Sell) => {
                    OrderKind::Limit(Price::from_units((150 + tick) * SCALE).expect("price"))
                }
            },
            qty: Qty::from_units((u64::from(g[6]) % 3 + 1) * SCALE).expect("qty"),
            tif: [Tif::Gtc, Tif::Ioc, Tif::Fok][pick(g[7], &[20, 1, 1])],
            post_only: false,
        }),
        // These names are stand-ins: `aim` points them at live orders.
        1 => Command::Cancel(Cancel {
            market,
            id,
            account,
        }),
        _ => Command::Amend(Amend {
            market,
            id,
            account,
            price: (g[7] & 1 == 0)
                .then(|| Price::from_units((u64::from(g[4]) % 300 + 1) * SCALE).expect("price")),
            qty: (g[7] & 2 == 0).then(|| gen_qty(g[6], g[5], g[3])),
            base: (g[7] & 4 != 0).then_some(0),
        }),
    };
    (cmd, Some(g[8]))
}

/// Deep books: one market, three accounts, gtc limit orders over 150
/// price levels a side (bids 1..=150, asks 151..=300, so they rest) and
/// nearly as many cancels of live orders, so that many levels empty below
/// the top (the ladder's lazy-removal and compaction paths); some
/// sweeping market/ioc/fok orders and amends.
fn deep_stream() -> impl Strategy<Value = Vec<Command>> {
    vec(any::<[u8; 10]>(), 1..800).prop_map(|genes| aim(genes.iter().map(decode_deep).collect()))
}

/// The command as a contract JSON line, for readable failure reports.
fn jsonl(cmd: &Command) -> String {
    let side = |s: Side| s.as_str();
    match cmd {
        Command::Place(p) => {
            let (ty, price) = match p.kind {
                OrderKind::Limit(px) => ("limit", format!(",\"price\":\"{px}\"")),
                OrderKind::Market => ("market", String::new()),
            };
            format!(
                "{{\"op\":\"place\",\"market\":{:?},\"id\":{:?},\"account\":{:?},\"side\":\"{}\",\"type\":\"{ty}\"{price},\"qty\":\"{}\",\"tif\":\"{}\",\"post_only\":{}}}",
                p.market.as_str(),
                p.id.as_str(),
                p.account.as_str(),
                side(p.side),
                p.qty,
                p.tif.as_str(),
                p.post_only
            )
        }
        Command::Cancel(c) => format!(
            "{{\"op\":\"cancel\",\"market\":{:?},\"id\":{:?},\"account\":{:?}}}",
            c.market.as_str(),
            c.id.as_str(),
            c.account.as_str()
        ),
        Command::Amend(a) => {
            let mut s = format!(
                "{{\"op\":\"amend\",\"market\":{:?},\"id\":{:?},\"account\":{:?}",
                a.market.as_str(),
                a.id.as_str(),
                a.account.as_str()
            );
            if let Some(p) = a.price {
                s += &format!(",\"price\":\"{p}\"");
            }
            if let Some(q) = a.qty {
                s += &format!(",\"qty\":\"{q}\"");
            }
            if let Some(b) = a.base {
                s += &format!(",\"base\":\"{b}\"");
            }
            s + "}"
        }
        Command::Invalid(i) => {
            let mut s = String::from("{\"op\":\"bogus\"");
            if let Some(m) = &i.market {
                s += &format!(",\"market\":{:?}", m.as_str());
            }
            if let Some(id) = &i.id {
                s += &format!(",\"id\":{:?}", id.as_str());
            }
            s + "}"
        }
    }
}

/// The first `upto` commands as numbered JSON lines.
fn listing(cmds: &[Command], upto: usize) -> String {
    cmds[..upto]
        .iter()
        .enumerate()
        .map(|(i, c)| format!("  {:>3} {}\n", i + 1, jsonl(c)))
        .collect()
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Applies `cmd` at `seq` and returns its events, checking invariants.
fn step(engine: &mut Engine, seq: u64, cmd: &Command) -> Result<Vec<Event>, TestCaseError> {
    let mut out = Vec::new();
    engine.apply(seq, cmd, &mut out);
    engine
        .check_invariants()
        .map_err(|e| fail(format!("seq {seq}: invariant broken: {e}")))?;
    Ok(out)
}

/// Applies the whole stream from seq 1, returning every command's events.
fn run(engine: &mut Engine, cmds: &[Command]) -> Result<Vec<Vec<ModelEvent>>, TestCaseError> {
    let mut all = Vec::with_capacity(cmds.len());
    for (i, cmd) in cmds.iter().enumerate() {
        let out = step(engine, i as u64 + 1, cmd)?;
        all.push(engine_events(engine, &out));
    }
    Ok(all)
}

/// One line per market: `name  bids [id price×qty, ..]  asks [..]`.
fn show_books(books: &Books) -> String {
    let side = |s: &[(String, u64, u64)]| {
        s.iter()
            .map(|(id, p, q)| format!("{id} {}x{}", units(*p), units(*q)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    books
        .iter()
        .map(|(m, bids, asks)| format!("  {m}  bids [{}]  asks [{}]\n", side(bids), side(asks)))
        .collect()
}

/// The model's books after `cmds`.
fn model_books_after(cmds: &[Command]) -> Books {
    let mut model = Model::new();
    for cmd in cmds {
        model.apply(cmd);
    }
    model.books()
}

/// A unit count as a decimal string.
fn units(u: u64) -> String {
    let mut v = Vec::new();
    write_units(u, &mut v);
    String::from_utf8(v).expect("ASCII")
}

/// Engine and model agree on every command's events, on the books after
/// every command, and on what `Engine::order` reports for every taken id.
/// On a failure of a short stream (one proptest has mostly shrunk), the
/// report also gives a locally minimal sub-stream: commands are dropped one
/// at a time for as long as some discrepancy remains.
fn check_against_model(cmds: &[Command]) -> Result<(), TestCaseError> {
    let Err(first) = compare(cmds) else {
        return Ok(());
    };
    if cmds.len() > 40 {
        return Err(fail(first));
    }
    let mut min = cmds.to_vec();
    let mut why = first.clone();
    loop {
        let before = min.len();
        for i in (0..min.len()).rev() {
            let mut fewer = min.clone();
            fewer.remove(i);
            if let Err(e) = compare(&fewer) {
                (min, why) = (fewer, e);
            }
        }
        if min.len() == before {
            break;
        }
    }
    Err(fail(format!(
        "{first}\n\nminimal sub-stream ({} of {} commands):\n{why}",
        min.len(),
        cmds.len()
    )))
}

/// `check_against_model` without the minimising; the error describes the
/// first discrepancy with the stream up to it.
fn compare(cmds: &[Command]) -> Result<(), String> {
    let mut engine = Engine::default();
    let mut model = Model::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let seq = i as u64 + 1;
        let mut out = Vec::new();
        engine.apply(seq, cmd, &mut out);
        let stream = || listing(cmds, i + 1);
        engine
            .check_invariants()
            .map_err(|e| format!("invariant broken at seq {seq}: {e}\nstream:\n{}", stream()))?;
        let got = engine_events(&engine, &out);
        let want = model.apply(cmd);
        if got != want {
            return Err(format!(
                "events differ at seq {seq}\nstream:\n{}books before seq {seq} (model):\n{}engine: {got:#?}\nmodel:  {want:#?}",
                stream(),
                show_books(&model_books_after(&cmds[..i]))
            ));
        }
        let (got, want) = (engine_books(&engine), model.books());
        if got != want {
            return Err(format!(
                "books differ after seq {seq}\nstream:\n{}engine:\n{}model:\n{}",
                stream(),
                show_books(&got),
                show_books(&want)
            ));
        }
        if engine.live_orders() as usize != model.live_orders()
            || engine.taken_ids() != model.taken_ids()
        {
            return Err(format!(
                "counts differ after seq {seq}: engine live {} taken {}, model live {} taken {}\nstream:\n{}",
                engine.live_orders(),
                engine.taken_ids(),
                model.live_orders(),
                model.taken_ids(),
                stream(),
            ));
        }
    }
    let stream = listing(cmds, cmds.len());
    if engine.market_count() != model.books().len() {
        return Err(format!(
            "market count: engine {} model {}\nstream:\n{stream}",
            engine.market_count(),
            model.books().len()
        ));
    }
    for (market, id, t, remaining) in model.taken() {
        let (m, i, a) = (market.as_bytes(), id.as_bytes(), t.account.as_bytes());
        let info = engine.order(m, i, a).ok_or_else(|| {
            format!(
                "Engine::order({market}, {id}, {}) is None\nstream:\n{stream}",
                t.account
            )
        })?;
        let want = (t.side, t.price, t.qty, remaining, t.status, t.post_only);
        let got = (
            info.side,
            info.price.map(Price::units),
            info.qty.units(),
            info.remaining,
            info.status,
            info.post_only,
        );
        if got != want {
            return Err(format!(
                "Engine::order({market}, {id}) = {got:?}, model {want:?}\nstream:\n{stream}"
            ));
        }
        for other in ACCOUNTS.iter().filter(|&&o| o != t.account) {
            if engine.order(m, i, other.as_bytes()).is_some() {
                return Err(format!(
                    "Engine::order({market}, {id}) visible to {other}\nstream:\n{stream}"
                ));
            }
        }
    }
    Ok(())
}

/// Random bytes, or bytes shaped like a snapshot (magic, version, length
/// and, for a third of them, a correct checksum) so decoding gets past the
/// header checks.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let body = || vec(any::<u8>(), 0..300);
    prop_oneof![
        vec(any::<u8>(), 0..64),
        body().prop_map(|b| frame(&b, false)),
        body().prop_map(|b| frame(&b, true)),
        // Bodies made mostly of small varints, which decode further.
        vec(prop_oneof![4 => 0u8..4, 1 => any::<u8>()], 17..200).prop_map(|b| frame(&b, true)),
    ]
}

/// Wraps `body` in a snapshot header and trailer; with `seal`, the
/// trailer's checksum is correct.
fn frame(body: &[u8], seal: bool) -> Vec<u8> {
    let mut v = b"TNDMSNAP".to_vec();
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(body);
    v.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let sum = if seal {
        xxhash_rust::xxh3::xxh3_64(body)
    } else {
        0x5eed
    };
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// A restored engine must be usable: invariants hold, it snapshots, and
/// applying commands after its seq does not panic.
fn exercise(engine: &mut Engine, cmds: &[Command]) -> Result<(), TestCaseError> {
    engine
        .check_invariants()
        .map_err(|e| fail(format!("restored engine breaks invariants: {e}")))?;
    let _ = engine.snapshot();
    let Some(mut seq) = engine.seq().checked_add(1) else {
        return Ok(());
    };
    for cmd in cmds {
        step(engine, seq, cmd)?;
        let Some(next) = seq.checked_add(1) else {
            break;
        };
        seq = next;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// The engine emits exactly the model's events for every command and
    /// ends with the model's books.
    #[test]
    fn engine_matches_model(cmds in stream()) {
        check_against_model(&cmds)?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// As `engine_matches_model`, on deep books with many emptied levels.
    #[test]
    fn engine_matches_model_deep_books(cmds in deep_stream()) {
        check_against_model(&cmds)?;
    }
}

/// The hash chain written from `chain.rs`'s module doc alone, over the
/// events with their names resolved: `seq ‖ events` appended to one stream,
/// an order named in full by its `accepted` event and by its ordinal (the
/// count of `accepted` events before it) after that, the stream folded
/// into a 16-byte state with xxh3-128 whenever 1024 bytes are pending at
/// the end of a command.
#[derive(Default)]
struct RefChain {
    state: u128,
    pending: Vec<u8>,
    ordinals: std::collections::BTreeMap<(String, String), u64>,
}

impl RefChain {
    fn str(&mut self, s: Option<&String>) {
        match s {
            Some(s) => {
                self.pending.extend((s.len() as u32).to_le_bytes());
                self.pending.extend(s.as_bytes());
            }
            None => self.pending.extend(u32::MAX.to_le_bytes()),
        }
    }

    fn nums(&mut self, ns: &[u64]) {
        for n in ns {
            self.pending.extend(n.to_le_bytes());
        }
    }

    fn ordinal(&self, market: &str, id: &str) -> u64 {
        self.ordinals[&(market.to_owned(), id.to_owned())]
    }

    fn push(&mut self, seq: u64, events: &[ModelEvent]) {
        self.nums(&[seq]);
        for e in events {
            match e {
                ModelEvent::Accepted { market, id } => {
                    self.pending.push(1);
                    self.str(Some(market));
                    self.str(Some(id));
                    let n = self.ordinals.len() as u64;
                    self.ordinals.insert((market.clone(), id.clone()), n);
                }
                ModelEvent::Trade {
                    market,
                    maker,
                    taker,
                    price,
                    qty,
                } => {
                    self.pending.push(2);
                    let (a, b) = (self.ordinal(market, maker), self.ordinal(market, taker));
                    self.nums(&[a, b, *price, *qty]);
                }
                ModelEvent::Cancelled {
                    market,
                    id,
                    remaining,
                    reason,
                } => {
                    self.pending.push(3);
                    self.nums(&[self.ordinal(market, id), *remaining]);
                    let codes = ["user", "ioc", "fok", "self_trade"];
                    self.pending
                        .push(codes.iter().position(|c| c == reason).unwrap() as u8);
                }
                ModelEvent::Amended {
                    market,
                    id,
                    price,
                    qty,
                } => {
                    self.pending.push(4);
                    self.nums(&[self.ordinal(market, id), *price, *qty]);
                }
                ModelEvent::Rejected { market, id, reason } => {
                    self.pending.push(5);
                    self.str(market.as_ref());
                    self.str(id.as_ref());
                    let codes = [
                        "invalid",
                        "duplicate_id",
                        "post_only",
                        "unknown_order",
                        "limit",
                        "stale",
                    ];
                    self.pending
                        .push(codes.iter().position(|c| c == reason).unwrap() as u8);
                }
            }
        }
        if self.pending.len() >= 1024 {
            self.state = self.value();
            self.pending.clear();
        }
    }

    fn value(&self) -> u128 {
        let mut b = self.state.to_le_bytes().to_vec();
        b.extend(&self.pending);
        xxhash_rust::xxh3::xxh3_128(&b)
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// The engine's chain equals the one written from the format's text
    /// after every command (long and short names, absent ones, every event).
    #[test]
    fn chain_matches_its_documented_encoding(cmds in any_stream()) {
        let mut eng = Engine::default();
        let mut reference = RefChain::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let seq = i as u64 + 1;
            let out = step(&mut eng, seq, cmd)?;
            reference.push(seq, &engine_events(&eng, &out));
            prop_assert_eq!(eng.chain(), reference.value(), "chain at seq {}", seq);
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Hash seeds never reach output: identical events and chain.
    #[test]
    fn output_independent_of_hash_seed(cmds in any_stream(), seed in any::<u64>()) {
        let mut a = Engine::default();
        let mut b = Engine::new(Config { hash_seed: seed, ..Config::default() });
        for (i, cmd) in cmds.iter().enumerate() {
            let seq = i as u64 + 1;
            let (ea, eb) = (step(&mut a, seq, cmd)?, step(&mut b, seq, cmd)?);
            prop_assert_eq!(&ea, &eb, "events at seq {}", seq);
            prop_assert_eq!(a.chain(), b.chain(), "chain at seq {}", seq);
        }
        prop_assert_eq!(a.snapshot(), b.snapshot());
    }

    /// A restored snapshot continues exactly like the original.
    #[test]
    fn snapshot_restore_continues_identically(cmds in any_stream(), cut in any::<Index>(), seed in any::<u64>()) {
        let cut = cut.index(cmds.len() + 1);
        let mut a = Engine::default();
        run(&mut a, &cmds[..cut])?;
        let bytes = a.snapshot();
        let mut b = Engine::restore(&bytes, Config::default())
            .map_err(|e| fail(format!("restore at cut {cut}: {e}")))?;
        let mut c = Engine::restore(&bytes, Config { hash_seed: seed, ..Config::default() })
            .map_err(|e| fail(format!("restore (seed) at cut {cut}: {e}")))?;
        b.check_invariants().map_err(|e| fail(format!("restored: {e}")))?;
        prop_assert_eq!(b.seq(), a.seq());
        prop_assert_eq!(b.chain(), a.chain());
        prop_assert_eq!(b.snapshot(), bytes.clone(), "snapshot of the restored engine differs");
        // Every taken id reads back the same (side, price, qty, status, post_only).
        let mut model = Model::new();
        for cmd in &cmds[..cut] {
            model.apply(cmd);
        }
        for (m, id, t, _) in model.taken() {
            let (m, id, acc) = (m.as_bytes(), id.as_bytes(), t.account.as_bytes());
            prop_assert_eq!(a.order(m, id, acc), b.order(m, id, acc), "order {:?} after restore", t);
        }
        for (i, cmd) in cmds.iter().enumerate().skip(cut) {
            let seq = i as u64 + 1;
            let ea = step(&mut a, seq, cmd)?;
            let eb = step(&mut b, seq, cmd)?;
            let ec = step(&mut c, seq, cmd)?;
            let (ma, mb, mc) = (engine_events(&a, &ea), engine_events(&b, &eb), engine_events(&c, &ec));
            prop_assert_eq!(&ma, &mb, "events at seq {} (cut {})", seq, cut);
            prop_assert_eq!(&ma, &mc, "events at seq {} (cut {}, seed)", seq, cut);
            prop_assert_eq!(a.chain(), b.chain(), "chain at seq {} (cut {})", seq, cut);
            prop_assert_eq!(a.chain(), c.chain(), "chain at seq {} (cut {}, seed)", seq, cut);
        }
        let fin = a.snapshot();
        prop_assert_eq!(&b.snapshot(), &fin, "final snapshot (cut {})", cut);
        prop_assert_eq!(&c.snapshot(), &fin, "final snapshot (cut {}, seed)", cut);
    }

    /// Any single flipped byte, any truncation and any padding of a real
    /// snapshot is an `Err`, never a panic.
    #[test]
    fn corrupt_snapshot_is_an_error(
        cmds in any_stream(),
        flips in vec((any::<Index>(), 1u8..=255), 40),
        pad in any::<u8>(),
    ) {
        let mut engine = Engine::default();
        run(&mut engine, &cmds)?;
        let bytes = engine.snapshot();
        prop_assert!(Engine::restore(&bytes, Config::default()).is_ok());
        // Always the header and trailer bytes, plus sampled body bytes.
        let fixed = (0..12).chain(bytes.len() - 16..bytes.len()).map(|p| (p, 0x01));
        let sampled = flips.iter().map(|(ix, x)| (ix.index(bytes.len()), *x));
        let mut bad = bytes.clone();
        for (pos, x) in fixed.chain(sampled) {
            bad[pos] ^= x;
            prop_assert!(
                Engine::restore(&bad, Config::default()).is_err(),
                "flipping byte {} of {} by {:#04x} was accepted", pos, bytes.len(), x
            );
            bad[pos] ^= x;
        }
        for len in 0..bytes.len() {
            prop_assert!(Engine::restore(&bytes[..len], Config::default()).is_err(), "truncated to {} accepted", len);
        }
        bad.push(pad);
        prop_assert!(Engine::restore(&bad, Config::default()).is_err(), "padded snapshot accepted");
    }

    /// A real snapshot whose body is mutated and then re-sealed with a
    /// correct checksum gets past the checksum: restore must still never
    /// panic, and what it accepts must be a usable engine.
    #[test]
    fn resealed_mutations_never_panic(
        cmds in any_stream(),
        edits in vec((any::<Index>(), any::<u8>()), 1..4),
        more in commands(40),
    ) {
        let mut engine = Engine::default();
        run(&mut engine, &cmds)?;
        let bytes = engine.snapshot();
        let mut body = bytes[12..bytes.len() - 16].to_vec();
        for (ix, v) in &edits {
            let i = ix.index(body.len());
            body[i] = *v;
        }
        if let Ok(mut restored) = Engine::restore(&frame(&body, true), Config::default()) {
            exercise(&mut restored, &more)?;
        }
    }

    /// Arbitrary bytes never make `restore` panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in hostile_bytes(), more in commands(20)) {
        if let Ok(mut restored) = Engine::restore(&bytes, Config::default()) {
            exercise(&mut restored, &more)?;
        }
    }
}

/// Hand-written scenarios for the contract's trickier rules, so a model
/// mistake cannot silently agree with an engine mistake.
mod scenarios {
    use super::*;

    fn place(
        id: &str,
        account: &str,
        side: Side,
        price: Option<u64>,
        qty: u64,
        tif: Tif,
        post_only: bool,
    ) -> Command {
        Command::Place(Place {
            market: Sym::new("M"),
            id: Sym::new(id),
            account: Sym::new(account),
            side,
            kind: price.map_or(OrderKind::Market, |p| {
                OrderKind::Limit(Price::from_units(p * SCALE).expect("price"))
            }),
            qty: Qty::from_units(qty * SCALE).expect("qty"),
            tif,
            post_only,
        })
    }

    fn amend(id: &str, account: &str, price: Option<u64>, qty: Option<u64>) -> Command {
        Command::Amend(Amend {
            market: Sym::new("M"),
            id: Sym::new(id),
            account: Sym::new(account),
            price: price.map(|p| Price::from_units(p * SCALE).expect("price")),
            qty: qty.map(|q| Qty::from_units(q * SCALE).expect("qty")),
            base: None,
        })
    }

    /// A node's amend, with the base it read (`Amend::base`).
    fn based_amend(
        id: &str,
        account: &str,
        price: Option<u64>,
        qty: Option<u64>,
        base: u16,
    ) -> Command {
        let Command::Amend(mut a) = amend(id, account, price, qty) else {
            unreachable!()
        };
        a.base = Some(base);
        Command::Amend(a)
    }

    fn events(cmds: &[Command]) -> Vec<Vec<ModelEvent>> {
        let mut e = Engine::default();
        let got = run(&mut e, cmds).expect("run");
        let mut m = Model::new();
        let want: Vec<_> = cmds.iter().map(|c| m.apply(c)).collect();
        assert_eq!(got, want, "engine vs model");
        assert_eq!(engine_books(&e), m.books());
        got
    }

    fn trade(maker: &str, taker: &str, price: u64, qty: u64) -> ModelEvent {
        ModelEvent::Trade {
            market: "M".into(),
            maker: maker.into(),
            taker: taker.into(),
            price: price * SCALE,
            qty: qty * SCALE,
        }
    }

    fn accepted(id: &str) -> ModelEvent {
        ModelEvent::Accepted {
            market: "M".into(),
            id: id.into(),
        }
    }

    fn cancelled(id: &str, remaining: u64, reason: &'static str) -> ModelEvent {
        ModelEvent::Cancelled {
            market: "M".into(),
            id: id.into(),
            remaining: remaining * SCALE,
            reason,
        }
    }

    fn rejected(id: &str, reason: &'static str) -> ModelEvent {
        ModelEvent::Rejected {
            market: Some("M".into()),
            id: Some(id.into()),
            reason,
        }
    }

    #[test]
    fn fok_stops_at_own_order_and_self_trade_cancels_taker() {
        use Side::*;
        let ev = events(&[
            place("a1", "alice", Sell, Some(5), 1, Tif::Gtc, false),
            place("b1", "bob", Sell, Some(5), 1, Tif::Gtc, false),
            place("c1", "carol", Sell, Some(5), 5, Tif::Gtc, false),
            // 1 fillable before bob's own b1: cancelled whole.
            place("b2", "bob", Buy, Some(5), 2, Tif::Fok, false),
            // Trades a1, then reaches b1 (own): rest cancelled, b1 untouched.
            place("b3", "bob", Buy, None, 3, Tif::Ioc, false),
        ]);
        assert_eq!(ev[3], vec![accepted("b2"), cancelled("b2", 2, "fok")]);
        assert_eq!(
            ev[4],
            vec![
                accepted("b3"),
                trade("a1", "b3", 5, 1),
                cancelled("b3", 2, "self_trade")
            ]
        );
    }

    #[test]
    fn amend_keeps_or_loses_place_and_post_only_amend_rejected() {
        use Side::*;
        let ev = events(&[
            place("s1", "alice", Sell, Some(5), 2, Tif::Gtc, false),
            place("s2", "bob", Sell, Some(5), 2, Tif::Gtc, false),
            // Smaller at the same price: keeps its place ahead of s2.
            amend("s1", "alice", None, Some(1)),
            // Larger: goes behind s2.
            amend("s1", "alice", Some(5), Some(3)),
            place("p1", "carol", Buy, Some(4), 1, Tif::Gtc, true),
            // Crosses 5: rejected, p1 unchanged.
            amend("p1", "carol", Some(5), None),
            // Wrong account, then nothing to change.
            amend("p1", "alice", Some(3), None),
            amend("p1", "carol", None, None),
            place("t1", "dave", Buy, Some(5), 3, Tif::Ioc, false),
            place("s1", "dave", Buy, Some(1), 1, Tif::Gtc, false),
        ]);
        assert_eq!(ev[5], vec![rejected("p1", "post_only")]);
        assert_eq!(ev[6], vec![rejected("p1", "unknown_order")]);
        assert_eq!(ev[7], vec![rejected("p1", "invalid")]);
        assert_eq!(
            ev[8],
            vec![
                accepted("t1"),
                trade("s2", "t1", 5, 2),
                trade("s1", "t1", 5, 1)
            ]
        );
        assert_eq!(ev[9], vec![rejected("s1", "duplicate_id")]);
    }

    #[test]
    fn a_based_amend_applies_once_and_only_to_the_state_it_was_based_on() {
        use Side::*;
        let amended = |id: &str, price: u64, qty: u64| ModelEvent::Amended {
            market: "M".into(),
            id: id.into(),
            price: price * SCALE,
            qty: qty * SCALE,
        };
        let ev = events(&[
            place("s1", "alice", Sell, Some(5), 5, Tif::Gtc, false),
            based_amend("s1", "alice", None, Some(3), 0),
            place("b1", "bob", Buy, Some(5), 2, Tif::Ioc, false),
            // A second copy of that amend (a retry whose first copy took
            // effect): not topped up from 1 back to 3.
            based_amend("s1", "alice", None, Some(3), 0),
            // Another account's amend is not this order's at all.
            based_amend("s1", "bob", None, Some(3), 1),
            // The next change, based on what the first left: applied
            // (1 -> 2 re-enters).
            based_amend("s1", "alice", Some(5), Some(2), 1),
            // A copy of the first delayed past it: it would undo it.
            based_amend("s1", "alice", None, Some(3), 0),
            // The contract's amend (what `tandem match` reads) is applied
            // every time and is not counted.
            amend("s1", "alice", Some(5), Some(2)),
            amend("s1", "alice", Some(5), Some(2)),
            based_amend("s1", "alice", Some(5), Some(2), 2),
            place("b2", "bob", Buy, Some(5), 9, Tif::Ioc, false),
        ]);
        assert_eq!(ev[1], vec![amended("s1", 5, 3)]);
        assert_eq!(ev[3], vec![rejected("s1", "stale")]);
        assert_eq!(ev[4], vec![rejected("s1", "unknown_order")]);
        assert_eq!(ev[5], vec![amended("s1", 5, 2)]);
        assert_eq!(ev[6], vec![rejected("s1", "stale")]);
        assert_eq!(ev[7], vec![amended("s1", 5, 2)]);
        assert_eq!(ev[8], vec![amended("s1", 5, 2)]);
        assert_eq!(ev[9], vec![amended("s1", 5, 2)]);
        assert_eq!(ev[10][1], trade("s1", "b2", 5, 2));
    }

    #[test]
    fn crossing_amend_trades_after_amended() {
        use Side::*;
        let ev = events(&[
            place("s1", "alice", Sell, Some(5), 2, Tif::Gtc, false),
            place("b1", "bob", Buy, Some(4), 3, Tif::Gtc, false),
            amend("b1", "bob", Some(6), None),
        ]);
        let amended = ModelEvent::Amended {
            market: "M".into(),
            id: "b1".into(),
            price: 6 * SCALE,
            qty: 3 * SCALE,
        };
        assert_eq!(ev[2], vec![amended, trade("s1", "b1", 5, 2)]);
    }
}
