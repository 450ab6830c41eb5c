//! `Sym`: an immutable UTF-8 string of 24 bytes that keeps up to 22 bytes
//! inline, so the ids, accounts and market names of an order flow cost no
//! heap allocation in the common case.

use std::fmt;

/// Longest string kept inline.
pub(crate) const INLINE: usize = 22;

// Derived equality is byte equality: `new` zero-fills the inline buffer and
// picks the variant by length alone, so equal strings have equal reprs.
#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

/// A short string: a market name, an order id or an account.
#[derive(Clone)]
pub struct Sym(Repr);

impl Sym {
    /// Copies `s`; inline when it is at most 22 bytes.
    #[inline]
    pub fn new(s: &str) -> Self {
        let b = s.as_bytes();
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Sym(Repr::Inline {
                len: b.len() as u8,
                buf,
            })
        } else {
            Sym(Repr::Heap(s.into()))
        }
    }

    /// Copies bytes that must be UTF-8; `None` when they are not.
    pub fn from_utf8(b: &[u8]) -> Option<Self> {
        std::str::from_utf8(b).ok().map(Sym::new)
    }

    /// The zero-padded inline buffer and the length, unless on the heap.
    #[inline(always)]
    pub(crate) fn inline_parts(&self) -> Option<(&[u8; INLINE], u8)> {
        match &self.0 {
            Repr::Inline { len, buf } => Some((buf, *len)),
            Repr::Heap(_) => None,
        }
    }

    /// The string's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..*len as usize],
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            #[allow(unsafe_code)]
            // SAFETY: an inline Sym is only built by `new` from the bytes of
            // a `&str`, copied whole, so `buf[..len]` is valid UTF-8.
            Repr::Inline { len, buf } => unsafe {
                std::str::from_utf8_unchecked(&buf[..*len as usize])
            },
            Repr::Heap(s) => s,
        }
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for "".
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The inline buffer and length as three words (the last word overlaps
/// the second by two bytes and carries the length in its top byte).
#[inline(always)]
fn words(buf: &[u8; INLINE], len: u8) -> [u64; 3] {
    let w = |at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&buf[at..at + 8]);
        u64::from_le_bytes(x)
    };
    [w(0), w(8), (w(INLINE - 8) >> 8) | (u64::from(len) << 56)]
}

impl PartialEq for Sym {
    /// Byte equality. Two inline symbols compare as three words (their
    /// buffers are zero-filled past the length), without a `memcmp` call.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Inline { len: a, buf: x }, Repr::Inline { len: b, buf: y }) => {
                words(x, *a) == words(y, *b)
            }
            (a, b) => a == b,
        }
    }
}
impl Eq for Sym {}

impl PartialOrd for Sym {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sym {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for Sym {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Self {
        Sym::new(s)
    }
}

/// Strings at and around the inline limit, for tests.
#[cfg(test)]
pub(crate) const SAMPLES: [&str; 7] = [
    "",
    "a",
    "BTC-USD",
    "exactly-22-bytes-long!",
    "twenty-three-bytes-long",
    "ünïcødé-✓",
    "a much longer order id that spans several words of input",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_24_bytes_and_round_trips() {
        assert_eq!(std::mem::size_of::<Sym>(), 24);
        for s in SAMPLES {
            let y = Sym::new(s);
            assert_eq!(y.as_str(), s);
            assert_eq!(y.len(), s.len());
        }
        assert_eq!(Sym::from_utf8(&[0xff]), None);
    }
}
