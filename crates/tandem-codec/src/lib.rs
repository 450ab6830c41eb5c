//! JSON Lines codec for Tandem, exactly as `contracts/match-jsonl.md` says.
//!
//! `decode_command` turns one line of outside bytes into a `Command`; any
//! defect (not JSON, a missing field, a number where a string belongs, an
//! unknown value) becomes `Command::Invalid`, which the engine answers with
//! a `rejected` event. It never panics. `write_event` and `write_book`
//! produce the event lines.

pub mod json;

use json::{read_object, Val};
use tandem_core::{
    Amend, Cancel, Command, Engine, Event, Invalid, MarketIx, OrderKind, Place, Price, Qty, Side,
    Sym, Tif,
};

const OP: usize = 0;
const MARKET: usize = 1;
const ID: usize = 2;
const ACCOUNT: usize = 3;
const SIDE: usize = 4;
const TYPE: usize = 5;
const PRICE: usize = 6;
const QTY: usize = 7;
const TIF: usize = 8;
const POST_ONLY: usize = 9;
const BASE: usize = 10;

/// True for a line that holds only JSON whitespace (skipped, but counted).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Which op a command object names, for callers (the HTTP API) that supply
/// it from the route instead of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Place,
    Cancel,
    Amend,
}

fn str_of<'a>(v: &'a Option<Val<'_>>) -> Option<&'a str> {
    match v {
        Some(Val::Str(s)) => Some(s),
        _ => None,
    }
}

/// Decodes one command line. The result is never an error: a defect is a
/// `Command::Invalid` naming the first bad field.
pub fn decode_command(line: &[u8]) -> Command {
    match read_object(line) {
        Err(_) => invalid(None, None, "body"),
        Ok(f) => from_fields(&f, None),
    }
}

/// Decodes one record of a node's order log: a command line as
/// [`decode_command`] reads it, plus what only a node writes there (an
/// amend's `"base":"N"`, see `Amend::base`; [`write_record`]). `tandem
/// match` input is read with [`decode_command`], which ignores that field
/// as it ignores every unknown one. A base that is not a decimal string of
/// 0..=65535 is no base.
pub fn decode_record(line: &[u8]) -> Command {
    match read_object(line) {
        Err(_) => invalid(None, None, "body"),
        Ok(f) => {
            let mut cmd = from_fields(&f, None);
            if let (Command::Amend(a), Some(Val::Str(s))) = (&mut cmd, &f[BASE]) {
                a.base = s
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| s.parse().ok())
                    .flatten();
            }
            cmd
        }
    }
}

/// Decodes a command object whose op is fixed by the caller (`op` in the
/// body, if any, must then agree).
pub fn decode_with_op(line: &[u8], op: Op) -> Command {
    match read_object(line) {
        Err(_) => invalid(None, None, "body"),
        Ok(f) => from_fields(&f, Some(op)),
    }
}

fn invalid(market: Option<&str>, id: Option<&str>, field: &'static str) -> Command {
    Command::Invalid(Invalid {
        market: market.map(Sym::new),
        id: id.map(Sym::new),
        field,
    })
}

/// Builds a command from decoded fields.
pub fn from_fields(f: &json::Fields, fixed: Option<Op>) -> Command {
    let market = str_of(&f[MARKET]);
    let id = str_of(&f[ID]);
    let bad = |field| invalid(market, id, field);
    let op = match (str_of(&f[OP]), &f[OP], fixed) {
        (_, None, Some(op)) => op,
        (Some("place"), _, None | Some(Op::Place)) => Op::Place,
        (Some("cancel"), _, None | Some(Op::Cancel)) => Op::Cancel,
        (Some("amend"), _, None | Some(Op::Amend)) => Op::Amend,
        _ => return bad("op"),
    };
    let (Some(m), Some(i)) = (
        market.filter(|s| !s.is_empty()),
        id.filter(|s| !s.is_empty()),
    ) else {
        return bad(if market.is_none_or(str::is_empty) {
            "market"
        } else {
            "id"
        });
    };
    let Some(account) = str_of(&f[ACCOUNT]).filter(|s| !s.is_empty()) else {
        return bad("account");
    };
    let (market, id, account) = (Sym::new(m), Sym::new(i), Sym::new(account));
    let decimal = |k: usize| -> Result<Option<u64>, ()> {
        match &f[k] {
            None => Ok(None),
            Some(Val::Str(s)) => tandem_core::parse_units(s.as_bytes())
                .map(Some)
                .map_err(|_| ()),
            Some(_) => Err(()),
        }
    };
    match op {
        Op::Cancel => Command::Cancel(Cancel {
            market,
            id,
            account,
        }),
        Op::Amend => {
            let Ok(price) = decimal(PRICE) else {
                return bad("price");
            };
            let Ok(qty) = decimal(QTY) else {
                return bad("qty");
            };
            if price.is_none() && qty.is_none() {
                return bad("price");
            }
            Command::Amend(Amend {
                market,
                id,
                account,
                price: price.and_then(Price::from_units),
                qty: qty.and_then(Qty::from_units),
                base: None,
            })
        }
        Op::Place => {
            let side = match str_of(&f[SIDE]) {
                Some("buy") => Side::Buy,
                Some("sell") => Side::Sell,
                _ => return bad("side"),
            };
            let market_order = match (&f[TYPE], str_of(&f[TYPE])) {
                (None, _) | (_, Some("limit")) => false,
                (_, Some("market")) => true,
                _ => return bad("type"),
            };
            let kind = match (market_order, decimal(PRICE)) {
                (false, Ok(Some(p))) => {
                    OrderKind::Limit(Price::from_units(p).expect("parsed in range"))
                }
                (true, Ok(None)) => OrderKind::Market,
                _ => return bad("price"),
            };
            let qty = match decimal(QTY) {
                Ok(Some(q)) => Qty::from_units(q).expect("parsed in range"),
                _ => return bad("qty"),
            };
            let tif = match (&f[TIF], str_of(&f[TIF])) {
                (None, _) | (_, Some("gtc")) => Tif::Gtc,
                (_, Some("ioc")) => Tif::Ioc,
                (_, Some("fok")) => Tif::Fok,
                _ => return bad("tif"),
            };
            let post_only = match &f[POST_ONLY] {
                None | Some(Val::Bool(false)) => false,
                Some(Val::Bool(true)) if !market_order && tif == Tif::Gtc => true,
                _ => return bad("post_only"),
            };
            Command::Place(Place {
                market,
                id,
                account,
                side,
                kind,
                qty,
                tif,
                post_only,
            })
        }
    }
}

fn units(out: &mut Vec<u8>, key: &str, v: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":\"");
    tandem_core::write_units(v, out);
    out.push(b'"');
}

fn field(out: &mut Vec<u8>, key: &str, s: &Sym) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    json::write_str(out, s.as_bytes());
}

fn head(out: &mut Vec<u8>, seq: Option<u64>, name: &str) {
    match seq {
        Some(seq) => {
            out.extend_from_slice(b"{\"seq\":");
            out.extend_from_slice(seq.to_string().as_bytes());
            out.extend_from_slice(b",\"event\":\"");
        }
        None => out.extend_from_slice(b"{\"event\":\""),
    }
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
}

/// Appends one event as a JSON object (no newline). `seq` is omitted when
/// `None` (the HTTP API carries it once per answer).
pub fn write_event(eng: &Engine, seq: Option<u64>, ev: &Event, out: &mut Vec<u8>) {
    match ev {
        Event::Accepted { market, id } => {
            head(out, seq, "accepted");
            field(out, "market", eng.market_name(*market));
            field(out, "id", eng.order_id(*id));
        }
        Event::Trade {
            market,
            maker,
            taker,
            price,
            qty,
        } => {
            head(out, seq, "trade");
            field(out, "market", eng.market_name(*market));
            field(out, "maker", eng.order_id(*maker));
            field(out, "taker", eng.order_id(*taker));
            units(out, "price", price.units());
            units(out, "qty", qty.units());
        }
        Event::Cancelled {
            market,
            id,
            remaining,
            reason,
        } => {
            head(out, seq, "cancelled");
            field(out, "market", eng.market_name(*market));
            field(out, "id", eng.order_id(*id));
            units(out, "remaining", remaining.units());
            out.extend_from_slice(b",\"reason\":\"");
            out.extend_from_slice(reason.as_str().as_bytes());
            out.push(b'"');
        }
        Event::Amended {
            market,
            id,
            price,
            qty,
        } => {
            head(out, seq, "amended");
            field(out, "market", eng.market_name(*market));
            field(out, "id", eng.order_id(*id));
            units(out, "price", price.units());
            units(out, "qty", qty.units());
        }
        Event::Rejected { market, id, reason } => {
            head(out, seq, "rejected");
            if let Some(m) = market {
                field(out, "market", m);
            }
            if let Some(i) = id {
                field(out, "id", i);
            }
            out.extend_from_slice(b",\"reason\":\"");
            out.extend_from_slice(reason.as_str().as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'}');
}

/// Appends the final `book` event of market `m` (no newline).
pub fn write_book(eng: &Engine, m: MarketIx, out: &mut Vec<u8>) {
    head(out, None, "book");
    field(out, "market", eng.market_name(m));
    for (key, side) in [("bids", Side::Buy), ("asks", Side::Sell)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":[");
        for (n, (id, price, qty)) in eng.book_side(m, side).enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            json::write_str(out, eng.order_id(id).as_bytes());
            units(out, "price", price.units());
            units(out, "qty", qty.units());
            out.push(b'}');
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// Appends `cmd` as one canonical JSONL command object (no newline), as
/// the contract has it: an amend's `base` is not written (see
/// [`write_record`]); readable back by [`decode_command`] and by `tandem
/// match`. Fields come in a fixed order, decimals in their
/// shortest exact form, so equal commands encode to equal bytes. Returns
/// false (writing nothing) for `Command::Invalid`, which is never logged.
pub fn write_command(cmd: &Command, out: &mut Vec<u8>) -> bool {
    let (op, market, id, account) = match cmd {
        Command::Place(p) => ("place", &p.market, &p.id, &p.account),
        Command::Cancel(c) => ("cancel", &c.market, &c.id, &c.account),
        Command::Amend(a) => ("amend", &a.market, &a.id, &a.account),
        Command::Invalid(_) => return false,
    };
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(op.as_bytes());
    out.push(b'"');
    field(out, "market", market);
    field(out, "id", id);
    field(out, "account", account);
    match cmd {
        Command::Place(p) => {
            out.extend_from_slice(b",\"side\":\"");
            out.extend_from_slice(p.side.as_str().as_bytes());
            out.push(b'"');
            match p.kind {
                OrderKind::Limit(price) => {
                    out.extend_from_slice(b",\"type\":\"limit\"");
                    units(out, "price", price.units());
                }
                OrderKind::Market => out.extend_from_slice(b",\"type\":\"market\""),
            }
            units(out, "qty", p.qty.units());
            out.extend_from_slice(b",\"tif\":\"");
            out.extend_from_slice(p.tif.as_str().as_bytes());
            out.push(b'"');
            if p.post_only {
                out.extend_from_slice(b",\"post_only\":true");
            }
        }
        Command::Amend(a) => {
            if let Some(price) = a.price {
                units(out, "price", price.units());
            }
            if let Some(qty) = a.qty {
                units(out, "qty", qty.units());
            }
        }
        Command::Cancel(_) | Command::Invalid(_) => {}
    }
    out.push(b'}');
    true
}

/// Appends `cmd` as a node writes it to its order log: [`write_command`]
/// plus an amend's base (`,"base":"N"` before the closing brace), readable
/// back by [`decode_record`]. Returns false (writing nothing) for
/// `Command::Invalid`.
pub fn write_record(cmd: &Command, out: &mut Vec<u8>) -> bool {
    if !write_command(cmd, out) {
        return false;
    }
    if let Command::Amend(Amend { base: Some(b), .. }) = cmd {
        out.pop();
        out.extend_from_slice(b",\"base\":\"");
        out.extend_from_slice(b.to_string().as_bytes());
        out.extend_from_slice(b"\"}");
    }
    true
}

/// Commands decoded per batch handed from the reader thread to the engine.
const BATCH: usize = 1024;
/// Batches in flight between the two threads (bounds memory).
const BATCHES_IN_FLIGHT: usize = 8;

/// Runs a whole JSONL stream through a fresh engine: the `tandem match`
/// job. Reads lines from `input`, writes event lines to `output`, and
/// returns the final engine (for its seq and chain).
///
/// Two threads: one reads and decodes lines into batches of commands, the
/// other applies them in order and encodes the events. Order is kept by
/// the channel, so output is the same as a single-threaded run; memory is
/// bounded by `BATCH * BATCHES_IN_FLIGHT` commands plus the book.
pub fn run_match<R: std::io::BufRead + Send, W: std::io::Write>(
    input: R,
    mut output: W,
    cfg: tandem_core::Config,
) -> std::io::Result<Engine> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(u64, Command)>>(BATCHES_IN_FLIGHT);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<(u64, Command)>>();
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> std::io::Result<()> {
            let mut input = input;
            let mut line = Vec::with_capacity(512);
            let mut seq: u64 = 0;
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                line.clear();
                if input.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                seq += 1;
                if is_blank(&line) {
                    continue;
                }
                batch.push((seq, decode_command(&line)));
                if batch.len() == BATCH {
                    let next = back_rx
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(BATCH));
                    if tx.send(std::mem::replace(&mut batch, next)).is_err() {
                        return Ok(()); // the engine side stopped (its error wins)
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
            Ok(())
        });
        let mut eng = Engine::new(cfg);
        let mut events = Vec::with_capacity(64);
        let mut buf = Vec::with_capacity(1 << 16);
        let applied = (|| -> std::io::Result<()> {
            for mut batch in rx.iter() {
                for i in 0..batch.len() {
                    // Look ahead in the batch so id-index misses overlap.
                    eng.look_ahead(|k| batch.get(i + k).map(|(_, c)| c));
                    let (seq, cmd) = &batch[i];
                    let seq = *seq;
                    events.clear();
                    eng.apply(seq, cmd, &mut events);
                    for ev in &events {
                        write_event(&eng, Some(seq), ev, &mut buf);
                        buf.push(b'\n');
                    }
                    if buf.len() >= 1 << 15 {
                        output.write_all(&buf)?;
                        buf.clear();
                    }
                }
                batch.clear();
                let _ = back_tx.send(batch);
            }
            Ok(())
        })();
        drop(rx);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked")));
        applied?;
        read?;
        for m in eng.markets_by_name() {
            write_book(&eng, m, &mut buf);
            buf.push(b'\n');
            if buf.len() >= 1 << 15 {
                output.write_all(&buf)?;
                buf.clear();
            }
        }
        output.write_all(&buf)?;
        output.flush()?;
        Ok(eng)
    })
}
