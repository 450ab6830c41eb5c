//! The one error type of the log. It is `Clone` because a failed group
//! commit reports the same error to every caller whose batch was in it
//! (I/O errors are shared behind an `Arc`).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong with a [`crate::Log`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// An operating-system call failed (a full disk is
    /// `io::ErrorKind::StorageFull`). For `append`, the batch was not
    /// written: it was rolled back and nothing acknowledged was touched.
    #[error("log i/o error: {op} {path}: {source}")]
    Io {
        /// What the log was doing (`"write"`, `"fdatasync"`, `"open"`, ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },

    /// A stored record is damaged somewhere other than the torn tail; the
    /// log refuses to open (or to read) rather than guess.
    #[error("log segment {segment} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the damaged record in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The requested seq was dropped by `truncate_before`.
    #[error("seq {requested} was truncated; first readable seq is {first}")]
    Truncated {
        /// The seq asked for.
        requested: u64,
        /// The lowest seq still readable.
        first: u64,
    },

    /// An earlier fsync failed: whether the kernel kept the data cannot be
    /// known, so the log refuses all further appends. Reopen it to recover.
    #[error("log refuses appends after a failed fsync: {reason}")]
    Poisoned {
        /// The failure that poisoned it.
        reason: String,
    },

    /// One append's records take more bytes than the configured maximum.
    #[error("batch of {bytes} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: usize,
        /// `FileLogConfig::max_batch_bytes`.
        max: usize,
    },

    /// The configuration is unusable.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),

    /// Another process (or another open `FileLog` in this one) holds the
    /// log directory: two writers would both take the same seqs and tear
    /// each other's records, so the second is refused.
    #[error(
        "log directory {dir} is locked: another process holds it \
         (is another node running on this data directory?)"
    )]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },

    /// The log is shutting down or its committer is gone.
    #[error("log is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
