//! The result of a run: latency percentiles (microseconds), rates, counts
//! by status and error kind, order outcomes and the verifier's findings;
//! as JSON (`to_json`) and as text (`Display`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::config::LoadgenConfig;
use crate::hist::Histogram;

/// Latency of the measured requests, from each one's intended send time to
/// its final answer (retries included), in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencyUs {
    /// Requests counted.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
    /// Values past the histogram's top (about 18 minutes), counted as it.
    pub clamped: u64,
}

impl LatencyUs {
    /// Percentiles of a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram) -> Self {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Self {
            count: h.count(),
            min: us(h.min()),
            mean: (h.mean() / 100.0).round() / 10.0,
            p50: us(h.quantile(0.50)),
            p95: us(h.quantile(0.95)),
            p99: us(h.quantile(0.99)),
            p99_9: us(h.quantile(0.999)),
            max: us(h.max()),
            clamped: h.clamped(),
        }
    }
}

/// Final outcomes that are not a good answer, by kind (measured requests).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Errors {
    /// Could not connect, or the connection failed before a whole answer
    /// (after all retries).
    pub connect: u64,
    /// No whole answer within the attempt timeout.
    pub timeout: u64,
    /// 4xx answers by code (a 404 to a read of an order is not an error).
    pub http_4xx: BTreeMap<String, u64>,
    /// 5xx answers by code (after all retries).
    pub http_5xx: BTreeMap<String, u64>,
    /// 2xx answers whose body does not fit the request.
    pub body_mismatch: u64,
}

impl Errors {
    /// Sum of all kinds.
    pub fn total(&self) -> u64 {
        self.connect
            + self.timeout
            + self.body_mismatch
            + self.http_4xx.values().sum::<u64>()
            + self.http_5xx.values().sum::<u64>()
    }
}

/// What happened to the orders (the whole run, warmup included).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Orders {
    /// Places sent.
    pub placed: u64,
    /// Places answered 200 with a readable answer.
    pub acknowledged: u64,
    /// Acknowledged with an `accepted` event.
    pub accepted: u64,
    /// Acknowledged with a `rejected` event, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Cancels answered with a `cancelled` event.
    pub cancels_confirmed: u64,
    /// Cancels answered with a `rejected` event (the order was already
    /// done, or the cancel overtook its place).
    pub cancels_rejected: u64,
    /// Places whose answer rejected our own id as `duplicate_id`: the
    /// generator never reuses an id, so the node sequenced a retry anew.
    pub duplicated_in_run: u64,
}

/// The verifier's findings.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Verify {
    /// Accepted orders read back.
    pub checked: u64,
    /// Found, with fields and status that fit their answers.
    pub visible: u64,
    /// Accepted, then not found (404).
    pub lost: u64,
    /// Sequenced twice: a retry answered `duplicate_id`, or a replay
    /// answered with another seq or other events (or 409).
    pub duplicated: u64,
    /// Found, but with fields or a status that break the answer's promise.
    pub inconsistent: u64,
    /// Reads or replays that got no usable answer after all retries.
    pub unverified: u64,
    /// Places replayed after the run to check idempotence.
    pub replayed: u64,
    /// Up to 20 examples of each finding (`lost <id>`, ...).
    pub examples: Vec<String>,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The configuration run.
    pub config: LoadgenConfig,
    /// `orders`, or `path <path>` in floor / path mode.
    pub mode: String,
    /// Requests scheduled, warmup included.
    pub scheduled: u64,
    /// Requests scheduled in the warmup (not counted below).
    pub warmup_requests: u64,
    /// Requests scheduled after the warmup.
    pub measured: u64,
    /// Measured requests that got a good answer.
    pub ok: u64,
    /// Seconds from the first measured request's send to the last measured
    /// answer (past the load's capacity the warmup's backlog delays that
    /// send beyond the end of the warmup).
    pub elapsed_s: f64,
    /// Scheduled rate.
    pub target_rate: f64,
    /// The in-flight bound in effect.
    pub max_in_flight: usize,
    /// Measured requests completed (any outcome) per second of `elapsed_s`.
    pub achieved_rate: f64,
    /// Latency from intended send time.
    pub latency_us: LatencyUs,
    /// Largest delay between a request's intended time and its dispatch
    /// by the pacer (backpressure or a busy machine), microseconds.
    pub dispatch_lag_us_max: f64,
    /// Measured requests that could not start at their intended time
    /// because the in-flight bound was reached. They ran as soon as a slot
    /// freed, and their latency still counts from the intended time; this
    /// is a count of delays, not of failures.
    pub backpressure: u64,
    /// Retries made (measured requests).
    pub retries: u64,
    /// Measured requests that needed at least one retry.
    pub retried_requests: u64,
    /// Final answers by status code (measured requests).
    pub status: BTreeMap<String, u64>,
    /// Failures by kind (measured requests).
    pub errors: Errors,
    /// Order outcomes.
    pub orders: Orders,
    /// Verifier findings, if it ran.
    pub verify: Option<Verify>,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let proto = if c.grpc_stream {
            "gRPC Submit streams, closed loop"
        } else if c.http2 {
            "http/2"
        } else {
            "http/1.1"
        };
        writeln!(
            f,
            "loadgen: {} against {} ({}, {} connections, max in flight {}), seed {}",
            self.mode,
            c.targets.join(","),
            proto,
            c.connections,
            self.max_in_flight,
            c.seed
        )?;
        writeln!(
            f,
            "requests: {} scheduled ({} warmup), {} measured, {} ok; target {:.0}/s, achieved {:.1}/s over {:.2} s",
            self.scheduled,
            self.warmup_requests,
            self.measured,
            self.ok,
            self.target_rate,
            self.achieved_rate,
            self.elapsed_s
        )?;
        let l = &self.latency_us;
        writeln!(
            f,
            "latency us (from {}): p50 {} p95 {} p99 {} p99.9 {} max {} (mean {}, n {})",
            if c.grpc_stream {
                "send"
            } else {
                "intended send"
            },
            l.p50,
            l.p95,
            l.p99,
            l.p99_9,
            l.max,
            l.mean,
            l.count
        )?;
        writeln!(
            f,
            "backpressure: {}, retries: {} (requests retried: {}), dispatch lag max: {} us",
            self.backpressure, self.retries, self.retried_requests, self.dispatch_lag_us_max
        )?;
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "status: {}", join(&self.status))?;
        let e = &self.errors;
        writeln!(
            f,
            "errors: connect: {}, timeout: {}, http_4xx: {{{}}}, http_5xx: {{{}}}, body mismatch: {}",
            e.connect,
            e.timeout,
            join(&e.http_4xx),
            join(&e.http_5xx),
            e.body_mismatch
        )?;
        if self.mode.ends_with("orders") {
            let o = &self.orders;
            writeln!(
                f,
                "orders: {} placed, {} acknowledged, {} accepted, rejected {{{}}}, cancels {} confirmed / {} rejected",
                o.placed,
                o.acknowledged,
                o.accepted,
                join(&o.rejected),
                o.cancels_confirmed,
                o.cancels_rejected
            )?;
        }
        match &self.verify {
            Some(v) => {
                writeln!(
                    f,
                    "verify: {} checked, {} visible, {} inconsistent, {} unverified, {} replayed",
                    v.checked, v.visible, v.inconsistent, v.unverified, v.replayed
                )?;
                for ex in &v.examples {
                    writeln!(f, "  {ex}")?;
                }
                writeln!(f, "lost: {}, duplicated: {}", v.lost, v.duplicated)
            }
            None => writeln!(f, "verify: off"),
        }
    }
}
