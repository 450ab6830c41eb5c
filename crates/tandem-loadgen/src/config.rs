//! The one configuration of a load run, with its defaults, its limits and
//! its validation. Flag parsing lives in `cli.rs`; this file has no I/O.

use std::path::PathBuf;

use serde::Serialize;

use crate::LoadgenError;

/// Most connections a run may open (over all targets).
pub const MAX_CONNECTIONS: usize = 4096;
/// Most requests in flight a run may allow.
pub const MAX_IN_FLIGHT: usize = 65_536;
/// Most requests a run may schedule (bounds the acknowledgement records).
pub const MAX_REQUESTS: u64 = 50_000_000;
/// Most keys a signed run derives (one per account).
pub const MAX_SIGNING_KEYS: u32 = 100_000;
/// Most retries of one request.
pub const MAX_RETRIES: u32 = 10;

/// Everything that defines a load run. One seed reproduces the operation
/// sequence; the timing of answers is the server's.
#[derive(Clone, Debug, Serialize)]
pub struct LoadgenConfig {
    /// Node base addresses (`http://host:port`); requests go round-robin,
    /// a retry goes to the next one.
    pub targets: Vec<String>,
    /// Scheduled requests per second (open loop: the schedule never slows).
    pub rate: f64,
    /// Measured seconds, after the warmup.
    pub duration_s: f64,
    /// Seconds at the start whose requests are sent but not counted.
    pub warmup_s: f64,
    /// Connections in total, split evenly over the targets (at least one
    /// each). With HTTP/1.1 each carries one request at a time.
    pub connections: usize,
    /// Use HTTP/2 (prior knowledge, cleartext) instead of HTTP/1.1.
    pub http2: bool,
    /// Requests in flight at most; `None` is `connections` for HTTP/1.1 and
    /// `64 * connections` for HTTP/2.
    pub max_in_flight: Option<usize>,
    /// Accounts the orders are spread over.
    pub accounts: u32,
    /// Markets the orders are spread over (`MKT0`..).
    pub markets: u32,
    /// Share of operations that are reads (GET order, GET book).
    pub read_ratio: f64,
    /// Share of the non-read operations that cancel one of our orders.
    pub cancel_ratio: f64,
    /// Share of places that are market orders.
    pub market_ratio: f64,
    /// Share of limit places that are ioc.
    pub ioc_ratio: f64,
    /// Share of limit places that are post-only.
    pub post_only_ratio: f64,
    /// Seed of the operation sequence.
    pub seed: u64,
    /// Order id prefix; `None` is `lg<seed>` (ids are `<prefix>-<n>`).
    pub id_prefix: Option<String>,
    /// Retries of one request on a connection error or 502/503/429.
    pub retries: u32,
    /// First retry backoff in milliseconds (doubling, capped at 100 ms; a
    /// `retry-after` answer header is honoured up to that cap).
    pub retry_backoff_ms: u64,
    /// Timeout of one attempt (connect, send, whole answer), milliseconds.
    pub timeout_ms: u64,
    /// After the run, read back every accepted order (and replay some).
    pub verify: bool,
    /// Read-backs started per second after the run (0: as fast as the
    /// in-flight bound allows). A bound keeps the read-back from landing
    /// on the system under test as one burst.
    pub verify_rate: f64,
    /// Share of acknowledged orders whose POST is replayed after the run to
    /// check idempotence (orders that were retried are always replayed).
    pub replay_ratio: f64,
    /// Floor mode: only `GET /healthz`, at the same rate.
    pub floor: bool,
    /// Only `GET <path>`, at the same rate (overrides `floor`).
    pub path: Option<String>,
    /// Runtime worker threads.
    pub threads: usize,
    /// Where to write one CSV line per measured request at the end of the
    /// run (16 bytes a request in memory until then; the schedule holds
    /// at most [`MAX_REQUESTS`]). The file is created before the load
    /// starts, so a path that cannot be written fails at once.
    pub samples: Option<PathBuf>,
    /// Sign every place and cancel (`docs/signing.md`): `ed25519` or
    /// `eip712`. Account `a` is then the account of key `a`, one of
    /// `accounts` keys derived from `seed` before the run starts; each
    /// request is signed when it is built, during the run, so the signing
    /// time is in the client's latency.
    pub sign: Option<String>,
    /// The chain id signed (the nodes' `signing.chain_id`).
    pub sign_chain_id: u64,
    /// Lifetime of each signature in seconds (expiry = wall clock when the
    /// request is built + this).
    pub sign_expiry_s: u64,
    /// Closed loop over the node's gRPC `Submit` stream instead of the
    /// fixed-rate HTTP schedule: `connections` streams (one HTTP/2
    /// connection each), each keeping `stream_in_flight` requests in
    /// flight, for `warmup_s + duration_s`. `rate` is not used.
    pub grpc_stream: bool,
    /// Requests in flight per stream with `grpc_stream`.
    pub stream_in_flight: usize,
}

impl Default for LoadgenConfig {
    fn default() -> Self {
        Self {
            targets: vec!["http://127.0.0.1:8080".to_owned()],
            rate: 1000.0,
            duration_s: 10.0,
            warmup_s: 2.0,
            connections: 32,
            http2: false,
            max_in_flight: None,
            accounts: 1000,
            markets: 10,
            read_ratio: 0.0,
            cancel_ratio: 0.2,
            market_ratio: 0.05,
            ioc_ratio: 0.1,
            post_only_ratio: 0.1,
            seed: 1,
            id_prefix: None,
            retries: 3,
            retry_backoff_ms: 5,
            timeout_ms: 5000,
            verify: true,
            verify_rate: 0.0,
            replay_ratio: 0.05,
            floor: false,
            path: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2),
            samples: None,
            sign: None,
            sign_chain_id: 1,
            sign_expiry_s: 60,
            grpc_stream: false,
            stream_in_flight: 128,
        }
    }
}

impl LoadgenConfig {
    /// The fixed path of floor / path mode, if any.
    pub fn fixed_path(&self) -> Option<String> {
        match (&self.path, self.floor) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => Some("/healthz".to_owned()),
            (None, false) => None,
        }
    }

    /// The in-flight bound in effect.
    pub fn in_flight_bound(&self) -> usize {
        if self.grpc_stream {
            return self.connections.saturating_mul(self.stream_in_flight);
        }
        self.max_in_flight.unwrap_or(if self.http2 {
            self.connections.saturating_mul(64).min(MAX_IN_FLIGHT)
        } else {
            self.connections
        })
    }

    /// Requests the schedule holds (warmup included).
    pub fn scheduled_requests(&self) -> u64 {
        ((self.warmup_s + self.duration_s) * self.rate).floor() as u64
    }

    /// Checks every field against its limit.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let bad = |m: String| Err(LoadgenError::Config(m));
        if self.targets.is_empty() {
            return bad("no target".into());
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad(format!("rate must be > 0, got {}", self.rate));
        }
        for (name, v) in [("duration", self.duration_s), ("warmup", self.warmup_s)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be >= 0 seconds, got {v}"));
            }
        }
        if self.duration_s <= 0.0 {
            return bad("duration must be > 0 seconds".into());
        }
        if !(self.verify_rate.is_finite() && self.verify_rate >= 0.0) {
            return bad(format!(
                "verify-rate must be >= 0 per second, got {}",
                self.verify_rate
            ));
        }
        if self.scheduled_requests() > MAX_REQUESTS {
            return bad(format!(
                "rate * (warmup + duration) is {} requests, over the limit of {MAX_REQUESTS}",
                self.scheduled_requests()
            ));
        }
        if self.grpc_stream {
            let not = |what: &str| {
                bad(format!(
                    "--grpc-stream sends only places and cancels: {what}"
                ))
            };
            if self.read_ratio > 0.0 {
                return not("--read-ratio must be 0");
            }
            if self.fixed_path().is_some() {
                return not("no --floor or --path");
            }
            if self.samples.is_some() {
                return not("no --samples");
            }
            if self.max_in_flight.is_some() {
                return not("the bound is --in-flight per stream, not --max-in-flight");
            }
            if self.stream_in_flight == 0 {
                return bad("in-flight must be at least 1".into());
            }
        }
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return bad(format!("connections must be in 1..={MAX_CONNECTIONS}"));
        }
        let f = self.in_flight_bound();
        if f == 0 || f > MAX_IN_FLIGHT {
            return bad(format!(
                "max-in-flight (with --grpc-stream: connections x in-flight) must be in 1..={MAX_IN_FLIGHT}"
            ));
        }
        if self.accounts == 0 || self.markets == 0 {
            return bad("accounts and markets must be > 0".into());
        }
        for (name, v) in [
            ("read-ratio", self.read_ratio),
            ("cancel-ratio", self.cancel_ratio),
            ("market-ratio", self.market_ratio),
            ("ioc-ratio", self.ioc_ratio),
            ("post-only-ratio", self.post_only_ratio),
            ("replay-ratio", self.replay_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} must be in 0..=1, got {v}"));
            }
        }
        if self.ioc_ratio + self.post_only_ratio > 1.0 {
            return bad("ioc-ratio + post-only-ratio must be <= 1".into());
        }
        if self.retries > MAX_RETRIES {
            return bad(format!("retries must be <= {MAX_RETRIES}"));
        }
        if self.timeout_ms == 0 {
            return bad("timeout must be > 0 ms".into());
        }
        if self.threads == 0 || self.threads > 256 {
            return bad("threads must be in 1..=256".into());
        }
        if let Some(p) = &self.path {
            if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
                return bad(format!("path must start with '/', got {p:?}"));
            }
        }
        if let Some(p) = &self.id_prefix {
            if p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad(format!(
                    "id prefix must be non-empty [A-Za-z0-9_-], got {p:?}"
                ));
            }
        }
        if let Some(s) = &self.sign {
            if s != "ed25519" && s != "eip712" {
                return bad(format!("sign must be ed25519 or eip712, got {s:?}"));
            }
            if self.accounts > MAX_SIGNING_KEYS {
                return bad(format!(
                    "with --sign, accounts (one key each) must be <= {MAX_SIGNING_KEYS}"
                ));
            }
            if self.sign_expiry_s == 0 {
                return bad("sign-expiry must be > 0 seconds".into());
            }
        }
        if let Some(p) = &self.samples {
            // The report carries the configuration as JSON: the path must
            // be text.
            if p.as_os_str().is_empty() || p.to_str().is_none() {
                return bad(format!("samples path must be non-empty UTF-8, got {p:?}"));
            }
        }
        Ok(())
    }
}
