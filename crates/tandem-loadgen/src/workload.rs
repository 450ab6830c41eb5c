//! The order flow: a seeded, reproducible sequence of operations (limit
//! places near each market's mid price, market orders, cancels of the
//! generator's own orders, optional reads), and the exact bytes of each
//! request. An order's fields are a pure function of the seed and its order
//! number, so the verifier rebuilds any order from 8 bytes instead of
//! keeping it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use tandem_node::auth::keys::SecretKey;
use tandem_node::auth::{to_hex, Policy, Scheme};

use crate::config::LoadgenConfig;

/// Fixed-point units per 1 (1e-8, as in the contract's decimals).
pub const UNIT: u64 = 100_000_000;
/// Price tick used by the generator: 0.01.
const TICK: u64 = UNIT / 100;
/// Quantity step: 0.01.
const LOT: u64 = UNIT / 100;
/// Orders remembered as cancel candidates (the generator's own gtc limits).
const CANCEL_RING: usize = 4096;
/// Orders remembered as read targets.
const READ_RING: usize = 1024;

/// SplitMix64: a tiny, fast, well-mixed generator; one seed reproduces a run.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for the `stream`-th independent sequence of `seed`.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut g = Self(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        g.next_u64();
        g
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the tiny modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Order side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

impl Side {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// What kind of order a place is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderKind {
    /// Limit, good till cancelled (may rest).
    Gtc,
    /// Limit, post-only gtc (rests or is rejected).
    PostOnly,
    /// Limit, immediate or cancel.
    Ioc,
    /// Market order (sent with tif ioc).
    Market,
}

/// One order, rebuilt from the seed and its number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// Order number in the run (0-based); the id is `<prefix>-<n>`.
    pub n: u64,
    /// Market index (`0..markets`).
    pub market: u32,
    /// Account index (`0..accounts`).
    pub account: u32,
    /// Side.
    pub side: Side,
    /// Kind.
    pub kind: OrderKind,
    /// Limit price in units of 1e-8 (0 for market orders).
    pub price: u64,
    /// Quantity in units of 1e-8.
    pub qty: u64,
}

/// One scheduled operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `POST /v1/orders` of order `n`.
    Place(u64),
    /// `DELETE /v1/orders/{market}/{id}` of order `n`.
    Cancel(u64),
    /// `GET /v1/orders/{market}/{id}` of order `n`.
    GetOrder(u64),
    /// `GET /v1/markets/{market}/book?depth=10`.
    GetBook(u32),
    /// `GET` of the configured fixed path (floor mode).
    Path,
}

/// HTTP method of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

/// A request ready to send (and to resend byte-identically on retry).
#[derive(Clone, Debug)]
pub struct RequestSpec {
    /// Method.
    pub method: Method,
    /// Path and query (origin form).
    pub path: String,
    /// Body (empty for GET and DELETE).
    pub body: bytes::Bytes,
    /// Consistency token to send as `x-tandem-min-seq`.
    pub min_seq: Option<String>,
    /// `x-tandem-signature` and `x-tandem-expiry` of a signed request.
    pub signature: Option<(String, String)>,
}

/// The keys of a signed run, one per account, made before the run.
#[derive(Debug)]
pub struct Signer {
    keys: Vec<SecretKey>,
    accounts: Vec<String>,
    policy: Policy,
    expiry_s: u64,
}

impl Signer {
    /// `accounts` keys of `scheme` derived from `seed`.
    pub fn new(scheme: Scheme, accounts: u32, seed: u64, chain_id: u64, expiry_s: u64) -> Self {
        let keys: Vec<SecretKey> = (0..u64::from(accounts))
            .map(|a| SecretKey::derive(scheme, seed, a))
            .collect();
        Signer {
            accounts: keys.iter().map(SecretKey::account).collect(),
            keys,
            policy: Policy::new(chain_id, 0, 0),
            expiry_s,
        }
    }

    /// The headers signing the command `line` (JSONL, with `op`) by
    /// account `a`, expiring `expiry_s` after the wall clock now.
    fn sign(&self, a: u32, line: &str) -> (String, String) {
        let cmd = tandem_codec::decode_command(line.as_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let c = self.keys[a as usize]
            .sign(&cmd, now + self.expiry_s, &self.policy)
            .expect("the generator's commands are valid");
        (to_hex(&c.sig), c.expiry.to_string())
    }
}

/// The order-flow parameters and the pure functions of the seed.
#[derive(Clone, Debug)]
pub struct Workload {
    seed: u64,
    id_prefix: String,
    accounts: u32,
    markets: u32,
    mids: Vec<u64>,
    read_ratio: f64,
    cancel_ratio: f64,
    market_ratio: f64,
    ioc_ratio: f64,
    post_only_ratio: f64,
    fixed_path: Option<String>,
    signer: Option<Arc<Signer>>,
}

impl Workload {
    /// The workload of `cfg`.
    pub fn new(cfg: &LoadgenConfig) -> Self {
        let mut g = SplitMix64::derive(cfg.seed, u64::MAX);
        // Mid prices between 10.00 and 1009.99, on the tick.
        let mids = (0..cfg.markets)
            .map(|_| (1_000 + g.below(100_000)) * TICK)
            .collect();
        Self {
            seed: cfg.seed,
            id_prefix: cfg
                .id_prefix
                .clone()
                .unwrap_or_else(|| format!("lg{}", cfg.seed)),
            accounts: cfg.accounts,
            markets: cfg.markets,
            mids,
            read_ratio: cfg.read_ratio,
            cancel_ratio: cfg.cancel_ratio,
            market_ratio: cfg.market_ratio,
            ioc_ratio: cfg.ioc_ratio,
            post_only_ratio: cfg.post_only_ratio,
            fixed_path: cfg.fixed_path(),
            signer: cfg.sign.as_deref().map(|s| {
                let scheme = if s == "eip712" {
                    Scheme::Eip712
                } else {
                    Scheme::Ed25519
                };
                Arc::new(Signer::new(
                    scheme,
                    cfg.accounts,
                    cfg.seed,
                    cfg.sign_chain_id,
                    cfg.sign_expiry_s,
                ))
            }),
        }
    }

    /// Share of operations that place an order (an upper bound, used to
    /// size the acknowledgement records).
    pub fn place_share(&self) -> f64 {
        if self.fixed_path.is_some() {
            0.0
        } else {
            (1.0 - self.read_ratio).max(0.0)
        }
    }

    /// Whether requests are signed (`--sign`).
    pub fn signed(&self) -> bool {
        self.signer.is_some()
    }

    /// Market name of index `m`.
    pub fn market_name(&self, m: u32) -> String {
        format!("MKT{m}")
    }

    /// Account name of index `a`.
    pub fn account_name(&self, a: u32) -> String {
        match &self.signer {
            Some(s) => s.accounts[a as usize].clone(),
            None => format!("acct{a}"),
        }
    }

    /// Id of order `n`, unique per market across the run.
    pub fn order_id(&self, n: u64) -> String {
        format!("{}-{n}", self.id_prefix)
    }

    /// `order_id(n)` written into `out` (cleared first), to reuse a buffer.
    pub fn write_order_id(&self, n: u64, out: &mut String) {
        out.clear();
        let _ = write!(out, "{}-{n}", self.id_prefix);
    }

    /// Order `n`: a pure function of the seed and `n`.
    pub fn place(&self, n: u64) -> Place {
        let mut g = SplitMix64::derive(self.seed, n);
        let market = g.below(u64::from(self.markets)) as u32;
        let account = g.below(u64::from(self.accounts)) as u32;
        let side = if g.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let r = g.unit();
        let kind = if r < self.market_ratio {
            OrderKind::Market
        } else {
            let r = g.unit();
            if r < self.ioc_ratio {
                OrderKind::Ioc
            } else if r < self.ioc_ratio + self.post_only_ratio {
                OrderKind::PostOnly
            } else {
                OrderKind::Gtc
            }
        };
        // Distance from mid in ticks, on the passive side: -5..=20 for
        // takers that sometimes cross, 1..=20 for post-only.
        let away = match kind {
            OrderKind::PostOnly => 1 + g.below(20) as i64,
            _ => g.below(26) as i64 - 5,
        };
        let mid = self.mids[market as usize] as i64;
        let delta = away * TICK as i64;
        let price = match (kind, side) {
            (OrderKind::Market, _) => 0,
            (_, Side::Buy) => (mid - delta).max(TICK as i64) as u64,
            (_, Side::Sell) => (mid + delta) as u64,
        };
        let qty = (1 + g.below(500)) * LOT;
        Place {
            n,
            market,
            account,
            side,
            kind,
            price,
            qty,
        }
    }

    /// The `POST /v1/orders` request of order `n`.
    pub fn place_request(&self, n: u64) -> RequestSpec {
        let p = self.place(n);
        // Written into one buffer (no string per field): the loadgen
        // builds one of these per request.
        let mut body = String::with_capacity(192);
        let _ = write!(
            body,
            r#"{{"market":"MKT{}","id":"{}-{n}","account":""#,
            p.market, self.id_prefix
        );
        match &self.signer {
            Some(s) => body.push_str(&s.accounts[p.account as usize]),
            None => {
                let _ = write!(body, "acct{}", p.account);
            }
        }
        body.push_str(r#"","side":""#);
        body.push_str(p.side.as_str());
        body.push('"');
        match p.kind {
            OrderKind::Market => {
                body.push_str(r#","type":"market","qty":""#);
                push_decimal(&mut body, p.qty);
                body.push_str(r#"","tif":"ioc"}"#);
            }
            OrderKind::Ioc | OrderKind::Gtc | OrderKind::PostOnly => {
                body.push_str(r#","type":"limit","price":""#);
                push_decimal(&mut body, p.price);
                body.push_str(r#"","qty":""#);
                push_decimal(&mut body, p.qty);
                body.push_str(match p.kind {
                    OrderKind::Ioc => r#"","tif":"ioc"}"#,
                    OrderKind::PostOnly => r#"","tif":"gtc","post_only":true}"#,
                    _ => r#"","tif":"gtc","post_only":false}"#,
                });
            }
        }
        let signature = self
            .signer
            .as_ref()
            .map(|s| s.sign(p.account, &format!("{{\"op\":\"place\",{}", &body[1..])));
        RequestSpec {
            method: Method::Post,
            path: "/v1/orders".to_owned(),
            body: bytes::Bytes::from(body),
            min_seq: None,
            signature,
        }
    }

    /// Path of order `n` (`/v1/orders/{market}/{id}?account=A`).
    pub fn order_path(&self, n: u64) -> String {
        let p = self.place(n);
        format!(
            "/v1/orders/{}/{}?account={}",
            self.market_name(p.market),
            self.order_id(n),
            self.account_name(p.account)
        )
    }

    /// The request of one operation.
    pub fn request(&self, op: Op) -> RequestSpec {
        let get = |path: String| RequestSpec {
            method: Method::Get,
            path,
            body: bytes::Bytes::new(),
            min_seq: None,
            signature: None,
        };
        match op {
            Op::Place(n) => self.place_request(n),
            Op::Cancel(n) => RequestSpec {
                method: Method::Delete,
                signature: self.signer.as_ref().map(|s| {
                    let p = self.place(n);
                    let line = format!(
                        r#"{{"op":"cancel","market":"{}","id":"{}","account":"{}"}}"#,
                        self.market_name(p.market),
                        self.order_id(n),
                        self.account_name(p.account)
                    );
                    s.sign(p.account, &line)
                }),
                ..get(self.order_path(n))
            },
            Op::GetOrder(n) => get(self.order_path(n)),
            Op::GetBook(m) => get(format!("/v1/markets/{}/book?depth=10", self.market_name(m))),
            Op::Path => get(self.fixed_path.clone().unwrap_or_else(|| "/".to_owned())),
        }
    }
}

/// The stateful side of the flow: numbers orders and remembers the
/// generator's own recent orders as cancel and read targets. Driven by the
/// pacer in schedule order, so one seed gives one operation sequence
/// whatever the server answers.
#[derive(Debug)]
pub struct Generator {
    rng: SplitMix64,
    next_order: u64,
    cancel_candidates: VecDeque<u64>,
    recent: VecDeque<u64>,
    fixed_path: bool,
    read_ratio: f64,
    cancel_ratio: f64,
    markets: u32,
}

impl Generator {
    /// A generator for `w`.
    pub fn new(w: &Workload) -> Self {
        Self {
            rng: SplitMix64::derive(w.seed, u64::MAX - 1),
            next_order: 0,
            cancel_candidates: VecDeque::with_capacity(CANCEL_RING),
            recent: VecDeque::with_capacity(READ_RING),
            fixed_path: w.fixed_path.is_some(),
            read_ratio: w.read_ratio,
            cancel_ratio: w.cancel_ratio,
            markets: w.markets,
        }
    }

    /// Orders numbered so far.
    pub fn orders(&self) -> u64 {
        self.next_order
    }

    /// The next operation.
    pub fn next_op(&mut self, w: &Workload) -> Op {
        if self.fixed_path {
            return Op::Path;
        }
        let r = self.rng.unit();
        if r < self.read_ratio {
            if self.rng.below(2) == 0 && !self.recent.is_empty() {
                let k = self.rng.below(self.recent.len() as u64) as usize;
                return Op::GetOrder(self.recent[k]);
            }
            return Op::GetBook(self.rng.below(u64::from(self.markets)) as u32);
        }
        let r = self.rng.unit();
        if r < self.cancel_ratio && !self.cancel_candidates.is_empty() {
            // Any remembered order, most often an older one: a cancel sent
            // too soon after its place races it (and is then rejected).
            let len = self.cancel_candidates.len() as u64;
            let k = self.rng.below(len).min(self.rng.below(len)) as usize;
            let n = self
                .cancel_candidates
                .swap_remove_back(k)
                .expect("index within the ring");
            return Op::Cancel(n);
        }
        let n = self.next_order;
        self.next_order += 1;
        if matches!(w.place(n).kind, OrderKind::Gtc | OrderKind::PostOnly) {
            if self.cancel_candidates.len() == CANCEL_RING {
                self.cancel_candidates.pop_front();
            }
            self.cancel_candidates.push_back(n);
        }
        if self.recent.len() == READ_RING {
            self.recent.pop_front();
        }
        self.recent.push_back(n);
        Op::Place(n)
    }
}

/// Appends units of 1e-8 as the contract's decimal string, without
/// trailing zeros (`150000000` → `"1.5"`).
pub fn push_decimal(out: &mut String, units: u64) {
    let (int, mut frac) = (units / UNIT, units % UNIT);
    let _ = write!(out, "{int}");
    if frac == 0 {
        return;
    }
    // Eight decimals, trailing zeros dropped.
    let mut digits = 8;
    while frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    let _ = write!(out, ".{frac:0digits$}");
}

/// Parses a contract decimal string into units of 1e-8 (`None` if it is
/// not one or has more than 8 significant decimals).
pub fn parse_decimal(s: &str) -> Option<u64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.contains('.') && (frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 8 {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let mut f: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..8 {
        f *= 10;
    }
    int.checked_mul(UNIT)?.checked_add(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body as it was written with one `format!` per field, before it
    /// was built in one buffer: the bytes must not change.
    fn place_body_by_format(w: &Workload, n: u64) -> String {
        let old_decimal = |units: u64| {
            let (int, frac) = (units / UNIT, units % UNIT);
            if frac == 0 {
                return int.to_string();
            }
            let f = format!("{frac:08}");
            format!("{int}.{}", f.trim_end_matches('0'))
        };
        let p = w.place(n);
        let mut body = format!(
            r#"{{"market":"{}","id":"{}","account":"{}","side":"{}""#,
            w.market_name(p.market),
            w.order_id(n),
            w.account_name(p.account),
            p.side.as_str(),
        );
        body.push_str(&match p.kind {
            OrderKind::Market => format!(
                r#","type":"market","qty":"{}","tif":"ioc"}}"#,
                old_decimal(p.qty)
            ),
            OrderKind::Ioc => format!(
                r#","type":"limit","price":"{}","qty":"{}","tif":"ioc"}}"#,
                old_decimal(p.price),
                old_decimal(p.qty)
            ),
            OrderKind::Gtc | OrderKind::PostOnly => format!(
                r#","type":"limit","price":"{}","qty":"{}","tif":"gtc","post_only":{}}}"#,
                old_decimal(p.price),
                old_decimal(p.qty),
                p.kind == OrderKind::PostOnly
            ),
        });
        body
    }

    #[test]
    fn place_bodies_keep_their_bytes() {
        let w = Workload::new(&LoadgenConfig {
            post_only_ratio: 0.2,
            ..LoadgenConfig::default()
        });
        let mut kinds = std::collections::BTreeSet::new();
        for n in 0..5000 {
            let spec = w.place_request(n);
            assert_eq!(
                std::str::from_utf8(&spec.body).expect("utf-8"),
                place_body_by_format(&w, n),
                "order {n}"
            );
            kinds.insert(format!("{:?}", w.place(n).kind));
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        for u in [
            0,
            1,
            10,
            99_999_999,
            UNIT,
            150_000_000,
            10_025_000_000,
            123_456_789_012,
            u64::MAX,
        ] {
            let mut s = String::new();
            push_decimal(&mut s, u);
            assert_eq!(parse_decimal(&s), Some(u), "{s}");
        }
    }

    #[test]
    fn decimals_round_trip() {
        for (u, s) in [
            (150_000_000, "1.5"),
            (UNIT, "1"),
            (1, "0.00000001"),
            (10_025_000_000, "100.25"),
        ] {
            let mut out = String::new();
            push_decimal(&mut out, u);
            assert_eq!(out, s);
            assert_eq!(parse_decimal(s), Some(u));
        }
        assert_eq!(parse_decimal("1.50000000000"), Some(150_000_000));
        assert_eq!(parse_decimal("0.123456789"), None);
        assert_eq!(parse_decimal("1e3"), None);
        assert_eq!(parse_decimal(".5"), None);
        assert_eq!(parse_decimal("5."), None);
    }

    /// With --sign, places and cancels carry a signature the node's
    /// verifier accepts, by the account the body names; one seed gives the
    /// same accounts.
    #[test]
    fn signed_requests_verify() {
        for scheme in ["ed25519", "eip712"] {
            let cfg = LoadgenConfig {
                accounts: 5,
                sign: Some(scheme.into()),
                sign_chain_id: 9,
                ..LoadgenConfig::default()
            };
            let w = Workload::new(&cfg);
            assert_eq!(w.account_name(3), Workload::new(&cfg).account_name(3));
            let policy = Policy::new(9, 300, 5);
            for n in 0..20 {
                let r = w.place_request(n);
                let (sig, expiry) = r.signature.clone().expect("signed");
                let creds = tandem_node::auth::Credentials {
                    sig: tandem_node::auth::from_hex(&sig).unwrap(),
                    expiry: expiry.parse().unwrap(),
                };
                let cmd = tandem_codec::decode_with_op(&r.body, tandem_codec::Op::Place);
                assert_eq!(policy.verify(&cmd, &creds).map(Scheme::as_str), Ok(scheme));
                let c = w.request(Op::Cancel(n));
                let (sig, expiry) = c.signature.expect("signed cancel");
                let p = w.place(n);
                let line = format!(
                    r#"{{"op":"cancel","market":"{}","id":"{}","account":"{}"}}"#,
                    w.market_name(p.market),
                    w.order_id(n),
                    w.account_name(p.account)
                );
                let creds = tandem_node::auth::Credentials {
                    sig: tandem_node::auth::from_hex(&sig).unwrap(),
                    expiry: expiry.parse().unwrap(),
                };
                let cmd = tandem_codec::decode_command(line.as_bytes());
                assert!(policy.verify(&cmd, &creds).is_ok());
                assert!(c.path.contains(&w.account_name(p.account)));
            }
        }
        let unsigned = Workload::new(&LoadgenConfig::default());
        assert!(unsigned.place_request(0).signature.is_none());
    }

    #[test]
    fn one_seed_one_flow() {
        let cfg = LoadgenConfig {
            read_ratio: 0.1,
            ..LoadgenConfig::default()
        };
        let w = Workload::new(&cfg);
        let ops = |w: &Workload| {
            let mut g = Generator::new(w);
            (0..5000).map(|_| g.next_op(w)).collect::<Vec<_>>()
        };
        let a = ops(&w);
        assert_eq!(a, ops(&w));
        assert!(a.iter().any(|o| matches!(o, Op::Cancel(_))));
        assert!(a.iter().any(|o| matches!(o, Op::GetOrder(_))));
        assert!(a.iter().any(|o| matches!(o, Op::GetBook(_))));
        // Every order is placed once, and cancels name placed orders.
        let mut placed = std::collections::HashSet::new();
        for o in &a {
            match o {
                Op::Place(n) => assert!(placed.insert(*n)),
                Op::Cancel(n) | Op::GetOrder(n) => assert!(placed.contains(n)),
                _ => {}
            }
        }
        let other = Workload::new(&LoadgenConfig {
            seed: cfg.seed + 1,
            ..cfg.clone()
        });
        assert_ne!(w.place_request(3).body, other.place_request(3).body);
    }

    #[test]
    fn bodies_follow_the_contract() {
        let w = Workload::new(&LoadgenConfig::default());
        let mut kinds = std::collections::HashSet::new();
        for n in 0..2000 {
            let p = w.place(n);
            kinds.insert(format!("{:?}", p.kind));
            let body: serde_json::Value =
                serde_json::from_slice(&w.place_request(n).body).expect("valid json");
            assert_eq!(
                body["id"],
                format!("lg{}-{n}", LoadgenConfig::default().seed)
            );
            assert_eq!(parse_decimal(body["qty"].as_str().unwrap()), Some(p.qty));
            match p.kind {
                OrderKind::Market => assert!(body.get("price").is_none()),
                _ => {
                    assert!(p.price > 0);
                    assert_eq!(
                        parse_decimal(body["price"].as_str().unwrap()),
                        Some(p.price)
                    );
                }
            }
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
    }
}
