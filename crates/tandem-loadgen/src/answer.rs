//! Reading the node's answers: the events of a command (what they promise
//! about our order, and a digest to compare replays with), an order view,
//! a book view. Decimal strings are compared by value, since the contract
//! lets a node write `"1"` or `"1.0"`.

use std::borrow::Cow;

use serde::Deserialize;
use xxhash_rust::xxh3::Xxh3;

use crate::workload::{parse_decimal, Place};

/// `{"partition":P,"seq":N,"events":[...]}`.
#[derive(Debug, Deserialize)]
pub struct CommandAnswer<'a> {
    /// Log partition of the market.
    pub partition: u32,
    /// Seq of the command.
    pub seq: u64,
    /// Events of the command only.
    #[serde(borrow)]
    pub events: Vec<WireEvent<'a>>,
}

/// One event, with the fields this crate reads (others are ignored).
/// Strings borrow from the answer's body (copied only when they hold an
/// escape), so reading an answer allocates little.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WireEvent<'a> {
    /// Seq of the command that caused it.
    pub seq: Option<u64>,
    /// `accepted`, `trade`, `cancelled`, `rejected`, `amended`.
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    /// Market.
    #[serde(borrow, deserialize_with = "opt_cow")]
    pub market: Option<Cow<'a, str>>,
    /// Order id (accepted, cancelled, rejected, amended).
    #[serde(borrow, deserialize_with = "opt_cow")]
    pub id: Option<Cow<'a, str>>,
    /// Resting order of a trade.
    #[serde(borrow, deserialize_with = "opt_cow")]
    pub maker: Option<Cow<'a, str>>,
    /// Incoming order of a trade.
    #[serde(borrow, deserialize_with = "opt_cow")]
    pub taker: Option<Cow<'a, str>>,
    /// Price.
    #[serde(borrow, deserialize_with = "opt_cow")]
    pub price: Option<Cow<'a, str>>,
    /// Quantity.
    #[serde(borrow, deserialize_with = "opt_cow")]
    pub qty: Option<Cow<'a, str>>,
    /// Remaining quantity of a cancel.
    #[serde(borrow, deserialize_with = "opt_cow")]
    pub remaining: Option<Cow<'a, str>>,
    /// Reason of a cancel or a rejection.
    #[serde(borrow, deserialize_with = "opt_cow")]
    pub reason: Option<Cow<'a, str>>,
}

/// One event as the readers below see it, whichever way it arrived (a
/// JSON [`WireEvent`] over HTTP, a proto event over the gRPC stream): the
/// readers borrow every string and allocate nothing for a good answer.
pub trait EventView {
    /// `accepted`, `trade`, `cancelled`, `rejected`, `amended`.
    fn kind(&self) -> &str;
    /// Seq of the command that caused it.
    fn seq(&self) -> Option<u64>;
    /// Market.
    fn market(&self) -> Option<&str>;
    /// Order id.
    fn id(&self) -> Option<&str>;
    /// Resting order of a trade.
    fn maker(&self) -> Option<&str>;
    /// Incoming order of a trade.
    fn taker(&self) -> Option<&str>;
    /// Price.
    fn price(&self) -> Option<&str>;
    /// Quantity.
    fn qty(&self) -> Option<&str>;
    /// Remaining quantity of a cancel.
    fn remaining(&self) -> Option<&str>;
    /// Reason of a cancel or a rejection.
    fn reason(&self) -> Option<&str>;
}

impl EventView for WireEvent<'_> {
    fn kind(&self) -> &str {
        &self.event
    }
    fn seq(&self) -> Option<u64> {
        self.seq
    }
    fn market(&self) -> Option<&str> {
        self.market.as_deref()
    }
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    fn maker(&self) -> Option<&str> {
        self.maker.as_deref()
    }
    fn taker(&self) -> Option<&str> {
        self.taker.as_deref()
    }
    fn price(&self) -> Option<&str> {
        self.price.as_deref()
    }
    fn qty(&self) -> Option<&str> {
        self.qty.as_deref()
    }
    fn remaining(&self) -> Option<&str> {
        self.remaining.as_deref()
    }
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// What a place's answer promises about the order's state once the run is
/// over.
/// An optional string that borrows from the input unless it holds an
/// escape (serde borrows a `Cow` field, but not one inside an `Option`).
fn opt_cow<'de: 'a, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowed<'b>(#[serde(borrow)] Cow<'b, str>);
    Ok(Option::<Borrowed<'de>>::deserialize(d)?.map(|b| b.0))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No `accepted` event: nothing to find.
    NotAccepted,
    /// Accepted and part of it rested: it must exist (open, filled or
    /// cancelled, as others may have traded with it or we cancelled it).
    Rested,
    /// Accepted and fully traded on arrival: `filled`.
    Filled,
    /// Accepted and its remainder cancelled on arrival (ioc, fok,
    /// self-trade): `cancelled`.
    Cancelled,
}

/// What one place's answer says about its own order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceOutcome {
    /// Promise about the final state.
    pub expect: Expect,
    /// Reason of a rejection of our order, if any.
    pub rejected: Option<String>,
    /// Digest of the events (order-sensitive, decimals by value).
    pub digest: u64,
}

/// Why an answer does not fit the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch(pub String);

/// Reads the answer to the place of `p` whose id is `id`.
pub fn read_place<'a>(
    body: &'a [u8],
    id: &str,
    p: &Place,
) -> Result<(CommandAnswer<'a>, PlaceOutcome), Mismatch> {
    let a: CommandAnswer =
        serde_json::from_slice(body).map_err(|e| Mismatch(format!("place answer: {e}")))?;
    let out = place_outcome(&a.events, id, p)?;
    Ok((a, out))
}

/// What the events of the place of `p` (id `id`) say about it, however
/// they arrived (JSON over HTTP, proto over the gRPC stream).
pub fn place_outcome<E: EventView>(
    events: &[E],
    id: &str,
    p: &Place,
) -> Result<PlaceOutcome, Mismatch> {
    let mut accepted = false;
    let mut rejected = None;
    let mut cancelled = false;
    let mut traded = 0u64;
    for e in events {
        let mine = e.id() == Some(id);
        match e.kind() {
            "accepted" if mine => accepted = true,
            "rejected" if mine => rejected = Some(e.reason().unwrap_or_default().to_owned()),
            "cancelled" if mine => cancelled = true,
            "trade" if e.taker() == Some(id) => {
                let q = e
                    .qty()
                    .and_then(parse_decimal)
                    .ok_or_else(|| Mismatch(format!("trade qty {:?}", e.qty())))?;
                traded += q;
            }
            _ => {}
        }
    }
    let expect = if !accepted {
        if rejected.is_none() {
            return Err(Mismatch(format!("no event names order {id}")));
        }
        Expect::NotAccepted
    } else if cancelled {
        Expect::Cancelled
    } else if traded >= p.qty {
        Expect::Filled
    } else {
        Expect::Rested
    };
    Ok(PlaceOutcome {
        expect,
        rejected,
        digest: digest(events),
    })
}

/// Reads the answer to a cancel of `id`: `Ok(true)` if it cancelled it.
pub fn read_cancel<'a>(body: &'a [u8], id: &str) -> Result<(CommandAnswer<'a>, bool), Mismatch> {
    let a: CommandAnswer =
        serde_json::from_slice(body).map_err(|e| Mismatch(format!("cancel answer: {e}")))?;
    let done = cancel_outcome(&a.events, id)?;
    Ok((a, done))
}

/// Whether the events of a cancel of `id` say it cancelled it.
pub fn cancel_outcome<E: EventView>(events: &[E], id: &str) -> Result<bool, Mismatch> {
    let mut done = None;
    for e in events {
        if e.id() == Some(id) {
            match e.kind() {
                "cancelled" => done = Some(true),
                "rejected" => done = Some(false),
                _ => {}
            }
        }
    }
    done.ok_or_else(|| Mismatch(format!("no event names order {id}")))
}

/// An order as `GET /v1/orders/{market}/{id}` shows it.
#[derive(Debug, Deserialize)]
pub struct OrderView {
    /// Market.
    pub market: String,
    /// Id.
    pub id: String,
    /// Account.
    pub account: String,
    /// Side.
    pub side: String,
    /// Price (absent or null for market orders).
    #[serde(default)]
    pub price: Option<String>,
    /// Quantity.
    pub qty: String,
    /// Remaining quantity.
    pub remaining: String,
    /// `open`, `filled` or `cancelled`.
    pub status: String,
}

/// Checks an order view against the order we placed (names as sent).
pub fn check_view(v: &OrderView, p: &Place, names: (&str, &str, &str)) -> Result<(), Mismatch> {
    let (market, id, account) = names;
    if v.market != market || v.id != id || v.account != account || v.side != p.side.as_str() {
        return Err(Mismatch(format!(
            "order {id}: names or side differ ({} {} {} {})",
            v.market, v.id, v.account, v.side
        )));
    }
    if parse_decimal(&v.qty) != Some(p.qty) {
        return Err(Mismatch(format!("order {id}: qty {} differs", v.qty)));
    }
    let remaining = v.remaining.as_str();
    if remaining != "0" && parse_decimal(remaining).is_none_or(|r| r > p.qty) {
        return Err(Mismatch(format!("order {id}: remaining {remaining}")));
    }
    if p.price != 0 && v.price.as_deref().and_then(parse_decimal) != Some(p.price) {
        return Err(Mismatch(format!("order {id}: price {:?} differs", v.price)));
    }
    Ok(())
}

/// Whether a shown status keeps the promise of the place's answer (and of
/// a cancel we saw succeed).
pub fn status_fits(status: &str, expect: Expect, cancelled_by_us: bool) -> bool {
    match (expect, cancelled_by_us) {
        (Expect::NotAccepted, _) => true,
        (Expect::Filled, _) => status == "filled",
        (Expect::Cancelled, _) | (Expect::Rested, true) => status == "cancelled",
        (Expect::Rested, false) => matches!(status, "open" | "filled" | "cancelled"),
    }
}

/// `{"bids":[["p","q"],...],"asks":[...]}` (other fields ignored).
#[derive(Debug, Deserialize)]
pub struct BookView {
    /// Bid levels.
    pub bids: Vec<(String, String)>,
    /// Ask levels.
    pub asks: Vec<(String, String)>,
}

impl BookView {
    /// Checks that every level is a pair of contract decimals.
    pub fn check(&self) -> Result<(), Mismatch> {
        for (p, q) in self.bids.iter().chain(&self.asks) {
            if parse_decimal(p).is_none() || parse_decimal(q).is_none() {
                return Err(Mismatch(format!("book level [{p:?}, {q:?}]")));
            }
        }
        Ok(())
    }
}

/// Order-sensitive digest of events; decimals by value, unknown fields
/// ignored. Numbers are hashed as their decimal digits, written into a
/// buffer on the stack.
pub fn digest<E: EventView>(events: &[E]) -> u64 {
    let mut h = Xxh3::new();
    let mut put = |tag: u8, s: &[u8]| {
        h.update(&[tag]);
        h.update(&(s.len() as u32).to_le_bytes());
        h.update(s);
    };
    let mut digits = [0u8; 20];
    for e in events {
        put(0, e.kind().as_bytes());
        put(1, e.seq().map_or(&[][..], |s| u64_digits(s, &mut digits)));
        for (tag, v) in [
            (2, e.market()),
            (3, e.id()),
            (4, e.maker()),
            (5, e.taker()),
            (6, e.reason()),
        ] {
            put(tag, v.unwrap_or("\u{0}").as_bytes());
        }
        for (tag, v) in [(7, e.price()), (8, e.qty()), (9, e.remaining())] {
            match v {
                None => put(tag, "\u{0}".as_bytes()),
                Some(s) => match parse_decimal(s) {
                    Some(u) => put(tag, u64_digits(u, &mut digits)),
                    None => put(tag, s.as_bytes()),
                },
            }
        }
    }
    h.digest()
}

/// `v` in decimal (as `v.to_string()` writes it), in `buf`.
fn u64_digits(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_strings_borrow_from_the_body_unless_escaped() {
        let body = br#"{"partition":0,"seq":7,"events":[{"seq":7,"event":"accepted","market":"MKT1","id":"o\"1","side":"buy","price":"1.5","qty":"2","remaining":"2"}]}"#;
        let a: CommandAnswer<'_> = serde_json::from_slice(body).expect("reads");
        let e = &a.events[0];
        assert!(
            matches!(e.event, Cow::Borrowed("accepted")),
            "{:?}",
            e.event
        );
        assert!(
            matches!(e.market, Some(Cow::Borrowed("MKT1"))),
            "{:?}",
            e.market
        );
        assert!(
            matches!(e.price, Some(Cow::Borrowed("1.5"))),
            "{:?}",
            e.price
        );
        // An escape is decoded into an owned copy.
        assert_eq!(e.id.as_deref(), Some("o\"1"));
        assert!(matches!(e.id, Some(Cow::Owned(_))));
        assert_eq!((e.maker.as_deref(), e.reason.as_deref()), (None, None));
        assert_eq!((a.partition, a.seq, e.seq), (0, 7, Some(7)));
    }
    use crate::workload::{OrderKind, Side};

    fn place(qty: u64) -> Place {
        Place {
            n: 1,
            market: 0,
            account: 0,
            side: Side::Buy,
            kind: OrderKind::Gtc,
            price: 10_000_000_000,
            qty,
        }
    }

    #[test]
    fn reads_promises() {
        let p = place(150_000_000);
        let full = br#"{"partition":0,"seq":5,"events":[{"seq":5,"event":"accepted","market":"M","id":"o1"},{"seq":5,"event":"trade","market":"M","maker":"o0","taker":"o1","price":"100","qty":"1.5"}]}"#;
        assert_eq!(read_place(full, "o1", &p).unwrap().1.expect, Expect::Filled);
        let part = br#"{"partition":0,"seq":5,"events":[{"seq":5,"event":"accepted","market":"M","id":"o1"},{"seq":5,"event":"trade","market":"M","maker":"o0","taker":"o1","price":"100","qty":"1.0"}]}"#;
        assert_eq!(read_place(part, "o1", &p).unwrap().1.expect, Expect::Rested);
        let ioc = br#"{"partition":0,"seq":5,"events":[{"seq":5,"event":"accepted","market":"M","id":"o1"},{"seq":5,"event":"cancelled","market":"M","id":"o1","remaining":"1.5","reason":"ioc"}]}"#;
        assert_eq!(
            read_place(ioc, "o1", &p).unwrap().1.expect,
            Expect::Cancelled
        );
        let rej = br#"{"partition":0,"seq":5,"events":[{"seq":5,"event":"rejected","market":"M","id":"o1","reason":"post_only"}]}"#;
        let (_, o) = read_place(rej, "o1", &p).unwrap();
        assert_eq!(
            (o.expect, o.rejected.as_deref()),
            (Expect::NotAccepted, Some("post_only"))
        );
        assert!(read_place(br#"{"partition":0,"seq":5,"events":[]}"#, "o1", &p).is_err());
        assert!(read_place(b"nope", "o1", &p).is_err());
        // Decimal spelling does not change the digest; a seq does.
        let a = read_place(full, "o1", &p).unwrap().1.digest;
        let b = read_place(
            &String::from_utf8_lossy(full)
                .replace("\"1.5\"", "\"1.50\"")
                .into_bytes(),
            "o1",
            &p,
        )
        .unwrap()
        .1
        .digest;
        let c = read_place(
            &String::from_utf8_lossy(full)
                .replace(
                    "\"seq\":5,\"event\":\"trade\"",
                    "\"seq\":6,\"event\":\"trade\"",
                )
                .into_bytes(),
            "o1",
            &p,
        )
        .unwrap()
        .1
        .digest;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn digits_are_to_string() {
        let mut b = [0u8; 20];
        for v in [0, 7, 10, 99, 1234567890, u64::MAX] {
            assert_eq!(u64_digits(v, &mut b), v.to_string().as_bytes());
        }
    }

    #[test]
    fn statuses() {
        assert!(status_fits("filled", Expect::Filled, false));
        assert!(!status_fits("open", Expect::Filled, false));
        assert!(status_fits("cancelled", Expect::Rested, true));
        assert!(!status_fits("open", Expect::Rested, true));
        assert!(status_fits("open", Expect::Rested, false));
        assert!(!status_fits("gone", Expect::Rested, false));
    }
}
