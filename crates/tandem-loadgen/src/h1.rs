//! The HTTP/1.1 client connection of the load: one request at a time on a
//! keep-alive TCP connection, driven by the task that sends the request.
//!
//! hyper's client runs each connection as a task of its own and hands
//! every request and answer across a channel to it: two task switches a
//! request, which cost the load generator more CPU than the node spends on
//! a `GET /healthz`. Here the request is written in one buffer by the
//! caller and the answer is parsed in place (`httparse`) from the bytes
//! read; the body and the `x-tandem-cluster` value are slices of those
//! bytes, not copies. Answers framed by `content-length`, by chunked
//! transfer coding, or by the end of the connection are read; an answer
//! with a head longer than [`MAX_HEAD`] or a malformed head fails the
//! attempt, as a dropped connection does.

use std::io::Write as _;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{parse_token, Answer, AttemptError, Target};
use crate::workload::{Method, RequestSpec};

/// Longest answer head read (status line and headers).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most headers an answer head may carry.
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line of a chunked body (with extensions).
const MAX_CHUNK_LINE: usize = 1024;
/// Longest answer body read.
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;
/// Bytes asked of the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// One keep-alive connection to one target.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed; any left after an answer make the
    /// connection stale.
    rbuf: BytesMut,
    /// The request being written.
    wbuf: Vec<u8>,
}

/// How an answer's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    /// `content-length: N`.
    Length(usize),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Everything up to the end of the connection.
    Close,
}

/// What the head of an answer says, as offsets into the read buffer.
#[derive(Debug)]
struct Head {
    len: usize,
    status: u16,
    framing: Framing,
    keep_alive: bool,
    seq: Option<Range<usize>>,
    retry_after: Option<Range<usize>>,
    cluster: Option<Range<usize>>,
}

impl Conn {
    /// Connects to `addr` (no Nagle delay: every request is one write).
    pub(crate) async fn dial(addr: SocketAddr) -> Result<Self, AttemptError> {
        let io = TcpStream::connect(addr)
            .await
            .map_err(|_| AttemptError::Connect)?;
        let _ = io.set_nodelay(true);
        Ok(Self {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
        })
    }

    /// Whether an idle connection can no longer be used: the server closed
    /// it (or sent bytes nobody asked for, such as a 408 before closing).
    /// Does not wait.
    pub(crate) fn stale(&self) -> bool {
        if !self.rbuf.is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        match self.io.try_read(&mut probe) {
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            // 0: closed; anything else: bytes between answers.
            Ok(_) => true,
        }
    }

    /// Sends `spec` and reads its whole answer. The flag says whether the
    /// connection may carry another request. On an error the connection
    /// is in an unknown state and must be dropped.
    pub(crate) async fn send(
        &mut self,
        spec: &RequestSpec,
        target: &Target,
    ) -> Result<(Answer, bool), AttemptError> {
        write_request(&mut self.wbuf, spec, &target.authority);
        self.io
            .write_all(&self.wbuf)
            .await
            .map_err(|_| AttemptError::Connect)?;
        let mut eof = false;
        loop {
            if let Some(done) = decode(&mut self.rbuf, eof)? {
                return Ok(done);
            }
            if eof {
                return Err(AttemptError::Connect);
            }
            self.rbuf.reserve(READ_CHUNK);
            let n = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|_| AttemptError::Connect)?;
            eof = n == 0;
        }
    }
}

/// Decodes one whole answer from the front of `buf` and takes its bytes
/// out: `Ok(None)` while more bytes are needed, with `eof` saying that no
/// more will come (an answer framed by the end of the connection ends
/// there). Interim answers (1xx but 101) before it are skipped. The flag
/// says whether the connection may carry another request.
pub(crate) fn decode(
    buf: &mut BytesMut,
    eof: bool,
) -> Result<Option<(Answer, bool)>, AttemptError> {
    let head = loop {
        let Some(head) = parse_head(buf)? else {
            return if buf.len() > MAX_HEAD || (eof && !buf.is_empty()) {
                Err(AttemptError::Connect)
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
    let keep = head.keep_alive;
    match head.framing {
        Framing::Empty => {
            let message = buf.split_to(head.len).freeze();
            Ok(Some((answer_of(&head, &message, Bytes::new()), keep)))
        }
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(AttemptError::Connect);
            }
            let end = head.len + n;
            if buf.len() < end {
                return if eof {
                    Err(AttemptError::Connect)
                } else {
                    Ok(None)
                };
            }
            let message = buf.split_to(end).freeze();
            let body = message.slice(head.len..end);
            Ok(Some((answer_of(&head, &message, body), keep)))
        }
        Framing::Close => {
            if !eof {
                return if buf.len() - head.len > MAX_BODY {
                    Err(AttemptError::Connect)
                } else {
                    Ok(None)
                };
            }
            let message = buf.split().freeze();
            let body = message.slice(head.len..);
            Ok(Some((answer_of(&head, &message, body), false)))
        }
        Framing::Chunked => match dechunk(&buf[head.len..])? {
            None if eof => Err(AttemptError::Connect),
            None => Ok(None),
            Some((body, used)) => {
                let message = buf.split_to(head.len).freeze();
                buf.advance(used);
                Ok(Some((answer_of(&head, &message, Bytes::from(body)), keep)))
            }
        },
    }
}

/// A whole chunked body at the front of `buf` (trailers included): its
/// data and the bytes it takes; `None` while incomplete.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, AttemptError> {
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
            return Err(AttemptError::Connect);
        }
        let end = at + size + 2;
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(AttemptError::Connect);
        }
        data.extend_from_slice(&buf[at..end - 2]);
        at = end;
    }
}

/// The offset just past the first CRLF at or after `at`; `None` while
/// there is none yet, an error past `max` bytes without one.
fn line_end(buf: &[u8], at: usize, max: usize) -> Result<Option<usize>, AttemptError> {
    match buf[at..].windows(2).position(|w| w == b"\r\n") {
        Some(k) => Ok(Some(at + k + 2)),
        None if buf.len() - at > max => Err(AttemptError::Connect),
        None => Ok(None),
    }
}

/// Writes the request line, headers and body of `spec` into `out`.
fn write_request(out: &mut Vec<u8>, spec: &RequestSpec, authority: &str) {
    out.clear();
    out.extend_from_slice(match spec.method {
        Method::Get => b"GET ",
        Method::Post => b"POST ",
        Method::Delete => b"DELETE ",
    });
    out.extend_from_slice(spec.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !spec.body.is_empty() {
        out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}\r\n", spec.body.len());
    } else if spec.method == Method::Post {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    if let Some(tok) = &spec.min_seq {
        header(out, "x-tandem-min-seq", tok);
    }
    if let Some((sig, expiry)) = &spec.signature {
        header(out, "x-tandem-signature", sig);
        header(out, "x-tandem-expiry", expiry);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&spec.body);
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Parses an answer head at the front of `buf`: `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, AttemptError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(AttemptError::Connect),
    };
    let status = resp.code.ok_or(AttemptError::Connect)?;
    let http11 = resp.version == Some(1);
    let base = buf.as_ptr() as usize;
    let range = |v: &[u8]| {
        let start = v.as_ptr() as usize - base;
        start..start + v.len()
    };
    let mut head = Head {
        len,
        status,
        framing: Framing::Close,
        keep_alive: http11,
        seq: None,
        retry_after: None,
        cluster: None,
    };
    let (mut length, mut chunked) = (None, false);
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or(AttemptError::Connect)?;
            // Two different lengths make the framing unknowable.
            if length.is_some_and(|l| l != n) {
                return Err(AttemptError::Connect);
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
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("x-tandem-seq") {
            head.seq = Some(range(h.value));
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = Some(range(h.value));
        } else if name.eq_ignore_ascii_case(crate::samples::CLUSTER_HEADER) {
            head.cluster = Some(range(h.value));
        }
    }
    head.framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Ok(Some(head))
}

/// The size of a chunk from its line (hex digits, then any extensions).
fn chunk_size(line: &[u8]) -> Result<usize, AttemptError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(AttemptError::Connect);
    }
    let s = std::str::from_utf8(digits).map_err(|_| AttemptError::Connect)?;
    usize::from_str_radix(s, 16).map_err(|_| AttemptError::Connect)
}

/// The answer from its head and the bytes the head's ranges point into.
fn answer_of(head: &Head, bytes: &Bytes, body: Bytes) -> Answer {
    let text = |r: &Option<Range<usize>>| {
        r.as_ref()
            .and_then(|r| std::str::from_utf8(&bytes[r.clone()]).ok())
    };
    Answer {
        status: head.status,
        token: text(&head.seq).and_then(parse_token),
        retry_after: text(&head.retry_after)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs),
        cluster: head
            .cluster
            .as_ref()
            .and_then(|r| http::HeaderValue::from_maybe_shared(bytes.slice(r.clone())).ok()),
        body,
    }
}

/// Decodes `bytes` as the answers of one connection, read in pieces of
/// every size from 1 byte up to the whole, and checks what the decoder
/// promises whatever the bytes: no panic, a body never longer than the
/// input, the same answers however the bytes arrive. For the fuzz target
/// `loadgen_answer` (`fuzz/`) and the tests.
#[doc(hidden)]
pub fn check_answer_bytes(bytes: &[u8]) {
    let whole = decode_all(bytes, bytes.len().max(1));
    for piece in [1, 2, 3, 7, 64] {
        assert_eq!(decode_all(bytes, piece), whole, "piece {piece}");
    }
}

/// An answer as `decode_all` keeps it: status, body, keep-alive.
type Decoded = Result<(u16, Vec<u8>, bool), AttemptError>;

/// Status, body and keep flag of each answer decoded from `bytes` fed
/// `piece` bytes at a time, then the end of the connection; the last
/// entry is the error that ended it, if one did.
fn decode_all(bytes: &[u8], piece: usize) -> Vec<Decoded> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    loop {
        let eof = fed == bytes.len();
        match decode(&mut buf, eof) {
            Ok(Some((a, keep))) => {
                assert!(a.body.len() <= bytes.len());
                out.push(Ok((a.status, a.body.to_vec(), keep)));
                if !keep {
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
    use crate::workload::SplitMix64;

    fn one(bytes: &[u8]) -> Result<Option<(Answer, bool)>, AttemptError> {
        decode(&mut BytesMut::from(bytes), true)
    }

    #[test]
    fn a_length_framed_answer_and_its_headers() {
        let text = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 5\r\nX-Tandem-Seq: 2:17@00ff\r\nretry-after: 3\r\nx-tandem-cluster: blue,west\r\n\r\nhello";
        let mut buf = BytesMut::from(&text[..]);
        buf.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        let (a, keep) = decode(&mut buf, false).unwrap().unwrap();
        assert!(keep);
        assert_eq!(a.status, 429);
        assert_eq!(&a.body[..], b"hello");
        let t = a.token.unwrap();
        assert_eq!(
            (t.partition, t.seq, t.log.as_deref()),
            (2, 17, Some("00ff"))
        );
        assert_eq!(a.retry_after, Some(std::time::Duration::from_secs(3)));
        assert_eq!(a.cluster.unwrap(), "blue,west");
        // The next answer is left for the next request.
        let (b, keep) = decode(&mut buf, false).unwrap().unwrap();
        assert_eq!((b.status, b.body.len(), keep), (204, 0, true));
        assert!(buf.is_empty());
        // Half an answer waits for the rest; at the end it fails.
        let mut half = BytesMut::from(&text[..text.len() - 2]);
        assert!(decode(&mut half, false).unwrap().is_none());
        assert_eq!(decode(&mut half, true).unwrap_err(), AttemptError::Connect);
    }

    #[test]
    fn chunked_close_and_interim_answers() {
        let (a, keep) = one(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.status, &a.body[..], keep),
            (200, &b"abc0123456789"[..], true)
        );
        let (a, keep) = one(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nto the end")
            .unwrap()
            .unwrap();
        assert_eq!((&a.body[..], keep), (&b"to the end"[..], false));
        // Without the end of the connection, a close-framed body waits.
        let mut open = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\npart"[..]);
        assert!(decode(&mut open, false).unwrap().is_none());
        let (a, keep) = one(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap()
            .unwrap();
        assert_eq!((&a.body[..], keep), (&b"ok"[..], false));
        let (_, keep) =
            one(b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!keep);
    }

    #[test]
    fn malformed_answers_fail_the_attempt() {
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
                AttemptError::Connect,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx: "[..]);
        long.extend_from_slice(&vec![b'a'; MAX_HEAD]);
        assert_eq!(decode(&mut long, false).unwrap_err(), AttemptError::Connect);
    }

    #[test]
    fn requests_carry_their_headers() {
        let spec = RequestSpec {
            method: Method::Post,
            path: "/v1/orders".into(),
            body: Bytes::from_static(b"{}"),
            min_seq: Some("0:5".into()),
            signature: Some(("sig".into(), "99".into())),
        };
        let mut out = Vec::new();
        write_request(&mut out, &spec, "h:1");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "POST /v1/orders HTTP/1.1\r\nhost: h:1\r\ncontent-type: application/json\r\n\
             content-length: 2\r\nx-tandem-min-seq: 0:5\r\nx-tandem-signature: sig\r\n\
             x-tandem-expiry: 99\r\n\r\n{}"
        );
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
        let mut rng = SplitMix64::derive(7, 0x4831);
        for round in 0..4000 {
            let mut b = seeds[round % seeds.len()].to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(b.len() as u64 + 1) as usize;
                match rng.below(4) {
                    0 => b.truncate(at),
                    1 if at < b.len() => b[at] = rng.below(256) as u8,
                    2 => {
                        let pick = b"0123456789abcdef\r\n:; ";
                        b.insert(at, pick[rng.below(pick.len() as u64) as usize]);
                    }
                    _ => {
                        let other = seeds[rng.below(4) as usize];
                        b.extend_from_slice(&other[..rng.below(other.len() as u64) as usize]);
                    }
                }
            }
            check_answer_bytes(&b);
        }
        for s in seeds {
            check_answer_bytes(s);
            assert!(decode_all(s, 5).iter().all(Result::is_ok));
        }
    }
}
