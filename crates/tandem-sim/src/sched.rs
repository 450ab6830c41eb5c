//! The scheduler: a virtual clock and a queue of events ordered by
//! (time, order of scheduling). Nothing in a run reads the wall clock;
//! ties are broken by insertion order, so a run is a function of its seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Virtual time in microseconds since the start of the run.
pub type Micros = u64;

/// Events of type `E` due at virtual times.
#[derive(Debug)]
pub struct Scheduler<E> {
    now: Micros,
    next_id: u64,
    heap: BinaryHeap<Reverse<(Micros, u64)>>,
    /// Events by id (ids only grow, so a `Vec` of options would do; a
    /// BTreeMap keeps memory to what is pending).
    events: std::collections::BTreeMap<u64, E>,
}

impl<E> Default for Scheduler<E> {
    fn default() -> Self {
        Scheduler {
            now: 0,
            next_id: 0,
            heap: BinaryHeap::new(),
            events: std::collections::BTreeMap::new(),
        }
    }
}

impl<E> Scheduler<E> {
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Schedules `e` at `now + delay`.
    pub fn after(&mut self, delay: Micros, e: E) {
        let id = self.next_id;
        self.next_id += 1;
        self.heap.push(Reverse((self.now + delay, id)));
        self.events.insert(id, e);
    }

    /// The next event, advancing the clock to its time.
    pub fn pop(&mut self) -> Option<E> {
        let Reverse((t, id)) = self.heap.pop()?;
        self.now = t;
        self.events.remove(&id)
    }

    pub fn pending(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Scheduler;

    #[test]
    fn time_then_insertion_order() {
        let mut s = Scheduler::default();
        s.after(10, "b");
        s.after(5, "a");
        s.after(10, "c");
        assert_eq!(s.pop(), Some("a"));
        assert_eq!(s.now(), 5);
        s.after(5, "d");
        assert_eq!(
            [s.pop(), s.pop(), s.pop(), s.pop()],
            [Some("b"), Some("c"), Some("d"), None]
        );
    }
}
