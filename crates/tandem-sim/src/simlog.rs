//! The simulated order log: one partition in memory, implementing
//! [`tandem_log::Log`] so that the real replica reads it. Appends commit
//! at once; the simulation decides around them what the appender is told
//! (a failure before the write, a lost acknowledgement after it, a slow
//! one), which is where a real log's faults show to a node.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tandem_log::{Log, LogError, Record};

/// See the module doc.
#[derive(Debug)]
pub struct SimLog {
    identity: String,
    records: Mutex<Vec<Vec<u8>>>,
}

impl SimLog {
    pub fn new(identity: &str) -> SimLog {
        SimLog {
            identity: identity.to_owned(),
            records: Mutex::new(Vec::new()),
        }
    }

    fn records(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The payload at `seq`, if written.
    pub fn get(&self, seq: u64) -> Option<Vec<u8>> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.records().get(i).cloned()
    }
}

impl Log for SimLog {
    fn append(&self, records: &[&[u8]]) -> Result<u64, LogError> {
        let mut all = self.records();
        let first = all.len() as u64 + 1;
        if records.is_empty() {
            return Ok(first - 1);
        }
        all.extend(records.iter().map(|r| r.to_vec()));
        Ok(first)
    }

    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let all = self.records();
        let start = from.max(1) as usize - 1;
        Ok(all
            .iter()
            .enumerate()
            .skip(start)
            .take(max)
            .map(|(i, p)| Record {
                seq: i as u64 + 1,
                payload: p.clone(),
            })
            .collect())
    }

    fn wait_for(&self, _after: u64, _timeout: Duration) -> Result<u64, LogError> {
        Ok(self.last_seq())
    }

    fn first_seq(&self) -> u64 {
        1
    }

    fn last_seq(&self) -> u64 {
        self.records().len() as u64
    }

    fn truncate_before(&self, _seq: u64) -> Result<(), LogError> {
        Ok(())
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }
}
