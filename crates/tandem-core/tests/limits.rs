//! Capacity limits are rules of the state machine: a place beyond one is
//! rejected with reason `limit`, deterministically, and the counts behind
//! them survive a snapshot.

use tandem_core::{
    Cancel, Command, Config, Engine, Event, OrderKind, Place, Price, Qty, RejectReason, Side, Sym,
    Tif,
};

fn place(id: &str, account: &str, side: Side, price: &str, qty: &str, tif: Tif) -> Command {
    Command::Place(Place {
        market: Sym::new("M"),
        id: Sym::new(id),
        account: Sym::new(account),
        side,
        kind: OrderKind::Limit(Price::parse(price).unwrap()),
        qty: Qty::parse(qty).unwrap(),
        tif,
        post_only: false,
    })
}

fn cancel(id: &str, account: &str) -> Command {
    Command::Cancel(Cancel {
        market: Sym::new("M"),
        id: Sym::new(id),
        account: Sym::new(account),
    })
}

fn run(eng: &mut Engine, cmd: Command) -> Vec<Event> {
    let mut out = Vec::new();
    eng.apply(eng.seq() + 1, &cmd, &mut out);
    eng.check_invariants().unwrap();
    out
}

fn rejected_for_limit(ev: &[Event]) -> bool {
    matches!(
        ev,
        [Event::Rejected {
            reason: RejectReason::Limit,
            ..
        }]
    )
}

#[test]
fn open_orders_per_account_are_bounded() {
    let cfg = Config {
        max_open_per_account: 2,
        ..Config::default()
    };
    let mut eng = Engine::new(cfg.clone());
    assert!(!rejected_for_limit(&run(
        &mut eng,
        place("a1", "alice", Side::Buy, "10", "1", Tif::Gtc)
    )));
    assert!(!rejected_for_limit(&run(
        &mut eng,
        place("a2", "alice", Side::Buy, "11", "1", Tif::Gtc)
    )));
    // A third resting order is refused; the id is not taken.
    assert!(rejected_for_limit(&run(
        &mut eng,
        place("a3", "alice", Side::Buy, "12", "1", Tif::Gtc)
    )));
    // Another account is not affected; an IOC never rests, so it is allowed.
    assert!(!rejected_for_limit(&run(
        &mut eng,
        place("b1", "bob", Side::Buy, "9", "1", Tif::Gtc)
    )));
    assert!(!rejected_for_limit(&run(
        &mut eng,
        place("a4", "alice", Side::Sell, "20", "1", Tif::Ioc)
    )));
    // A fill frees a slot: bob sells into alice's best bid.
    run(
        &mut eng,
        place("b2", "bob", Side::Sell, "11", "1", Tif::Ioc),
    );
    assert!(!rejected_for_limit(&run(
        &mut eng,
        place("a3", "alice", Side::Buy, "12", "1", Tif::Gtc)
    )));
    assert!(rejected_for_limit(&run(
        &mut eng,
        place("a5", "alice", Side::Buy, "13", "1", Tif::Gtc)
    )));
    // The count survives a snapshot: still full after restore...
    let mut restored = Engine::restore(&eng.snapshot(), cfg).unwrap();
    restored.check_invariants().unwrap();
    assert!(rejected_for_limit(&run(
        &mut restored,
        place("a6", "alice", Side::Buy, "13", "1", Tif::Gtc)
    )));
    // ...and a cancel frees a slot.
    run(&mut restored, cancel("a1", "alice"));
    assert!(!rejected_for_limit(&run(
        &mut restored,
        place("a7", "alice", Side::Buy, "13", "1", Tif::Gtc)
    )));
}
