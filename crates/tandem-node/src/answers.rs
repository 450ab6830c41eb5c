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
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashTable;
use tandem_core::{prefetch, Command, Engine, Event, RejectReason};

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

/// One remembered answer. The window's queue holds the only copy; its
/// index holds the entry's position in the queue.
#[derive(Debug, Clone)]
struct Noted {
    /// The key's hash under the window's hasher, kept so that forgetting
    /// the entry does not read its key again.
    hash: u64,
    key: Bytes,
    /// Canonical bytes of the command.
    payload: Bytes,
    outcome: Arc<Outcome>,
}

/// Entries a full block of a [`Fifo`] holds.
const BLOCK: usize = 1024;

/// Retired blocks a [`Fifo`] keeps for its caller at most.
const MAX_RETIRED: usize = 8;

/// How many entries ahead of the oldest [`Fifo::pop`] prefetches.
const PREFETCH_AHEAD: usize = 4;

/// A window's queue, oldest first, that can be listed without copying
/// every entry: full blocks of [`BLOCK`] entries are shared (`Arc`), so
/// [`Fifo::view`] clones one pointer a block and copies only the block
/// still being filled. The window beside a snapshot is taken this way
/// under the results lock, which every request also takes: copying the
/// 400 k entries of the default windows there stopped every request for
/// 0.35–0.45 s (measured in `tandem-bench node --stream`).
///
/// Every entry ever pushed has a serial (0, 1, 2, …), by which
/// [`Fifo::get`] finds it while it is queued.
#[derive(Debug, Default)]
struct Fifo {
    blocks: VecDeque<Arc<[Noted]>>,
    /// Entries of `blocks[0]` already taken out.
    head: usize,
    /// The block being filled (taken from its front while `blocks` is
    /// empty).
    tail: VecDeque<Noted>,
    /// Serial of the oldest entry queued (of the next one when empty).
    first: u64,
    /// Blocks whose entries have all been taken out, not yet dropped:
    /// dropping one frees 1024 entries' buffers, memory long gone cold
    /// (about 250 µs), which the caller does after its lock
    /// ([`Answers::take_retired`]).
    retired: Vec<Arc<[Noted]>>,
}

impl Fifo {
    fn len(&self) -> usize {
        self.blocks.len() * BLOCK - self.head + self.tail.len()
    }

    /// The serial the next pushed entry gets.
    fn next_serial(&self) -> u64 {
        self.first + self.len() as u64
    }

    /// The queued entry with this serial (`first <= serial <
    /// next_serial()`).
    fn get(&self, serial: u64) -> &Noted {
        let off = (serial - self.first) as usize + self.head;
        let full = self.blocks.len() * BLOCK;
        if off < full {
            &self.blocks[off / BLOCK][off % BLOCK]
        } else {
            &self.tail[off - full]
        }
    }

    fn push(&mut self, n: Noted) {
        self.tail.push_back(n);
        if self.tail.len() == BLOCK {
            let full: Vec<Noted> = self.tail.drain(..).collect();
            self.blocks.push_back(full.into());
        }
    }

    /// Takes out the oldest entry: its serial and its key's hash.
    fn pop(&mut self) -> Option<(u64, u64)> {
        let serial = self.first;
        let hash = match self.blocks.front() {
            None => self.tail.pop_front()?.hash,
            Some(first) => {
                // The entries are read in order, one per remembered
                // answer, long after they were written: ask for one a few
                // places ahead, so that its line is in cache by its turn.
                if let Some(ahead) = first.get(self.head + PREFETCH_AHEAD) {
                    prefetch(ahead);
                }
                let hash = first[self.head].hash;
                self.head += 1;
                if self.head == BLOCK {
                    if let Some(done) = self.blocks.pop_front() {
                        // Nobody takes them (a restore, a simulation):
                        // dropped here rather than kept.
                        if self.retired.len() >= MAX_RETIRED {
                            self.retired.clear();
                        }
                        self.retired.push(done);
                    }
                    self.head = 0;
                }
                hash
            }
        };
        self.first += 1;
        Some((serial, hash))
    }

    /// What the queue holds now, for a reader that may outlive this
    /// borrow (another thread).
    fn view(&self) -> FifoView {
        FifoView {
            blocks: self.blocks.iter().cloned().collect(),
            head: self.head,
            tail: self.tail.iter().cloned().collect(),
        }
    }
}

/// One bounded window: its queue owns the entries, oldest first, and an
/// index finds the current entry of a key by its serial in the queue.
///
/// This replaced a map from key to entry beside a queue of clones: each
/// remembered answer was then two copies (a second reference to each of
/// its byte buffers), and forgetting one hashed its key again and
/// compared it in the map. In the default 200 k-entry window that memory
/// is cold by the time it is forgotten; under wrk those cache misses were
/// about 1 µs an order in the appender (`perf record`, issue 15). Here
/// forgetting reads the queue in order (the hash is kept there) and one
/// slot of the index, and no entry is referenced twice.
///
/// The hasher is std's, keyed at random per process: keys are chosen by
/// clients. Nothing is ever listed in the index's order.
#[derive(Debug, Default)]
struct Window {
    bound: usize,
    hasher: RandomState,
    /// Serials of the current entries, one per key.
    index: HashTable<u64>,
    queue: Fifo,
}

impl Window {
    fn new(bound: usize) -> Window {
        Window {
            bound,
            index: HashTable::with_capacity(bound.min(PRESIZE_MAX).saturating_mul(2)),
            ..Window::default()
        }
    }

    /// Keys remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.len()
    }

    /// The current entry of `key`.
    fn get(&self, key: &[u8]) -> Option<&Noted> {
        let hash = self.hasher.hash_one(key);
        let queue = &self.queue;
        self.index
            .find(hash, |&s| queue.get(s).key[..] == *key)
            .map(|&s| queue.get(s))
    }

    /// Makes this the current entry of `key`, forgetting the oldest
    /// queued entries first while the queue is at its bound (an entry of
    /// a key remembered again since is already not current: only its
    /// place in the queue goes).
    fn remember(&mut self, key: Bytes, payload: Bytes, outcome: Arc<Outcome>) {
        while self.queue.len() >= self.bound {
            let Some((serial, hash)) = self.queue.pop() else {
                break;
            };
            if let Ok(e) = self.index.find_entry(hash, |&s| s == serial) {
                e.remove();
            }
        }
        let hash = self.hasher.hash_one(&key[..]);
        let serial = self.queue.next_serial();
        let queue = &self.queue;
        match self.index.find_mut(hash, |&s| queue.get(s).key == key) {
            Some(current) => *current = serial,
            None => {
                self.index
                    .insert_unique(hash, serial, |&s| queue.get(s).hash);
            }
        }
        self.queue.push(Noted {
            hash,
            key,
            payload,
            outcome,
        });
    }
}

/// A [`Fifo`]'s entries at one moment ([`Fifo::view`]).
#[derive(Debug)]
struct FifoView {
    blocks: Vec<Arc<[Noted]>>,
    head: usize,
    tail: Vec<Noted>,
}

impl FifoView {
    fn iter(&self) -> impl Iterator<Item = &Noted> {
        self.blocks
            .iter()
            .enumerate()
            .flat_map(|(i, b)| &b[if i == 0 { self.head } else { 0 }..])
            .chain(&self.tail)
    }
}

/// The windows at one moment ([`Answers::window`]), turned into the
/// entries saved beside a snapshot by [`WindowView::entries`], off the
/// lock.
#[derive(Debug)]
pub struct WindowView {
    places: FifoView,
    changes: FifoView,
}

impl WindowView {
    /// Every remembered answer at or below `seq`, oldest first (so a
    /// restore forgets in the same order): the accepted places, and per
    /// order the latest change the windows held (an order changed again
    /// has its older change left out).
    pub fn entries(&self, seq: u64) -> Vec<crate::window::Entry> {
        let mut latest: HashMap<&Bytes, u64> = HashMap::new();
        for n in self.changes.iter() {
            latest.insert(&n.key, n.outcome.seq);
        }
        let changes = self
            .changes
            .iter()
            .filter(|n| latest.get(&n.key) == Some(&n.outcome.seq));
        let mut entries: Vec<crate::window::Entry> = self
            .places
            .iter()
            .chain(changes)
            .filter(|n| n.outcome.seq <= seq)
            .map(|n| crate::window::Entry {
                seq: n.outcome.seq,
                key: n.key.clone(),
                payload: n.payload.clone(),
                events: n.outcome.events.clone(),
            })
            .collect();
        entries.sort_by_key(|e| e.seq);
        entries
    }
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Answers {
    /// The accepted places.
    places: Window,
    /// The latest change per order key. A key changed again is queued
    /// again; its older entry is no longer current and only leaves the
    /// queue when its turn comes.
    changes: Window,
}

/// Blocks of forgotten answers ([`Answers::take_retired`]), to be dropped.
#[derive(Debug, Default)]
pub struct Retired(Vec<Arc<[Noted]>>);

impl Retired {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Room made up front in a window's index: twice its bound, so that it
/// never grows while it fills (a growth rehashed ~100 k entries under the
/// results lock: 20–90 ms during which no request was answered) and,
/// at most half full, forgetting an entry rarely leaves a tombstone that
/// would later make it rehash in place. Up to this many entries the
/// room is made at once; a larger window grows as it fills.
const PRESIZE_MAX: usize = 1 << 22;

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
pub fn key_of(cmd: &Command) -> Option<Bytes> {
    let (m, id) = match cmd {
        Command::Place(p) => (&p.market, &p.id),
        Command::Cancel(c) => (&c.market, &c.id),
        Command::Amend(a) => (&a.market, &a.id),
        Command::Invalid(_) => return None,
    };
    Some(order_key(m.as_bytes(), id.as_bytes()))
}

/// What [`Answers::applied`] makes of an applied command before it
/// touches the windows: the answer, and for an accepted place or a
/// cancel or amend, the order key and the canonical bytes to keep.
#[derive(Debug)]
pub struct Prepared {
    outcome: Arc<Outcome>,
    kind: Kind,
    key: Option<Bytes>,
    payload: Option<Bytes>,
}

/// Which window an applied command may go to.
#[derive(Debug, Clone, Copy)]
enum Kind {
    AcceptedPlace,
    Change { rejected: bool },
    Other,
}

impl Prepared {
    /// The answer of the command applied at `seq` with events `evs`, and
    /// what the windows would keep of it.
    pub fn new(seq: u64, cmd: &Command, eng: &Engine, evs: &[Event]) -> Prepared {
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
        let kind = match (cmd, evs.first()) {
            (Command::Place(_), Some(Event::Accepted { .. })) => Kind::AcceptedPlace,
            (Command::Cancel(_) | Command::Amend(_), first) => Kind::Change {
                rejected: matches!(first, Some(Event::Rejected { .. })),
            },
            _ => Kind::Other,
        };
        let (key, payload) = match kind {
            Kind::Other => (None, None),
            _ => (key_of(cmd), Some(canonical(cmd))),
        };
        Prepared {
            outcome,
            kind,
            key,
            payload,
        }
    }

    /// The answer for whoever appended this copy, unless the windows say
    /// otherwise ([`Answers::applied_prepared`]).
    pub fn outcome(&self) -> &Arc<Outcome> {
        &self.outcome
    }
}

impl Answers {
    /// Windows of at most `place_window` accepted places and
    /// `change_window` changed orders (0 turns one off).
    pub fn new(place_window: usize, change_window: usize) -> Answers {
        Answers {
            places: Window::new(place_window),
            changes: Window::new(change_window),
        }
    }

    /// How a place with these bytes and this order key is answered.
    pub fn replay(&self, key: &[u8], payload: &[u8]) -> Replay {
        match self.places.get(key) {
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
        self.before_keyed(cmd, key_of(cmd).as_deref(), payload)
    }

    /// [`Answers::before`] with the command's order key made already
    /// (`key_of`), so that a caller can make it before taking a lock.
    pub fn before_keyed(&self, cmd: &Command, key: Option<&[u8]>, payload: &[u8]) -> Before {
        let Some(key) = key else {
            return Before::Append;
        };
        match cmd {
            Command::Place(_) => match self.replay(key, payload) {
                Replay::Same(o) => Before::Answer(o),
                Replay::Conflict => Before::Conflict,
                Replay::Unknown => Before::Append,
            },
            _ => match self.replay_change(key, payload) {
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
        self.applied_prepared(Prepared::new(seq, cmd, eng, evs))
    }

    /// [`Answers::applied`] with what does not need the windows (the
    /// events' JSON, the order key, the canonical bytes) made already by
    /// [`Prepared::new`], so that a caller can make it before taking a
    /// lock.
    pub fn applied_prepared(&mut self, p: Prepared) -> Arc<Outcome> {
        let Prepared {
            outcome,
            kind,
            key,
            payload,
        } = p;
        let (Some(key), Some(payload)) = (key, payload) else {
            return outcome;
        };
        match kind {
            Kind::AcceptedPlace if self.places.bound > 0 => {
                self.places.remember(key, payload, Arc::clone(&outcome));
            }
            Kind::Change { rejected } if self.changes.bound > 0 => {
                if !rejected {
                    self.changes.remember(key, payload, Arc::clone(&outcome));
                } else if let Some(orig) = self.changes.get(&key).filter(|c| c.payload == payload) {
                    return Arc::clone(&orig.outcome);
                }
            }
            _ => {}
        }
        outcome
    }

    /// Blocks of forgotten entries not yet dropped (usually none: one per
    /// 1024 answers forgotten). Dropping them frees their entries' buffers;
    /// the caller does that where it delays no request (the node: after
    /// the results lock, on the thread that applied), or just drops them.
    pub fn take_retired(&mut self) -> Retired {
        let mut r = std::mem::take(&mut self.places.queue.retired);
        r.append(&mut self.changes.queue.retired);
        Retired(r)
    }

    /// The windows as they are now, cheap to take (a pointer a block of
    /// entries): what to save beside the snapshot at a seq is then
    /// [`WindowView::entries`], computed off the lock.
    pub fn window(&self) -> WindowView {
        WindowView {
            places: self.places.queue.view(),
            changes: self.changes.queue.view(),
        }
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
                Command::Place(_) if self.places.bound > 0 => {
                    self.places.remember(e.key, e.payload, outcome)
                }
                Command::Cancel(_) | Command::Amend(_) if self.changes.bound > 0 => {
                    self.changes.remember(e.key, e.payload, outcome)
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Entry;

    fn kept(seq: u64) -> (Bytes, Arc<Outcome>) {
        let outcome = Arc::new(Outcome {
            seq,
            events: Bytes::from(format!("[{seq}]")),
            duplicate_id: false,
        });
        (Bytes::from(format!("cmd {seq}")), outcome)
    }

    /// The windows kept the plain way (a map and a queue of keys each),
    /// and the entries at `seq` read from the maps, as the node computed
    /// them before its queues held their entries.
    #[derive(Default)]
    struct Model {
        places: HashMap<Bytes, u64>,
        places_order: VecDeque<Bytes>,
        changes: HashMap<Bytes, u64>,
        changes_order: VecDeque<(u64, Bytes)>,
    }

    impl Model {
        fn entries(&self, seq: u64) -> Vec<Entry> {
            let places = self.places_order.iter().map(|k| (k, self.places[k]));
            let changes = self
                .changes_order
                .iter()
                .filter(|(s, k)| self.changes.get(k) == Some(s))
                .map(|(s, k)| (k, *s));
            let mut out: Vec<Entry> = places
                .chain(changes)
                .filter(|(_, s)| *s <= seq)
                .map(|(k, s)| Entry {
                    seq: s,
                    key: k.clone(),
                    payload: kept(s).0,
                    events: kept(s).1.events.clone(),
                })
                .collect();
            out.sort_by_key(|e| e.seq);
            out
        }
    }

    #[test]
    fn a_window_view_lists_what_the_maps_hold_and_ignores_later_changes() {
        let (place_window, change_window) = (2 * BLOCK + 300, BLOCK + 200);
        let mut a = Answers::new(place_window, change_window);
        let mut m = Model::default();
        let mut views = Vec::new();
        for seq in 1..=8 * BLOCK as u64 {
            if seq % 3 == 0 {
                // A change to one of 700 orders: most are changed again
                // while their older change is still queued.
                let key = Bytes::from(format!("c{}", (seq * 7919) % 700));
                let (payload, outcome) = kept(seq);
                a.changes.remember(key.clone(), payload, outcome);
                while m.changes_order.len() >= change_window {
                    let (s, k) = m.changes_order.pop_front().unwrap();
                    if m.changes.get(&k) == Some(&s) {
                        m.changes.remove(&k);
                    }
                }
                m.changes_order.push_back((seq, key.clone()));
                m.changes.insert(key, seq);
            } else {
                let key = Bytes::from(format!("p{seq}"));
                let (payload, outcome) = kept(seq);
                a.places.remember(key.clone(), payload, outcome);
                if m.places_order.len() >= place_window {
                    let k = m.places_order.pop_front().unwrap();
                    m.places.remove(&k);
                }
                m.places_order.push_back(key.clone());
                m.places.insert(key, seq);
            }
            assert_eq!(a.places.len(), m.places.len(), "at {seq}");
            assert_eq!(a.changes.len(), m.changes.len(), "at {seq}");
            // Lookups: the current change of an order, and a place that
            // is still held or was forgotten.
            let c = Bytes::from(format!("c{}", (seq * 31) % 700));
            let held = |w: &Window, k: &Bytes| w.get(k).map(|n| n.outcome.seq);
            assert_eq!(held(&a.changes, &c), m.changes.get(&c).copied());
            let p = Bytes::from(format!("p{}", seq.saturating_sub(seq % 2 * 5000)));
            assert_eq!(held(&a.places, &p), m.places.get(&p).copied());
            if seq % 997 == 0 {
                // A view, and what it must list whatever happens after it.
                let at = seq - 50;
                views.push((a.window(), at, m.entries(at)));
            }
        }
        assert!(views.len() >= 8);
        for (view, at, want) in &views {
            let got = view.entries(*at);
            assert!(!got.is_empty());
            assert_eq!(got.len(), want.len(), "at {at}");
            assert!(got == *want, "at {at}: entries differ");
        }
        let now = 8 * BLOCK as u64;
        assert!(a.window().entries(now) == m.entries(now));
    }

    #[test]
    fn a_fifo_pops_in_order_across_blocks() {
        let mut f = Fifo::default();
        let mut popped = 0u64;
        for seq in 1..=(3 * BLOCK + 17) as u64 {
            let (payload, outcome) = kept(seq);
            assert_eq!(f.next_serial(), seq - 1);
            f.push(Noted {
                hash: seq * 3,
                key: Bytes::from(seq.to_string()),
                payload,
                outcome,
            });
            if seq % 4 == 0 {
                popped += 1;
                assert_eq!(f.pop(), Some((popped - 1, popped * 3)));
            }
            for serial in popped..seq {
                assert_eq!(f.get(serial).outcome.seq, serial + 1);
            }
            let listed: Vec<u64> = f.view().iter().map(|n| n.outcome.seq).collect();
            assert_eq!(listed.len(), f.len());
            assert!(listed.iter().copied().eq(popped + 1..=seq), "at {seq}");
        }
        while let Some((s, _)) = f.pop() {
            assert_eq!(s, popped);
            popped += 1;
        }
        assert_eq!(f.len(), 0);
        assert_eq!(popped, (3 * BLOCK + 17) as u64);
    }

    #[test]
    fn forgotten_blocks_are_retired_whole_for_the_caller_and_bounded_if_never_taken() {
        let mut f = Fifo::default();
        let n = (MAX_RETIRED + 3) * BLOCK + 5;
        for seq in 1..=n as u64 {
            let (payload, outcome) = kept(seq);
            f.push(Noted {
                hash: seq,
                key: Bytes::from(seq.to_string()),
                payload,
                outcome,
            });
        }
        // A view taken now holds the blocks too: retiring one drops
        // nothing it lists.
        let view = f.view();
        for _ in 0..2 * BLOCK - 1 {
            f.pop();
        }
        assert_eq!(f.retired.len(), 1);
        let retired = std::mem::take(&mut f.retired);
        assert_eq!(retired[0].len(), BLOCK);
        assert_eq!(retired[0][BLOCK - 1].outcome.seq, BLOCK as u64);
        assert!(view.iter().map(|e| e.outcome.seq).eq(1..=n as u64));
        // Never taken: at most MAX_RETIRED kept.
        while f.pop().is_some() {}
        assert!(!f.retired.is_empty() && f.retired.len() <= MAX_RETIRED);
        let mut a = Answers::new(2, 2);
        a.places.queue = f;
        let r = a.take_retired();
        assert!(!r.is_empty() && a.places.queue.retired.is_empty());
        assert!(a.take_retired().is_empty());
    }
}
