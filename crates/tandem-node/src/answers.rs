//! The node's answer rules, with no threads, no clock and no I/O: what a
//! place, cancel or amend is answered, given what the replica has applied.
//! The partition holds one [`Answers`] behind its lock and feeds it every
//! applied command; the API asks it before appending ([`Answers::before`])
//! and after ([`Answers::after`]). The seeded simulation (`tandem-sim`)
//! drives the very same code with its own clock, log and network.
//!
//! - **Places** are idempotent by id: the window of accepted places keeps
//!   each one's canonical bytes and answer. A place whose id is taken is
//!   answered with the original when its bytes are identical (a retry),
//!   and is a conflict otherwise.
//! - **Cancels and amends**: for each order, the latest cancel or amend
//!   that took effect (not rejected) is kept with its canonical bytes
//!   (which hold the account) and its answer. A request with the same
//!   bytes while it is still the latest change to that order is a repeat:
//!   answered with the original without an append; when both copies were
//!   appended before either was answered, the second copy (which the
//!   engine rejects) is answered with the original. Another account's or
//!   another body's cancel or amend is not a repeat.
//!
//! Both windows are bounded (oldest forgotten first) and filled from the
//! log, so every replica of one log answers alike; they are saved beside
//! each snapshot (`window`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tandem_core::{Command, Engine, Event, RejectReason};

/// The answer to one applied command.
#[derive(Debug)]
pub struct Outcome {
    pub seq: u64,
    /// The events as a JSON array (`[{"seq":..,"event":..},..]`).
    pub events: Bytes,
    /// A place refused because its id was taken: the caller decides between
    /// an idempotent replay and a conflict.
    pub duplicate_id: bool,
}

/// How a place with a taken id is answered.
#[derive(Debug)]
pub enum Replay {
    /// Same bytes as the accepted original: its answer.
    Same(Arc<Outcome>),
    /// The id was accepted with another body (or account).
    Conflict,
    /// Not in the window (never accepted, or forgotten).
    Unknown,
}

/// What to do with a request before appending it.
#[derive(Debug)]
pub enum Before {
    /// A repeat of an applied request: its original answer, no append.
    Answer(Arc<Outcome>),
    /// The id is taken by another request: 409.
    Conflict,
    /// New: append it.
    Append,
}

/// What a request is answered once its own copy was applied.
#[derive(Debug)]
pub enum After {
    Answer(Arc<Outcome>),
    /// Its id was taken by another request meanwhile: 409.
    Conflict,
}

#[derive(Debug)]
struct Kept {
    /// Canonical bytes of the command.
    payload: Bytes,
    outcome: Arc<Outcome>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Answers {
    place_window: usize,
    change_window: usize,
    accepted: HashMap<Bytes, Kept>,
    accepted_order: VecDeque<Bytes>,
    /// The latest change per order key, and the keys in the order they
    /// were changed, for the bound. A key changed again is pushed again;
    /// its older place in the queue is skipped when it comes out (the seq
    /// says which place is current).
    changes: HashMap<Bytes, Kept>,
    changes_order: VecDeque<(u64, Bytes)>,
}

/// Key of an order id in a market in the windows.
pub fn order_key(market: &[u8], id: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(market.len() + id.len() + 1);
    k.extend_from_slice(market);
    k.push(0);
    k.extend_from_slice(id);
    k.into()
}

/// The canonical bytes of a command (what the log holds).
pub fn canonical(cmd: &Command) -> Bytes {
    let mut payload = Vec::with_capacity(160);
    tandem_codec::write_command(cmd, &mut payload);
    Bytes::from(payload)
}

/// The events of one applied command as the API answers them: a JSON
/// array of contract events (`[{"seq":..,"event":..},..]`).
pub fn events_json(seq: u64, eng: &Engine, evs: &[Event]) -> Bytes {
    let mut json = Vec::with_capacity(64 * evs.len() + 2);
    json.push(b'[');
    for (i, ev) in evs.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        tandem_codec::write_event(eng, Some(seq), ev, &mut json);
    }
    json.push(b']');
    json.into()
}

/// The market and id a command names (none for an invalid one).
fn key_of(cmd: &Command) -> Option<Bytes> {
    let (m, id) = match cmd {
        Command::Place(p) => (&p.market, &p.id),
        Command::Cancel(c) => (&c.market, &c.id),
        Command::Amend(a) => (&a.market, &a.id),
        Command::Invalid(_) => return None,
    };
    Some(order_key(m.as_bytes(), id.as_bytes()))
}

impl Answers {
    /// Windows of at most `place_window` accepted places and
    /// `change_window` changed orders (0 turns one off).
    pub fn new(place_window: usize, change_window: usize) -> Answers {
        Answers {
            place_window,
            change_window,
            ..Answers::default()
        }
    }

    /// How a place with these bytes and this order key is answered.
    pub fn replay(&self, key: &[u8], payload: &[u8]) -> Replay {
        match self.accepted.get(key) {
            None => Replay::Unknown,
            Some(a) if a.payload[..] == *payload => Replay::Same(Arc::clone(&a.outcome)),
            Some(_) => Replay::Conflict,
        }
    }

    /// The original answer of a cancel or amend with these canonical bytes,
    /// if it is the latest change that took effect on the order `key`.
    pub fn replay_change(&self, key: &[u8], payload: &[u8]) -> Option<Arc<Outcome>> {
        self.changes
            .get(key)
            .filter(|c| c.payload[..] == *payload)
            .map(|c| Arc::clone(&c.outcome))
    }

    /// Before appending `cmd` (canonical bytes `payload`): a repeat of an
    /// applied request is answered from here.
    pub fn before(&self, cmd: &Command, payload: &[u8]) -> Before {
        let Some(key) = key_of(cmd) else {
            return Before::Append;
        };
        match cmd {
            Command::Place(_) => match self.replay(&key, payload) {
                Replay::Same(o) => Before::Answer(o),
                Replay::Conflict => Before::Conflict,
                Replay::Unknown => Before::Append,
            },
            _ => match self.replay_change(&key, payload) {
                Some(o) => Before::Answer(o),
                None => Before::Append,
            },
        }
    }

    /// Once the request's own copy was applied with `own` (what
    /// [`Answers::applied`] returned for its seq): a place refused for its
    /// id is a retry (the original's answer) or a conflict.
    pub fn after(&self, cmd: &Command, payload: &[u8], own: Arc<Outcome>) -> After {
        if !own.duplicate_id {
            return After::Answer(own);
        }
        match key_of(cmd).map(|k| self.replay(&k, payload)) {
            Some(Replay::Same(orig)) => After::Answer(orig),
            _ => After::Conflict,
        }
    }

    /// Feeds one applied command and its events; returns the answer for
    /// whoever appended this copy: its own events, or, for a repeated
    /// cancel or amend appended after the original took effect, the
    /// original's.
    pub fn applied(
        &mut self,
        seq: u64,
        cmd: &Command,
        eng: &Engine,
        evs: &[Event],
    ) -> Arc<Outcome> {
        let duplicate_id = matches!(
            evs.first(),
            Some(Event::Rejected {
                reason: RejectReason::DuplicateId,
                ..
            })
        );
        let outcome = Arc::new(Outcome {
            seq,
            events: events_json(seq, eng, evs),
            duplicate_id,
        });
        let rejected = matches!(evs.first(), Some(Event::Rejected { .. }));
        match cmd {
            Command::Place(_) if self.place_window > 0 => {
                if let (Some(Event::Accepted { .. }), Some(key)) = (evs.first(), key_of(cmd)) {
                    self.remember(key, canonical(cmd), Arc::clone(&outcome));
                }
            }
            Command::Cancel(_) | Command::Amend(_) if self.change_window > 0 => {
                let key = key_of(cmd).expect("a cancel or amend names an order");
                let payload = canonical(cmd);
                if !rejected {
                    self.remember_change(key, payload, Arc::clone(&outcome));
                } else if let Some(orig) = self.changes.get(&key).filter(|c| c.payload == payload) {
                    return Arc::clone(&orig.outcome);
                }
            }
            _ => {}
        }
        outcome
    }

    /// Remembers an accepted place (bounded FIFO).
    fn remember(&mut self, key: Bytes, payload: Bytes, outcome: Arc<Outcome>) {
        if self.accepted_order.len() >= self.place_window {
            if let Some(old) = self.accepted_order.pop_front() {
                self.accepted.remove(&old);
            }
        }
        self.accepted_order.push_back(key.clone());
        self.accepted.insert(key, Kept { payload, outcome });
    }

    /// Remembers the latest change that took effect on an order (oldest
    /// change forgotten first).
    fn remember_change(&mut self, key: Bytes, payload: Bytes, outcome: Arc<Outcome>) {
        while self.changes_order.len() >= self.change_window {
            let Some((seq, old)) = self.changes_order.pop_front() else {
                break;
            };
            if self.changes.get(&old).is_some_and(|c| c.outcome.seq == seq) {
                self.changes.remove(&old);
            }
        }
        self.changes_order.push_back((outcome.seq, key.clone()));
        self.changes.insert(key, Kept { payload, outcome });
    }

    /// What to save beside the snapshot at `seq`: every remembered answer
    /// at or below it, oldest first (so a restore forgets in the same
    /// order).
    pub fn window(&self, seq: u64) -> Vec<crate::window::Entry> {
        let places = self
            .accepted_order
            .iter()
            .filter_map(|k| self.accepted.get(k).map(|a| (k, a)));
        let changes = self
            .changes_order
            .iter()
            .filter_map(|(s, k)| self.changes.get(k).map(|c| (s, k, c)))
            .filter(|(s, _, c)| c.outcome.seq == **s)
            .map(|(_, k, c)| (k, c));
        let mut entries: Vec<crate::window::Entry> = places
            .chain(changes)
            .filter(|(_, a)| a.outcome.seq <= seq)
            .map(|(k, a)| crate::window::Entry {
                seq: a.outcome.seq,
                key: k.clone(),
                payload: a.payload.clone(),
                events: a.outcome.events.clone(),
            })
            .collect();
        entries.sort_by_key(|e| e.seq);
        entries
    }

    /// Takes back a saved window (oldest first): a place is an accepted
    /// order; a cancel or amend the latest change to one.
    pub fn restore(&mut self, entries: Vec<crate::window::Entry>) {
        for e in entries {
            let outcome = Arc::new(Outcome {
                seq: e.seq,
                events: e.events,
                duplicate_id: false,
            });
            match tandem_codec::decode_command(&e.payload) {
                Command::Place(_) if self.place_window > 0 => {
                    self.remember(e.key, e.payload, outcome)
                }
                Command::Cancel(_) | Command::Amend(_) if self.change_window > 0 => {
                    self.remember_change(e.key, e.payload, outcome)
                }
                _ => {}
            }
        }
    }
}
