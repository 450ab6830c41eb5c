//! The one percent-decoder of Tandem's servers (node paths and queries,
//! the edge's `account=`). It is strict: a `%` must be followed by two hex
//! digits, or the whole value is refused with [`PercentError::Malformed`]
//! (the servers answer `400` naming the field). Guessing at a malformed
//! escape would route or look up something the client did not name.

use std::borrow::Cow;

/// Why a value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    Malformed,
    /// The decoded bytes are not UTF-8 (only from the `_utf8` functions).
    #[error("not UTF-8 once percent-decoded")]
    NotUtf8,
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_with(s: &str, plus_is_space: bool) -> Result<Cow<'_, [u8]>, PercentError> {
    let b = s.as_bytes();
    if !(b.contains(&b'%') || plus_is_space && b.contains(&b'+')) {
        return Ok(Cow::Borrowed(b));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                    return Err(PercentError::Malformed);
                };
                let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                    return Err(PercentError::Malformed);
                };
                out.push(h << 4 | l);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// Decodes a path segment (`+` stays `+`).
pub fn decode(s: &str) -> Result<Cow<'_, [u8]>, PercentError> {
    decode_with(s, false)
}

/// Decodes a query value (`+` is a space, as forms encode it).
pub fn decode_query(s: &str) -> Result<Cow<'_, [u8]>, PercentError> {
    decode_with(s, true)
}

fn utf8(b: Cow<'_, [u8]>) -> Result<Cow<'_, str>, PercentError> {
    match b {
        Cow::Borrowed(b) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| PercentError::NotUtf8),
        Cow::Owned(v) => String::from_utf8(v)
            .map(Cow::Owned)
            .map_err(|_| PercentError::NotUtf8),
    }
}

/// [`decode`], and the result must be UTF-8.
pub fn decode_utf8(s: &str) -> Result<Cow<'_, str>, PercentError> {
    utf8(decode(s)?)
}

/// [`decode_query`], and the result must be UTF-8.
pub fn decode_query_utf8(s: &str) -> Result<Cow<'_, str>, PercentError> {
    utf8(decode_query(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded_and_plain_values_borrowed() {
        assert!(matches!(decode("BTC-USD"), Ok(Cow::Borrowed(b"BTC-USD"))));
        assert_eq!(&*decode("a%2Fb%20c+d").unwrap(), b"a/b c+d");
        assert_eq!(&*decode_query("a%2fb+c").unwrap(), b"a/b c");
        assert_eq!(decode_utf8("%C3%A9").unwrap(), "é");
        assert_eq!(decode_query_utf8("x+y").unwrap(), "x y");
    }

    #[test]
    fn a_malformed_escape_is_refused_not_guessed() {
        for bad in ["%", "%4", "a%zz", "%G0", "100%", "%%41"] {
            assert_eq!(decode(bad), Err(PercentError::Malformed), "{bad}");
            assert_eq!(decode_query(bad), Err(PercentError::Malformed), "{bad}");
        }
        assert_eq!(decode("%FF").unwrap().as_ref(), [0xFF]);
        assert_eq!(decode_utf8("%FF"), Err(PercentError::NotUtf8));
    }

    proptest::proptest! {
        /// Any string decodes or is refused, never panics; every byte
        /// string, fully escaped, decodes back to itself.
        #[test]
        fn arbitrary_input_never_panics_and_escapes_round_trip(
            s in "\\PC{0,64}",
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let _ = decode(&s);
            let _ = decode_query_utf8(&s);
            let escaped: String = raw.iter().map(|b| format!("%{b:02X}")).collect();
            let (path, query) = (decode(&escaped).unwrap(), decode_query(&escaped).unwrap());
            proptest::prop_assert_eq!(path.as_ref(), &raw[..]);
            proptest::prop_assert_eq!(query.as_ref(), &raw[..]);
        }
    }
}
