//! Text close to a valid input, for bounded fuzzing: a few pieces cut
//! out and a few short strings inserted, where a reader is most likely to
//! trip.

use proptest::prelude::*;

/// `text` with 1-5 random cuts (up to 23 bytes each) and insertions of up
/// to 8 characters drawn from `chars` (a regex character class).
pub fn mutated(text: &'static str, chars: &'static str) -> impl Strategy<Value = String> {
    let insert = proptest::string::string_regex(&format!("[{chars}]{{0,8}}"))
        .expect("a regex of the characters");
    proptest::collection::vec((0..text.len(), 0usize..24, insert), 1..6).prop_map(move |edits| {
        let mut s = text.to_owned();
        for (at, cut, insert) in edits {
            let mut at = at.min(s.len());
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.replace_range(at..end, &insert);
        }
        s
    })
}
