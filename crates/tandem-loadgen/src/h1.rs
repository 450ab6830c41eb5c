//! The HTTP/1.1 client connection of the load: one request at a time on a
//! keep-alive TCP connection, driven by the task that sends the request.
//!
//! hyper's client runs each connection as a task of its own and hands
//! every request and answer across a channel to it: two task switches a
//! request, which cost the load generator more CPU than the node spends on
//! a `GET /healthz`. Here the request is written in one buffer by the
//! caller and the answer is decoded in place by `tandem_conn::h1` (shared
//! with the edge's connections to its nodes): the body and the
//! `x-tandem-cluster` value are slices of the bytes read, not copies. A
//! malformed or oversized answer fails the attempt, as a dropped
//! connection does.

use std::io::Write as _;
use std::net::SocketAddr;

use bytes::BytesMut;
use tandem_conn::h1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{parse_token, Answer, AttemptError, Target};
use crate::workload::{Method, RequestSpec};

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
/// out (`tandem_conn::h1::decode`): `Ok(None)` while more bytes are
/// needed, with `eof` saying that no more will come. The flag says
/// whether the connection may carry another request.
pub(crate) fn decode(
    buf: &mut BytesMut,
    eof: bool,
) -> Result<Option<(Answer, bool)>, AttemptError> {
    let Some(a) = h1::decode(buf, eof, false).map_err(|_| AttemptError::Connect)? else {
        return Ok(None);
    };
    let (seq, retry) = (a.header("x-tandem-seq"), a.header("retry-after"));
    fn text(v: &Option<bytes::Bytes>) -> Option<&str> {
        v.as_deref().and_then(|v| std::str::from_utf8(v).ok())
    }
    let answer = Answer {
        status: a.status,
        token: text(&seq).and_then(parse_token),
        retry_after: text(&retry)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs),
        cluster: a
            .header(crate::samples::CLUSTER_HEADER)
            .and_then(|v| http::HeaderValue::from_maybe_shared(v).ok()),
        body: a.body.clone(),
    };
    Ok(Some((answer, a.keep_alive)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
    fn a_malformed_answer_fails_the_attempt() {
        assert_eq!(one(b"garbage\r\n\r\n").unwrap_err(), AttemptError::Connect);
        let mut long = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx: "[..]);
        long.extend_from_slice(&vec![b'a'; h1::MAX_HEAD]);
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
}
