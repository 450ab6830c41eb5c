//! Per-request records of a run (`--samples FILE`): one 16-byte record per
//! measured request, kept in the recorder shards during the run and
//! written once at the end as CSV, for tools that need more than the
//! report's totals (latency by phase, traffic share by cluster over time).
//!
//! The file starts with two lines,
//!
//! ```text
//! # tandem loadgen samples v1 start_unix_ms=<u64>
//! t_ms,latency_us,op,outcome,status,cluster,attempts
//! ```
//!
//! then holds one line per measured request, in schedule order:
//!
//! - `t_ms`: the request's intended send time (the wall clock read once at
//!   the run's start plus the schedule offset), Unix milliseconds;
//! - `latency_us`: from the intended send time, through retries, to the
//!   final answer or the give-up, whole microseconds (rounded down);
//! - `op`: `place`, `cancel`, `read` (GET order or GET book) or `path`
//!   (floor / path mode);
//! - `outcome`: `ok` (what the report counts as ok: a 2xx answer that fits
//!   the request, or a 404 to a read of an order), `4xx`, `5xx`,
//!   `connect`, `timeout` or `mismatch` (an answer that does not fit);
//! - `status`: the final answer's status code, 0 when there was none;
//! - `cluster`: the final answer's `x-tandem-cluster` header (the edge
//!   names the cluster that answered), empty when absent; quoted as CSV
//!   requires when it holds a comma or a quote;
//! - `attempts`: 1 + the retries used.

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};

use http::HeaderValue;

use crate::config::{MAX_REQUESTS, MAX_RETRIES};
use crate::workload::Op;

/// The answer header that names the cluster that answered.
pub const CLUSTER_HEADER: &str = "x-tandem-cluster";
/// First line of the file, before the start time.
pub const MAGIC: &str = "# tandem loadgen samples v1 start_unix_ms=";
/// Second line of the file: the column names.
pub const COLUMNS: &str = "t_ms,latency_us,op,outcome,status,cluster,attempts";
/// Distinct cluster names one recorder keeps. The header comes from the
/// server, so its number of values is bounded here; names past the limit
/// are written as `other`.
const MAX_CLUSTERS: usize = 256;
/// Cluster id of an answer without the header, or of no answer.
const NO_CLUSTER: u16 = 0;
/// Cluster id of names past [`MAX_CLUSTERS`].
const OTHER_CLUSTER: u16 = u16::MAX;

// A schedule index fits a u32, and attempts fit a u8.
const _: () = assert!(MAX_REQUESTS <= u32::MAX as u64);
const _: () = assert!(MAX_RETRIES < u8::MAX as u32);

/// The kind of operation of a request, as written in the `op` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `POST /v1/orders`.
    Place,
    /// `DELETE /v1/orders/..`.
    Cancel,
    /// `GET` of an order or of a book.
    Read,
    /// `GET` of the fixed path (floor / path mode).
    Path,
}

impl OpKind {
    /// The kind of `op`.
    pub fn of(op: Op) -> Self {
        match op {
            Op::Place(_) => Self::Place,
            Op::Cancel(_) => Self::Cancel,
            Op::GetOrder(_) | Op::GetBook(_) => Self::Read,
            Op::Path => Self::Path,
        }
    }

    /// The name written in the file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Place => "place",
            Self::Cancel => "cancel",
            Self::Read => "read",
            Self::Path => "path",
        }
    }
}

/// How a request ended, as written in the `outcome` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer the report counts as ok.
    Ok,
    /// A 4xx answer.
    Http4xx,
    /// A 5xx answer (after all retries).
    Http5xx,
    /// No connection, or it failed before a whole answer.
    Connect,
    /// No whole answer within the attempt timeout.
    Timeout,
    /// An answer that does not fit the request.
    Mismatch,
}

impl Outcome {
    /// The name written in the file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Http4xx => "4xx",
            Self::Http5xx => "5xx",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Mismatch => "mismatch",
        }
    }
}

/// One measured request: 16 bytes. Its intended time follows from its
/// index in the schedule, and its cluster is an id in the table of the
/// [`Recorder`] that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Index of the request in the schedule.
    pub i: u32,
    /// Latency in whole microseconds (saturating at about 71 minutes).
    pub latency_us: u32,
    /// Final status code, 0 when there was no answer.
    pub status: u16,
    /// [`NO_CLUSTER`], [`OTHER_CLUSTER`], or 1 + an index in the names.
    pub cluster: u16,
    /// Kind of operation.
    pub op: OpKind,
    /// How it ended.
    pub outcome: Outcome,
    /// 1 + retries.
    pub attempts: u8,
}

impl Sample {
    /// A record of request `i`; the cluster is set by [`Recorder::push`].
    pub fn new(
        i: u64,
        latency_ns: u64,
        op: Op,
        outcome: Outcome,
        status: Option<u16>,
        retries: u32,
    ) -> Self {
        Self {
            i: u32::try_from(i).expect("the schedule is bounded by MAX_REQUESTS"),
            latency_us: u32::try_from(latency_ns / 1000).unwrap_or(u32::MAX),
            status: status.unwrap_or(0),
            cluster: NO_CLUSTER,
            op: OpKind::of(op),
            outcome,
            attempts: u8::try_from(retries.saturating_add(1)).unwrap_or(u8::MAX),
        }
    }
}

/// The records of one recorder shard, with the cluster names it has seen
/// (in order of first appearance; an answer names one of a few clusters,
/// so a linear search is the cheap lookup).
#[derive(Debug, Default)]
pub struct Recorder {
    rows: Vec<Sample>,
    names: Vec<Box<[u8]>>,
}

impl Recorder {
    /// An empty recorder with room for `n` records.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            rows: Vec::with_capacity(n),
            names: Vec::new(),
        }
    }

    /// Records `s` with the cluster of the final answer's header. Copies
    /// the name only the first time this recorder sees it.
    pub fn push(&mut self, mut s: Sample, cluster: Option<&HeaderValue>) {
        s.cluster = match cluster {
            None => NO_CLUSTER,
            Some(v) => {
                let b = v.as_bytes();
                match self.names.iter().position(|n| **n == *b) {
                    Some(k) => k as u16 + 1,
                    None if self.names.len() < MAX_CLUSTERS => {
                        self.names.push(b.into());
                        self.names.len() as u16
                    }
                    None => OTHER_CLUSTER,
                }
            }
        };
        self.rows.push(s);
    }
}

/// The open-loop schedule in wall-clock terms: request `i` is due
/// `offset_ns(i)` after the start.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The run's start, Unix nanoseconds (0 if the clock is before 1970).
    pub start_unix_ns: u64,
    /// Nanoseconds between two requests.
    pub period_ns: f64,
}

impl Schedule {
    /// Nanoseconds from the start to request `i`'s intended send time (the
    /// pacer uses the same figure).
    pub fn offset_ns(&self, i: u64) -> u64 {
        (i as f64 * self.period_ns) as u64
    }

    /// The start, Unix milliseconds.
    pub fn start_unix_ms(&self) -> u64 {
        self.start_unix_ns / 1_000_000
    }

    /// Request `i`'s intended send time, Unix milliseconds.
    pub fn t_ms(&self, i: u64) -> u64 {
        self.start_unix_ns.saturating_add(self.offset_ns(i)) / 1_000_000
    }
}

/// `s` as one CSV field (RFC 4180): as it is when it holds no comma,
/// quote, CR or LF; otherwise in double quotes with each quote doubled,
/// so a reader that follows the RFC gets `s` back and the line keeps its
/// columns.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

/// Writes the file (header lines, then every record in schedule order) to
/// `out` and returns the number of records written. Each recorder's
/// cluster ids are mapped to one table first; a name that is not UTF-8 is
/// written with its bad bytes replaced.
pub fn write(out: impl Write, sched: &Schedule, mut shards: Vec<Recorder>) -> io::Result<u64> {
    // names[k] is global cluster id k + 1, written as fields[k + 1].
    let mut names: Vec<Box<[u8]>> = Vec::new();
    let mut fields: Vec<String> = vec![String::new()];
    for r in &mut shards {
        let map: Vec<u16> = r
            .names
            .iter()
            .map(|n| match names.iter().position(|g| g == n) {
                Some(k) => k as u16 + 1,
                None => {
                    fields.push(csv_field(&String::from_utf8_lossy(n)).into_owned());
                    names.push(n.clone());
                    names.len() as u16
                }
            })
            .collect();
        for s in &mut r.rows {
            if s.cluster != NO_CLUSTER && s.cluster != OTHER_CLUSTER {
                s.cluster = map[usize::from(s.cluster) - 1];
            }
        }
        // Nearly sorted already: records arrive about in schedule order.
        r.rows.sort_unstable_by_key(|s| s.i);
    }
    let mut w = BufWriter::with_capacity(1 << 16, out);
    writeln!(w, "{MAGIC}{}", sched.start_unix_ms())?;
    writeln!(w, "{COLUMNS}")?;
    // Merge the sorted shards.
    let mut next = vec![0usize; shards.len()];
    let mut written = 0u64;
    loop {
        let mut best: Option<(usize, u32)> = None;
        for (k, r) in shards.iter().enumerate() {
            if let Some(s) = r.rows.get(next[k]) {
                if best.is_none_or(|(_, i)| s.i < i) {
                    best = Some((k, s.i));
                }
            }
        }
        let Some((k, _)) = best else { break };
        let s = shards[k].rows[next[k]];
        next[k] += 1;
        let cluster = match s.cluster {
            OTHER_CLUSTER => "other",
            c => &fields[usize::from(c)],
        };
        writeln!(
            w,
            "{},{},{},{},{},{},{}",
            sched.t_ms(u64::from(s.i)),
            s.latency_us,
            s.op.name(),
            s.outcome.name(),
            s.status,
            cluster,
            s.attempts
        )?;
        written += 1;
    }
    w.flush()?;
    Ok(written)
}

/// The fields of one line of a samples file, as RFC 4180 reads them
/// (quoted fields, doubled quotes inside them): the reader of what
/// [`csv_field`] writes. `None` when a quote is left open.
pub fn split_fields(line: &str) -> Option<Vec<String>> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    out.push(cur);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Vec<String> {
        split_fields(line).unwrap_or_else(|| panic!("unterminated quote in {line:?}"))
    }

    #[test]
    fn csv_fields_keep_their_columns() {
        assert_eq!(csv_field("blue"), "blue");
        assert_eq!(csv_field(""), "");
        assert!(matches!(csv_field("eu-west 1"), Cow::Borrowed(_)));
        for s in [
            "a,b",
            "say \"hi\"",
            "two\nlines",
            "cr\rlf",
            "\"",
            ",",
            "x,\"y\"\r\n",
        ] {
            let f = csv_field(s);
            assert!(f.starts_with('"') && f.ends_with('"'), "{f}");
            let line = format!("1,{f},2");
            assert_eq!(split(&line), ["1", s, "2"], "{line:?}");
        }
    }

    #[test]
    fn a_record_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Sample>(), 16);
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn writes_in_schedule_order_with_one_cluster_table() {
        // Two shards that saw the same names in another order, one name
        // with a comma and one with a quote.
        let sample = |i: u64, outcome, retries| {
            Sample::new(i, 1_500_999, Op::Place(i), outcome, Some(200), retries)
        };
        let mut a = Recorder::with_capacity(4);
        a.push(sample(2, Outcome::Ok, 0), Some(&hv("east,1")));
        a.push(sample(0, Outcome::Ok, 0), Some(&hv("west")));
        a.push(sample(4, Outcome::Ok, 0), None);
        let mut b = Recorder::with_capacity(4);
        b.push(sample(3, Outcome::Http5xx, 2), Some(&hv("west")));
        b.push(sample(1, Outcome::Ok, 0), Some(&hv("say \"x\"")));
        b.push(sample(5, Outcome::Ok, 0), Some(&hv("east,1")));
        let sched = Schedule {
            start_unix_ns: 1_700_000_000_123_456_789,
            period_ns: 2.5e6,
        };
        let mut out = Vec::new();
        assert_eq!(write(&mut out, &sched, vec![a, b]).unwrap(), 6);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("{MAGIC}1700000000123"));
        assert_eq!(lines[1], COLUMNS);
        let rows: Vec<Vec<String>> = lines[2..].iter().map(|l| split(l)).collect();
        assert!(rows.iter().all(|r| r.len() == 7), "{text}");
        let t: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        // 123.456789 ms + 2.5 ms * i, rounded down.
        let start = 1_700_000_000_123_u64;
        assert_eq!(t, [0, 2, 5, 7, 10, 12].map(|d| start + d));
        let clusters: Vec<&str> = rows.iter().map(|r| r[5].as_str()).collect();
        assert_eq!(
            clusters,
            ["west", "say \"x\"", "east,1", "west", "", "east,1"]
        );
        assert!(rows.iter().all(|r| r[1] == "1500" && r[2] == "place"));
        assert_eq!((rows[3][3].as_str(), rows[3][6].as_str()), ("5xx", "3"));
        assert_eq!((rows[0][3].as_str(), rows[0][6].as_str()), ("ok", "1"));
    }

    #[test]
    fn too_many_clusters_are_other() {
        let mut r = Recorder::with_capacity(0);
        for k in 0..MAX_CLUSTERS + 2 {
            r.push(
                Sample::new(k as u64, 0, Op::Path, Outcome::Ok, None, 0),
                Some(&hv(&format!("c{k}"))),
            );
        }
        let sched = Schedule {
            start_unix_ns: 0,
            period_ns: 1e6,
        };
        let mut out = Vec::new();
        assert_eq!(
            write(&mut out, &sched, vec![r]).unwrap(),
            MAX_CLUSTERS as u64 + 2
        );
        let text = String::from_utf8(out).unwrap();
        let last: Vec<String> = text
            .lines()
            .rev()
            .take(3)
            .map(|l| split(l)[5].clone())
            .collect();
        assert_eq!(
            last,
            [
                "other".to_owned(),
                "other".to_owned(),
                format!("c{}", MAX_CLUSTERS - 1)
            ]
        );
        assert!(text
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("0,0,path,ok,0,c0,1"));
    }
}
