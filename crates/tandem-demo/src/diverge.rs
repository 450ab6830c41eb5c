//! The first command two engine configurations compute differently.
//!
//! The rollout controller sees a canary's output hash differ from stable's
//! only at a checkpoint, every N seqs. To say which command diverged,
//! [`first_difference`] replays the log from its start into two engines,
//! one per configuration, and compares the events each emits for every
//! command. What it compares is what the output hash chain folds for that
//! command (`tandem_core`'s chain module): the canonical encoding of its
//! events (the seq, the other part of the chain step, is the same on both
//! sides). So the seq found is exactly the first at which the two chains
//! part, unless the chain hash collides.
//!
//! Records are decoded as the replica decodes them
//! (`tandem_codec::decode_command`). A record that is not a command
//! (`Command::Invalid`) is an error naming its seq rather than a command to
//! apply: a node never writes one to the log (`tandem_codec::write_command`
//! refuses it), so it means a damaged record or a foreign writer, and both
//! engines would answer it with the same rejection anyway.

use tandem_core::{Command, Config, Engine, Event};
use tandem_log::{Log, LogError};

/// Records read from the log per step: memory stays bounded by one batch
/// plus the two engines, whatever the log's length.
const READ_BATCH: usize = 4096;

/// The first command whose events differ between the two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstDifference {
    /// Its seq in the log.
    pub seq: u64,
    /// The command, as a canonical JSON command object
    /// (`tandem_codec::write_command`).
    pub command: String,
    /// The events the stable configuration emitted for it, as a JSON array
    /// of contract events with their seq (as the node's API answers them).
    pub stable_events: String,
    /// The events the canary configuration emitted for it, likewise.
    pub canary_events: String,
}

/// Why the log could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum DivergeError {
    #[error("order log: {0}")]
    Log(#[from] LogError),
    #[error(
        "the log starts at seq {first_seq}: records before it were dropped, \
         so it cannot be replayed from the start"
    )]
    Truncated { first_seq: u64 },
    #[error("the record at seq {seq} does not decode as a command (bad field `{field}`)")]
    Undecodable { seq: u64, field: &'static str },
    #[error("the log returned seq {got} after seq {after}: seqs must strictly increase")]
    OutOfOrder { after: u64, got: u64 },
}

/// One side of the comparison: an engine and the events of its last
/// command, with their canonical encoding (what the chain folds).
struct Replay {
    engine: Engine,
    events: Vec<Event>,
    encoded: Vec<u8>,
}

impl Replay {
    fn new(cfg: Config) -> Replay {
        Replay {
            engine: Engine::new(cfg),
            events: Vec::with_capacity(64),
            encoded: Vec::with_capacity(1024),
        }
    }

    /// Applies `cmd` at `seq` and encodes its events as the chain does.
    fn apply(&mut self, seq: u64, cmd: &Command) {
        self.events.clear();
        self.encoded.clear();
        self.engine.apply(seq, cmd, &mut self.events);
        for ev in &self.events {
            self.engine.encode_event(ev, &mut self.encoded);
        }
    }

    /// The events of the last command as a JSON array.
    fn events_json(&self, seq: u64) -> String {
        let mut out = vec![b'['];
        for (i, ev) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            tandem_codec::write_event(&self.engine, Some(seq), ev, &mut out);
        }
        out.push(b']');
        json_text(out)
    }
}

/// The codec writes JSON as bytes; its strings are copied from UTF-8 input,
/// so this is lossless for anything a node logged.
fn json_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Replays `log` from its start into one engine built from `stable` and one
/// built from `canary`, and returns the first seq whose events differ, with
/// the command and both sides' events as JSON. `None` when they agree on
/// every seq up to `up_to_seq` (inclusive), or up to the log's last seq as
/// it was when the call began.
///
/// Seqs are taken as the log returns them: they strictly increase but may
/// have gaps (a Kafka log's do). Reads are in batches of a few thousand
/// records.
pub fn first_difference(
    log: &dyn Log,
    stable: Config,
    canary: Config,
    up_to_seq: Option<u64>,
) -> Result<Option<FirstDifference>, DivergeError> {
    if !log.covers(0) {
        return Err(DivergeError::Truncated {
            first_seq: log.first_seq(),
        });
    }
    let end = match up_to_seq {
        Some(up_to) => up_to.min(log.last_seq()),
        None => log.last_seq(),
    };
    let mut stable = Replay::new(stable);
    let mut canary = Replay::new(canary);
    let mut after = 0;
    while after < end {
        let records = log.read_from(after + 1, READ_BATCH)?;
        if records.is_empty() {
            break;
        }
        for record in &records {
            let seq = record.seq;
            if seq <= after {
                return Err(DivergeError::OutOfOrder { after, got: seq });
            }
            if seq > end {
                return Ok(None);
            }
            let cmd = tandem_codec::decode_record(&record.payload);
            if let Command::Invalid(invalid) = &cmd {
                return Err(DivergeError::Undecodable {
                    seq,
                    field: invalid.field,
                });
            }
            stable.apply(seq, &cmd);
            canary.apply(seq, &cmd);
            if stable.encoded != canary.encoded {
                let mut command = Vec::with_capacity(record.payload.len());
                tandem_codec::write_command(&cmd, &mut command);
                return Ok(Some(FirstDifference {
                    seq,
                    command: json_text(command),
                    stable_events: stable.events_json(seq),
                    canary_events: canary.events_json(seq),
                }));
            }
            after = seq;
        }
    }
    Ok(None)
}
