//! The adapter trait every benchmarked matching core implements.
//!
//! An adapter turns each engine-neutral [`Op`] into the engine's own native
//! command *before* timing ([`BenchEngine::prepare`]), so that building ids,
//! strings and enum payloads is not measured. The timed loop then only calls
//! [`BenchEngine::apply`] with a reference to a prepared command.
//!
//! Adding an engine = one file implementing this trait + one line in
//! `main.rs`'s engine registry (`ENGINES`).

use crate::workload::{BookSummary, Op};

/// A matching core under test, driven single-threaded over one market.
pub trait BenchEngine {
    /// Short name used on the command line, in the table and in JSON.
    const NAME: &'static str;
    /// Crate name and version being benchmarked (for the report).
    const VERSION: &'static str;
    /// True for the engine the others are compared against (Tandem).
    const IS_SUBJECT: bool = false;
    /// True if the engine applies cancel-taker self-trade prevention; its
    /// final book is then checked against the STP variant of the model.
    const STP: bool = false;

    /// How `new_engine` sets the engine up, printed with its results: what
    /// it allocates or touches before timing starts (so that one engine's
    /// pre-faulted memory is stated beside another's growth).
    const SETUP: &'static str;

    /// The engine's native, pre-built command.
    type Cmd;

    /// A fresh, empty book for one market, in the engine's default
    /// configuration, told how many commands the run will apply (an engine
    /// that can preallocate sizes itself to that; the others ignore it).
    fn new_engine(expected_cmds: usize) -> Self;

    /// Converts an engine-neutral op into a native command (untimed).
    fn prepare(op: &Op) -> Self::Cmd;

    /// Applies one command. Implementations must keep the engine's outputs
    /// observable (e.g. via `std::hint::black_box`) so nothing is optimised away.
    fn apply(&mut self, cmd: &Self::Cmd);

    /// Applies a whole stream in order. The default applies one command at
    /// a time; an engine with a batch path (Tandem's look-ahead prefetch of
    /// its id index, as its replica uses on a log batch) overrides it. The
    /// report says which engines did.
    fn apply_all(&mut self, cmds: &[Self::Cmd]) {
        for c in cmds {
            self.apply(c);
        }
    }

    /// True if `apply_all` is a batch path rather than a loop over `apply`.
    const BATCHED: bool = false;

    /// The book's final state in ticks / lots, for cross-checking against
    /// the generator's reference model. `None` if the engine offers no way
    /// to read it; individual fields it cannot report stay `None`.
    fn summary(&self) -> Option<BookSummary>;
}
