//! HTTP/1.1 answers, decoded for the clients that drive their own
//! keep-alive connections: the load generator's and the edge's to its
//! nodes.
//!
//! hyper's client runs each connection as a task of its own (or, driven
//! in place, as a dispatcher with a callback channel and a body channel):
//! more CPU per request than the node spends answering a `GET /healthz`.
//! These clients write a request in one buffer and read the answer on the
//! task that sent it; this module turns the bytes read into answers. The
//! head is parsed in place (`httparse`); the body and the header values
//! are slices of the bytes read, not copies.
//!
//! Answers framed by `content-length`, by chunked transfer coding, or by
//! the end of the connection are read; interim answers (1xx but 101) are
//! skipped. A malformed head, a head over [`MAX_HEAD`], a body over
//! [`MAX_BODY`], two different lengths, or a bad chunk is [`Malformed`]:
//! the connection's state is unknown and the caller drops it.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

/// Longest answer head read (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers an answer head may carry (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line of a chunked body (with extensions).
const MAX_CHUNK_LINE: usize = 1024;
/// Longest answer body read.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The bytes are not an HTTP/1.1 answer this decoder takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed or oversized HTTP/1.1 answer")]
pub struct Malformed;

/// One whole answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Whether the connection may carry another request (HTTP/1.1 without
    /// `connection: close`, HTTP/1.0 with `keep-alive`, not framed by the
    /// end of the connection).
    pub keep_alive: bool,
    /// The body, de-chunked.
    pub body: Bytes,
    /// The status line and headers as read.
    head: Bytes,
    /// Each header's name and value, as offsets into `head`.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl Answer {
    /// The headers in the order they came: name (a token, as sent) and
    /// value (a slice of the bytes read).
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], Bytes)> + '_ {
        self.fields
            .iter()
            .map(|(n, v)| (&self.head[n.clone()], self.head.slice(v.clone())))
    }

    /// The first value of the header `name` (any case).
    pub fn header(&self, name: &str) -> Option<Bytes> {
        self.fields
            .iter()
            .find(|(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| self.head.slice(v.clone()))
    }
}

/// How an answer's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (1xx, 204, 304, or the answer to a `HEAD`).
    Empty,
    /// `content-length: N`.
    Length(usize),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Everything up to the end of the connection.
    Close,
}

/// What the head of an answer says.
#[derive(Debug)]
struct Head {
    len: usize,
    status: u16,
    framing: Framing,
    keep_alive: bool,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

/// Decodes one whole answer from the front of `buf` and takes its bytes
/// out: `Ok(None)` while more bytes are needed, with `eof` saying that no
/// more will come (an answer framed by the end of the connection ends
/// there). `head_request`: the request was a `HEAD`, so the answer has no
/// body whatever its length says. Interim answers (1xx but 101) before it
/// are skipped.
pub fn decode(
    buf: &mut BytesMut,
    eof: bool,
    head_request: bool,
) -> Result<Option<Answer>, Malformed> {
    let head = loop {
        let Some(head) = parse_head(buf, head_request)? else {
            return if buf.len() > MAX_HEAD || (eof && !buf.is_empty()) {
                Err(Malformed)
            } else {
                Ok(None)
            };
        };
        if (100..200).contains(&head.status) && head.status != 101 {
            buf.advance(head.len);
            continue;
        }
        break head;
    };
    let answer = |head: Head, bytes: Bytes, body: Bytes, keep_alive: bool| Answer {
        status: head.status,
        keep_alive,
        body,
        head: bytes,
        fields: head.fields,
    };
    let keep = head.keep_alive;
    match head.framing {
        Framing::Empty => {
            let bytes = buf.split_to(head.len).freeze();
            Ok(Some(answer(head, bytes, Bytes::new(), keep)))
        }
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(Malformed);
            }
            let end = head.len + n;
            if buf.len() < end {
                return if eof { Err(Malformed) } else { Ok(None) };
            }
            let message = buf.split_to(end).freeze();
            let body = message.slice(head.len..end);
            let bytes = message.slice(..head.len);
            Ok(Some(answer(head, bytes, body, keep)))
        }
        Framing::Close => {
            if !eof {
                return if buf.len() - head.len > MAX_BODY {
                    Err(Malformed)
                } else {
                    Ok(None)
                };
            }
            let message = buf.split().freeze();
            let body = message.slice(head.len..);
            let bytes = message.slice(..head.len);
            Ok(Some(answer(head, bytes, body, false)))
        }
        Framing::Chunked => match dechunk(&buf[head.len..])? {
            None if eof => Err(Malformed),
            None => Ok(None),
            Some((body, used)) => {
                let bytes = buf.split_to(head.len).freeze();
                buf.advance(used);
                Ok(Some(answer(head, bytes, Bytes::from(body), keep)))
            }
        },
    }
}

/// A whole chunked body at the front of `buf` (trailers included, and
/// left out): its data and the bytes it takes; `None` while incomplete.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, Malformed> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let Some(size_end) = line_end(buf, at, MAX_CHUNK_LINE)? else {
            return Ok(None);
        };
        let size = chunk_size(&buf[at..size_end - 2])?;
        at = size_end;
        if size == 0 {
            // Trailers, each a line, up to an empty line.
            loop {
                let Some(end) = line_end(buf, at, MAX_HEAD)? else {
                    return Ok(None);
                };
                let empty = end - at == 2;
                at = end;
                if empty {
                    return Ok(Some((data, at)));
                }
            }
        }
        if data.len() + size > MAX_BODY {
            return Err(Malformed);
        }
        let end = at + size + 2;
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(Malformed);
        }
        data.extend_from_slice(&buf[at..end - 2]);
        at = end;
    }
}

/// The offset just past the first CRLF at or after `at`; `None` while
/// there is none yet, an error past `max` bytes without one.
fn line_end(buf: &[u8], at: usize, max: usize) -> Result<Option<usize>, Malformed> {
    match buf[at..].windows(2).position(|w| w == b"\r\n") {
        Some(k) => Ok(Some(at + k + 2)),
        None if buf.len() - at > max => Err(Malformed),
        None => Ok(None),
    }
}

/// The size of a chunk from its line (hex digits, then any extensions).
fn chunk_size(line: &[u8]) -> Result<usize, Malformed> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(Malformed);
    }
    let s = std::str::from_utf8(digits).map_err(|_| Malformed)?;
    usize::from_str_radix(s, 16).map_err(|_| Malformed)
}

/// Parses an answer head at the front of `buf`: `None` while incomplete.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Malformed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Malformed),
    };
    let status = resp.code.ok_or(Malformed)?;
    let http11 = resp.version == Some(1);
    let base = buf.as_ptr() as usize;
    let range = |v: &[u8]| {
        let start = v.as_ptr() as usize - base;
        start..start + v.len()
    };
    let mut keep_alive = http11;
    let (mut length, mut chunked) = (None, false);
    let mut fields = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = h.name;
        fields.push((range(name.as_bytes()), range(h.value)));
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or(Malformed)?;
            // Two different lengths make the framing unknowable.
            if length.is_some_and(|l| l != n) {
                return Err(Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        keep_alive,
        fields,
    }))
}

/// Decodes `bytes` as the answers of one connection, read in pieces of
/// every size from 1 byte up to the whole, and checks what the decoder
/// promises whatever the bytes: no panic, no body longer than the input,
/// the same answers however the bytes arrive. For the fuzz target
/// `h1_answer` (`fuzz/`) and the tests.
#[doc(hidden)]
pub fn check_answer_bytes(bytes: &[u8]) {
    for head_request in [false, true] {
        let whole = decode_all(bytes, bytes.len().max(1), head_request);
        for piece in [1, 2, 3, 7, 64] {
            assert_eq!(
                decode_all(bytes, piece, head_request),
                whole,
                "piece {piece}"
            );
        }
    }
}

/// An answer as `decode_all` keeps it: status, body, keep-alive, headers.
type Decoded = Result<(u16, Vec<u8>, bool, Vec<(Vec<u8>, Bytes)>), Malformed>;

/// Each answer decoded from `bytes` fed `piece` bytes at a time, then the
/// end of the connection; the last entry is the error that ended it, if
/// one did.
fn decode_all(bytes: &[u8], piece: usize, head_request: bool) -> Vec<Decoded> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    loop {
        let eof = fed == bytes.len();
        match decode(&mut buf, eof, head_request) {
            Ok(Some(a)) => {
                assert!(a.body.len() <= bytes.len());
                let headers = a.headers().map(|(n, v)| (n.to_vec(), v)).collect();
                out.push(Ok((a.status, a.body.to_vec(), a.keep_alive, headers)));
                if !a.keep_alive {
                    return out;
                }
            }
            Ok(None) if eof => return out,
            Ok(None) => {
                let n = piece.min(bytes.len() - fed);
                buf.extend_from_slice(&bytes[fed..fed + n]);
                fed += n;
            }
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Option<Answer>, Malformed> {
        decode(&mut BytesMut::from(bytes), true, false)
    }

    #[test]
    fn a_length_framed_answer_and_its_headers() {
        let text = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 5\r\nX-Tandem-Seq: 2:17@00ff\r\nretry-after: 3\r\n\r\nhello";
        let mut buf = BytesMut::from(&text[..]);
        buf.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        let a = decode(&mut buf, false, false).unwrap().unwrap();
        assert!(a.keep_alive);
        assert_eq!(a.status, 429);
        assert_eq!(&a.body[..], b"hello");
        assert_eq!(a.header("x-tandem-seq").unwrap(), "2:17@00ff");
        assert_eq!(a.header("Retry-After").unwrap(), "3");
        assert!(a.header("x-absent").is_none());
        let names: Vec<&[u8]> = a.headers().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [&b"content-length"[..], b"X-Tandem-Seq", b"retry-after"]
        );
        // The next answer is left for the next request.
        let b = decode(&mut buf, false, false).unwrap().unwrap();
        assert_eq!((b.status, b.body.len(), b.keep_alive), (204, 0, true));
        assert!(buf.is_empty());
        // Half an answer waits for the rest; at the end it fails.
        let mut half = BytesMut::from(&text[..text.len() - 2]);
        assert!(decode(&mut half, false, false).unwrap().is_none());
        assert_eq!(decode(&mut half, true, false).unwrap_err(), Malformed);
    }

    #[test]
    fn a_head_answer_has_no_body_whatever_its_length_says() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
        );
        let a = decode(&mut buf, false, true).unwrap().unwrap();
        assert_eq!((a.status, a.body.len()), (200, 0));
        assert_eq!(a.header("content-length").unwrap(), "9");
        assert!(decode(&mut buf, false, false).unwrap().is_some());
        assert!(buf.is_empty());
    }

    #[test]
    fn chunked_close_and_interim_answers() {
        let a = one(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.status, &a.body[..], a.keep_alive),
            (200, &b"abc0123456789"[..], true)
        );
        let a = one(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nto the end")
            .unwrap()
            .unwrap();
        assert_eq!((&a.body[..], a.keep_alive), (&b"to the end"[..], false));
        // Without the end of the connection, a close-framed body waits.
        let mut open = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\npart"[..]);
        assert!(decode(&mut open, false, false).unwrap().is_none());
        let a = one(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap()
            .unwrap();
        assert_eq!((&a.body[..], a.keep_alive), (&b"ok"[..], false));
        let a = one(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok")
            .unwrap()
            .unwrap();
        assert!(a.keep_alive);
        let a =
            one(b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!a.keep_alive);
    }

    #[test]
    fn malformed_answers_are_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 999999999999\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert_eq!(
                one(bad).unwrap_err(),
                Malformed,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx: "[..]);
        long.extend_from_slice(&vec![b'a'; MAX_HEAD]);
        assert_eq!(decode(&mut long, false, false).unwrap_err(), Malformed);
    }

    /// Valid answers cut, flipped and spliced at random (a fixed seed):
    /// the checks of `check_answer_bytes` hold for every one.
    #[test]
    fn mutated_answers_never_panic_and_decode_alike_in_pieces() {
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nx-tandem-seq: 0:1\r\n\r\nbodyHTTP/1.1 503 x\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nconnection: close\r\n\r\nrest",
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\nx",
        ];
        // splitmix64, fixed seed: the same mutations every run.
        let mut state = 0x4831_u64;
        let mut below = |n: u64| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n.max(1)
        };
        for round in 0..4000 {
            let mut b = seeds[round % seeds.len()].to_vec();
            for _ in 0..=below(4) {
                let at = below(b.len() as u64 + 1) as usize;
                match below(4) {
                    0 => b.truncate(at),
                    1 if at < b.len() => b[at] = below(256) as u8,
                    2 => {
                        let pick = b"0123456789abcdef\r\n:; ";
                        b.insert(at, pick[below(pick.len() as u64) as usize]);
                    }
                    _ => {
                        let other = seeds[below(4) as usize];
                        b.extend_from_slice(&other[..below(other.len() as u64) as usize]);
                    }
                }
            }
            check_answer_bytes(&b);
        }
        for s in seeds {
            check_answer_bytes(s);
            assert!(decode_all(s, 5, false).iter().all(Result::is_ok));
        }
    }
}
