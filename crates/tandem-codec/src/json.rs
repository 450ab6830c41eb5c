//! A strict, allocation-light JSON reader for one command object.
//!
//! It accepts exactly RFC 8259 JSON (UTF-8, no trailing commas, no
//! comments, no lone surrogates) and keeps only what a command needs: the
//! top-level members whose keys we know, as strings, booleans or "other".
//! Unknown members are validated and skipped. Nesting deeper than
//! `MAX_DEPTH` is refused rather than recursed into.

use std::borrow::Cow;

/// Deepest nesting of arrays/objects accepted inside a command.
pub const MAX_DEPTH: usize = 64;

/// The value of a known member, as far as a command cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Null,
    Other,
}

/// Known keys of a command object.
pub const KEYS: [&str; 11] = [
    "op",
    "market",
    "id",
    "account",
    "side",
    "type",
    "price",
    "qty",
    "tif",
    "post_only",
    "base",
];

/// Position of a known key in `KEYS`.
#[inline]
fn key_index(key: &[u8]) -> Option<usize> {
    Some(match key {
        b"op" => 0,
        b"market" => 1,
        b"id" => 2,
        b"account" => 3,
        b"side" => 4,
        b"type" => 5,
        b"price" => 6,
        b"qty" => 7,
        b"tif" => 8,
        b"post_only" => 9,
        b"base" => 10,
        _ => return None,
    })
}

/// The known members of a command object, by position in `KEYS`.
/// A repeated key keeps its last value, as most JSON readers do.
pub type Fields<'a> = [Option<Val<'a>>; KEYS.len()];

/// Why a line is not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> P<'a> {
    /// `b[start..end]` as text. `read_object` checks the whole line is
    /// UTF-8 before parsing, and runs are cut only at ASCII bytes (quotes,
    /// backslashes, control characters), so every run is UTF-8 too.
    #[inline]
    fn text(&self, start: usize, end: usize) -> &'a str {
        let run = &self.b[start..end];
        debug_assert!(std::str::from_utf8(run).is_ok());
        #[allow(unsafe_code)]
        // SAFETY: see the doc comment: the line was validated as UTF-8 and
        // `start`/`end` sit next to ASCII bytes or the line's ends, which
        // are always char boundaries.
        unsafe {
            std::str::from_utf8_unchecked(run)
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if c == b' ' || c == b'\t' || c == b'\n' || c == b'\r' {
                self.i += 1;
            } else {
                break;
            }
        }
    }
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    #[inline]
    fn eat(&mut self, c: u8) -> Result<(), NotJson> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(NotJson)
        }
    }
    fn lit(&mut self, s: &[u8]) -> Result<(), NotJson> {
        if self.b[self.i..].starts_with(s) {
            self.i += s.len();
            Ok(())
        } else {
            Err(NotJson)
        }
    }
    fn hex4(&mut self) -> Result<u32, NotJson> {
        let h = self.b.get(self.i..self.i + 4).ok_or(NotJson)?;
        let mut v = 0u32;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(NotJson),
            };
            v = v * 16 + u32::from(d);
        }
        self.i += 4;
        Ok(v)
    }
    /// Reads a string after its opening quote into `out` (if given).
    fn string(&mut self, mut out: Option<&mut String>) -> Result<(), NotJson> {
        loop {
            let start = self.i;
            // Fast path: run of plain bytes.
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            if let Some(o) = out.as_deref_mut() {
                o.push_str(self.text(start, self.i));
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek().ok_or(NotJson)?;
                    self.i += 1;
                    let ch = match c {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                self.lit(b"\\u")?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(NotJson);
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(cp).ok_or(NotJson)?
                        }
                        _ => return Err(NotJson),
                    };
                    if let Some(o) = out.as_deref_mut() {
                        o.push(ch);
                    }
                }
                _ => return Err(NotJson),
            }
        }
    }
    fn number(&mut self) -> Result<(), NotJson> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(NotJson),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits1()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits1()?;
        }
        Ok(())
    }
    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }
    fn digits1(&mut self) -> Result<(), NotJson> {
        let s = self.i;
        self.digits();
        if self.i == s {
            Err(NotJson)
        } else {
            Ok(())
        }
    }
    /// Skips any value; `depth` counts enclosing containers.
    fn skip(&mut self, depth: usize) -> Result<(), NotJson> {
        match self.peek().ok_or(NotJson)? {
            b'"' => {
                self.i += 1;
                self.string(None)
            }
            b'{' | b'[' if depth >= MAX_DEPTH => Err(NotJson),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.eat(b'"')?;
                    self.string(None)?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(NotJson),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(NotJson),
                    }
                }
            }
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'n' => self.lit(b"null"),
            _ => self.number(),
        }
    }
    /// Reads a string after its opening quote, borrowing it from the
    /// input when it has no escapes.
    fn str_val(&mut self) -> Result<Cow<'a, str>, NotJson> {
        let start = self.i;
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            self.i += 1;
        }
        let run = self.text(start, self.i);
        if self.peek() == Some(b'"') {
            self.i += 1;
            return Ok(Cow::Borrowed(run));
        }
        let mut s = String::from(run);
        self.string(Some(&mut s))?;
        Ok(Cow::Owned(s))
    }
    /// Reads a value of a known member.
    fn value(&mut self) -> Result<Val<'a>, NotJson> {
        match self.peek().ok_or(NotJson)? {
            b'"' => {
                self.i += 1;
                Ok(Val::Str(self.str_val()?))
            }
            b't' => self.lit(b"true").map(|_| Val::Bool(true)),
            b'f' => self.lit(b"false").map(|_| Val::Bool(false)),
            b'n' => self.lit(b"null").map(|_| Val::Null),
            _ => self.skip(1).map(|_| Val::Other),
        }
    }
}

/// Reads one JSON object from `line` (which must hold nothing else but
/// whitespace) into its known fields.
pub fn read_object(line: &[u8]) -> Result<Fields<'_>, NotJson> {
    // One check of the whole line (fast for ASCII) instead of one per string.
    if !line.is_ascii() && std::str::from_utf8(line).is_err() {
        return Err(NotJson);
    }
    let mut p = P { b: line, i: 0 };
    let mut fields: Fields = Default::default();
    p.ws();
    p.eat(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            p.eat(b'"')?;
            let key = p.str_val()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            match key_index(key.as_bytes()) {
                Some(k) => fields[k] = Some(p.value()?),
                None => p.skip(1)?,
            }
            p.ws();
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b'}') => {
                    p.i += 1;
                    break;
                }
                _ => return Err(NotJson),
            }
        }
    }
    p.ws();
    if p.i != line.len() {
        return Err(NotJson);
    }
    Ok(fields)
}

/// Appends `s` as a JSON string literal (quotes included).
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 15)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> bool {
        read_object(s.as_bytes()).is_ok()
    }

    #[test]
    fn accepts_json_objects_only() {
        assert!(ok("{}"));
        assert!(ok(
            " { \"a\" : [1, -2.5e+3, {\"b\": null}, true, false, \"x\"] } \r"
        ));
        assert!(ok("{\"op\":\"place\",\"op\":\"cancel\"}"));
        for bad in [
            "",
            "[]",
            "1",
            "\"x\"",
            "{",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\" 1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":tru}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\u{1}\"}",
            "{} {}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":+1}",
            "{'a':1}",
            "{\"a\":NaN}",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH + 5),
            "]".repeat(MAX_DEPTH + 5)
        );
        assert!(!ok(&deep));
        let fine = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(ok(&fine));
    }

    #[test]
    fn decodes_escapes_in_keys_and_values() {
        let f =
            read_object(br#"{"\u006fp":"pl\u0061ce","id":"\ud83d\ude00\n\"","post_only":true}"#)
                .unwrap();
        assert_eq!(f[0], Some(Val::Str("place".into())));
        assert_eq!(f[2], Some(Val::Str("\u{1F600}\n\"".into())));
        assert_eq!(f[9], Some(Val::Bool(true)));
        assert!(read_object(b"{\"id\":\"\xff\"}").is_err());
    }

    #[test]
    fn escapes_what_json_requires() {
        let mut v = Vec::new();
        write_str(&mut v, "a\"b\\c\nd\u{1}é".as_bytes());
        assert_eq!(
            std::str::from_utf8(&v).unwrap(),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }
}
