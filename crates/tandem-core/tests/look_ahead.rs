//! `Engine::look_ahead` only prefetches: a flow applied with it gives
//! exactly the events and chain of the same flow applied without it, both
//! over more markets than turn on its deeper stages (rungs, levels, the
//! registry entry and the order of a cancel or amend) and over one market
//! (where only the market, the id index line and a cancel's or amend's
//! registry entry are prefetched).

use tandem_core::{Amend, Cancel, Command, Config, Engine, Event, OrderKind, Place, Price, Qty};
use tandem_core::{Side, Sym, Tif};

/// More markets than the deep stages need (65,536).
const MARKETS: u64 = 70_000;

/// A seeded flow over `markets` markets: one resting order per market
/// first, then places at and through the touch, cancels and amends of
/// earlier ids, market orders.
fn flow(markets: u64) -> Vec<Command> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let market = |m: u64| Sym::new(&format!("M{m}"));
    let mut cmds = Vec::new();
    let mut next_id = 0u64;
    // (market, id, account) of every limit placed.
    let mut placed: Vec<(u64, u64, u64)> = Vec::new();
    let place = |m: u64, id: u64, acct: u64, side: Side, px: Option<u64>, qty: u64| {
        Command::Place(Place {
            market: market(m),
            id: Sym::new(&format!("o{id}")),
            account: Sym::new(&format!("a{acct}")),
            side,
            kind: px.map_or(OrderKind::Market, |p| {
                OrderKind::Limit(Price::parse(&p.to_string()).unwrap())
            }),
            qty: Qty::parse(&qty.to_string()).unwrap(),
            tif: if px.is_some() { Tif::Gtc } else { Tif::Ioc },
            post_only: false,
        })
    };
    for m in 0..markets {
        let side = if m % 2 == 0 { Side::Buy } else { Side::Sell };
        let px = if side == Side::Buy { 99 } else { 101 };
        cmds.push(place(m, next_id, m % 97, side, Some(px), 5));
        placed.push((m, next_id, m % 97));
        next_id += 1;
    }
    for _ in 0..40_000 {
        let m = rnd(markets);
        let acct = rnd(97);
        let side = if rnd(2) == 0 { Side::Buy } else { Side::Sell };
        // A limit placed earlier (it may have traded or gone since).
        let (om, oid, oacct) = placed[rnd(placed.len() as u64) as usize];
        let cmd = match rnd(10) {
            0..=5 => {
                let px = if side == Side::Buy {
                    98 + rnd(4)
                } else {
                    99 + rnd(4)
                };
                let c = place(m, next_id, acct, side, Some(px), 1 + rnd(9));
                placed.push((m, next_id, acct));
                next_id += 1;
                c
            }
            6 | 7 => Command::Cancel(Cancel {
                market: market(om),
                id: Sym::new(&format!("o{oid}")),
                account: Sym::new(&format!("a{oacct}")),
            }),
            8 => Command::Amend(Amend {
                market: market(om),
                id: Sym::new(&format!("o{oid}")),
                account: Sym::new(&format!("a{oacct}")),
                price: None,
                qty: Some(Qty::parse("1").unwrap()),
                base: (oid % 2 == 0).then_some(0),
            }),
            _ => {
                let c = place(m, next_id, acct, side, None, 1 + rnd(9));
                next_id += 1;
                c
            }
        };
        cmds.push(cmd);
    }
    cmds
}

/// Applies `cmds` to two engines, one calling `look_ahead` before each
/// command; asserts equal events, chain and markets. Returns the counts of
/// trades, cancelled and amended events.
fn compare(cmds: &[Command], markets: u64) -> [usize; 3] {
    let (mut plain, mut ahead) = (
        Engine::new(Config::default()),
        Engine::new(Config::default()),
    );
    let (mut a, mut b): (Vec<Event>, Vec<Event>) = (Vec::new(), Vec::new());
    let mut kinds = [0usize; 3];
    for (i, cmd) in cmds.iter().enumerate() {
        let seq = i as u64 + 1;
        ahead.look_ahead(|k| cmds.get(i + k));
        a.clear();
        b.clear();
        plain.apply(seq, cmd, &mut a);
        ahead.apply(seq, cmd, &mut b);
        assert_eq!(a, b, "events of command {seq}");
        for e in &a {
            match e {
                Event::Trade { .. } => kinds[0] += 1,
                Event::Cancelled { .. } => kinds[1] += 1,
                Event::Amended { .. } => kinds[2] += 1,
                _ => {}
            }
        }
    }
    assert_eq!(plain.market_count(), markets as usize);
    assert_eq!(plain.chain(), ahead.chain());
    ahead.check_invariants().unwrap();
    kinds
}

#[test]
fn look_ahead_changes_nothing_with_its_deep_stages_on() {
    let kinds = compare(&flow(MARKETS), MARKETS);
    // The flow reached every path the deep stages prefetch for.
    assert!(
        kinds.iter().all(|&n| n > 500),
        "trades, cancels, amends: {kinds:?}"
    );
}

#[test]
fn look_ahead_changes_nothing_on_one_market() {
    let kinds = compare(&flow(1), 1);
    // Cancels and amends of live orders: the registry-entry stage ran.
    assert!(
        kinds.iter().all(|&n| n > 500),
        "trades, cancels, amends: {kinds:?}"
    );
}
