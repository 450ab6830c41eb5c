//! Tandem's order log: the only sequencer. A [`Log`] is one partition of
//! opaque byte records numbered by `seq` (strictly increasing from 1; the
//! file log's seqs are contiguous, a Kafka partition's are not); a record's
//! seq is its time for every replica. This crate knows nothing
//! about orders. [`FileLog`] is the default backend (a directory of segment
//! files with group commit); other backends (Kafka) implement the same trait
//! and run the same [`conformance`] suite (feature `conformance`).

#![forbid(unsafe_code)]

mod error;
mod file_log;
mod frame;
mod segment;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::time::Duration;

pub use error::LogError;
pub use file_log::{FaultInjector, FileLog, FileLogConfig, FsyncPolicy, OpenReport};

/// One record read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log (1-based).
    pub seq: u64,
    /// The bytes given to [`Log::append`], unchanged.
    pub payload: Vec<u8>,
}

/// One partition of the sequenced log: the interface replicas and nodes use,
/// whatever the backend. Seqs start at 1 and strictly increase in log
/// order; a backend may leave gaps between batches (Kafka encodes its
/// offset in the seq), never inside one.
pub trait Log: Send + Sync {
    /// Appends `records` as one atomic batch; blocks until durable; returns
    /// the seq of the first (the rest of the batch follow consecutively). An empty batch
    /// returns `Ok(last_seq)` without writing. Errors reach the caller;
    /// nothing is ever silently dropped.
    fn append(&self, records: &[&[u8]]) -> Result<u64, LogError>;

    /// Up to `max` records with seq >= `from` (fewer at the tail; empty if
    /// `from > last_seq()`). A short page is not proof of the tail: a
    /// remote log may stop at the newest record it knows of without asking
    /// (Kafka: its own last append), so readers go on until a page is
    /// empty, which is. `from` below [`Log::first_seq`] is
    /// [`LogError::Truncated`].
    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError>;

    /// What a follower polls with: like [`Log::read_from`], except that a
    /// remote log answers from what its client already holds or has
    /// fetched, without a request to its server, so an empty page here is
    /// **not** proof of the tail (it may only mean "nothing fetched yet").
    /// A follower that polls every few milliseconds would otherwise ask
    /// the server for the log's end on every idle turn (Kafka: a
    /// ListOffsets request each time, nine nodes' worth of which cost a
    /// tansu broker most of a core). Readers that must know they reached
    /// the end (catching up at start, `tandem verify-log`) use
    /// `read_from`. The default is `read_from`.
    fn read_known(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        self.read_from(from, max)
    }

    /// Follows the tail: blocks until `last_seq() > after` or `timeout`
    /// passes; returns `last_seq()`.
    fn wait_for(&self, after: u64, timeout: Duration) -> Result<u64, LogError>;

    /// Lowest seq still readable (1 when nothing was dropped).
    fn first_seq(&self) -> u64;

    /// Highest acknowledged seq; 0 when the log is empty.
    fn last_seq(&self) -> u64;

    /// Drops whole segments that hold only seqs < `seq` (a snapshot made them
    /// unnecessary). May keep more than asked; never drops seq >= `seq`.
    fn truncate_before(&self, seq: u64) -> Result<(), LogError>;

    /// The identity of this log: the same for every process that opens the
    /// same log, different for any other log. Two nodes serve one exchange
    /// only when their logs have the same identity; a consistency token
    /// carries it so that a node never takes another log's position for
    /// its own. `file:<32 hex digits>` for a [`FileLog`] (made when the log
    /// is created and kept in its directory), `kafka:<cluster id>/<topic>`
    /// for Kafka.
    fn identity(&self) -> String;

    /// True when every record with a seq above `after` is still readable,
    /// i.e. a reader positioned at `after` can go on. The default suits a
    /// log with contiguous seqs.
    fn covers(&self, after: u64) -> bool {
        self.first_seq() <= after + 1
    }
}
