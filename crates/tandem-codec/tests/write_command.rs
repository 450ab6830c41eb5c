//! `write_command` is what a node puts in the order log: it must decode
//! back to the very command it encoded, for any valid command, and equal
//! commands must encode to equal bytes.

use proptest::prelude::*;
use tandem_codec::{decode_command, write_command};
use tandem_core::{Amend, Cancel, Command, Invalid, OrderKind, Place, Price, Qty, Side, Sym, Tif};

fn sym() -> impl Strategy<Value = Sym> {
    // Quotes, backslashes, control bytes and non-ASCII must survive.
    "[a-zA-Z0-9\"\\\\\u{1}\u{e9}\u{1F600} -]{1,12}".prop_map(|s| Sym::new(&s))
}

fn units() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..1_000,
        1u64..=tandem_core::MAX_UNITS,
        Just(tandem_core::MAX_UNITS)
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let place = (
        sym(),
        sym(),
        sym(),
        any::<bool>(),
        proptest::option::of(units()),
        units(),
        0u8..3,
        any::<bool>(),
    )
        .prop_map(|(market, id, account, buy, price, qty, tif, post)| {
            let kind = match price {
                Some(p) => OrderKind::Limit(Price::from_units(p).unwrap()),
                None => OrderKind::Market,
            };
            let tif = [Tif::Gtc, Tif::Ioc, Tif::Fok][tif as usize];
            Command::Place(Place {
                market,
                id,
                account,
                side: if buy { Side::Buy } else { Side::Sell },
                kind,
                qty: Qty::from_units(qty).unwrap(),
                tif,
                post_only: post && tif == Tif::Gtc && matches!(kind, OrderKind::Limit(_)),
            })
        });
    let cancel = (sym(), sym(), sym()).prop_map(|(market, id, account)| {
        Command::Cancel(Cancel {
            market,
            id,
            account,
        })
    });
    let amend = (
        sym(),
        sym(),
        sym(),
        proptest::option::of(units()),
        proptest::option::of(units()),
    )
        .prop_filter("amend needs a price or a qty", |t| {
            t.3.is_some() || t.4.is_some()
        })
        .prop_map(|(market, id, account, price, qty)| {
            Command::Amend(Amend {
                market,
                id,
                account,
                price: price.and_then(Price::from_units),
                qty: qty.and_then(Qty::from_units),
            })
        });
    prop_oneof![place, cancel, amend]
}

proptest! {
    #[test]
    fn written_commands_decode_to_themselves(cmd in command()) {
        let mut line = Vec::new();
        prop_assert!(write_command(&cmd, &mut line));
        prop_assert_eq!(decode_command(&line), cmd.clone());
        let mut again = Vec::new();
        write_command(&decode_command(&line), &mut again);
        prop_assert_eq!(line, again);
    }
}

#[test]
fn invalid_commands_are_never_written() {
    let mut out = Vec::new();
    let cmd = Command::Invalid(Invalid {
        market: None,
        id: None,
        field: "body",
    });
    assert!(!write_command(&cmd, &mut out));
    assert!(out.is_empty());
}

#[test]
fn canonical_form_of_a_place() {
    let cmd = decode_command(
        br#"{"post_only":false,"qty":"1.50","price":"100.250","account":"a","id":"o1","market":"M","side":"buy","op":"place"}"#,
    );
    let mut out = Vec::new();
    write_command(&cmd, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"op":"place","market":"M","id":"o1","account":"a","side":"buy","type":"limit","price":"100.25","qty":"1.5","tif":"gtc"}"#
    );
}
