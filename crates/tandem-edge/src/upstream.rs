//! HTTP/1.1 keep-alive connections to the nodes for buffered requests,
//! read and written by the task of the request that uses them.
//!
//! A request takes an idle connection of its node (or opens one), writes
//! its head and body in one buffer, and reads the answer whole on its own
//! task; the answer is decoded in place by `tandem_conn::h1` (shared with
//! the load generator), its header values and body slices of the bytes
//! read. Once the answer is in, the connection goes back to its node's
//! idle list. hyper's client, used before, ran a dispatcher per
//! connection with a callback channel for the answer and a body channel
//! behind it: its share of the edge's CPU was about a fifth of the user
//! space a proxied request costs. Nothing polls an idle connection: one
//! the node closed (or that carries bytes nobody asked for) is found so
//! when it is taken, and dropped; one idle longer than
//! `upstream.pool_idle_secs` (below the nodes' idle timeout, so the edge
//! never sends on a connection the node is closing) is dropped unused.
//!
//! What an attempt's failure means is kept as the pooled client reported
//! it: a failed connect (or TLS handshake) is [`SendError::Connect`], the
//! request never reached the node; a reused connection that refused the
//! request before a byte of it was written is given up for a new one;
//! anything else (the connection broke, or the answer was malformed or
//! larger than `tandem_conn::h1::MAX_BODY`) is [`SendError::Dropped`].

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::Full;
use tandem_conn::h1;
use tandem_conn::tls::{Connector, MaybeTls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tower_service::Service;

use crate::table::lock;

/// Bytes asked of the socket at a time (a node's answer is a few hundred).
const READ_CHUNK: usize = 8 * 1024;

/// One connection to a node with its read buffer (bytes read past the
/// last answer: none, or the connection is not reused) and the buffer
/// its requests are written from. Held boxed ([`Held`]) so that taking
/// and returning it moves a pointer.
struct Conn {
    io: MaybeTls,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
}

impl Conn {
    /// One look at an idle connection, without waiting: false when the
    /// node closed it, it failed, or it carries bytes nobody asked for
    /// (a `408` before a close).
    async fn usable(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        poll_fn(|cx| {
            let mut probe = [0u8; 1];
            let mut buf = ReadBuf::new(&mut probe);
            Poll::Ready(Pin::new(&mut self.io).poll_read(cx, &mut buf).is_pending())
        })
        .await
    }
}

/// Idle lists per node: one per worker thread (`spawn_workers`), so a
/// connection stays with the runtime whose reactor it is registered with.
/// Threads that are not workers (tests, an embedding runtime) use the
/// first; more workers than lists share them, which works, a little
/// slower.
const SLOTS: usize = 64;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as worker `i` (its connections to the nodes go to
/// list `i`).
pub fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i % SLOTS));
}

/// One worker's idle connections to a node, each with the time it went
/// idle, most recently used last.
type Slot = Mutex<Vec<(Held, Instant)>>;

/// A connection as the pool and the requests hold it.
type Held = Box<Conn>;

/// The idle connections of one node, per worker.
pub struct Pool {
    slots: Box<[Slot]>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            slots: (0..SLOTS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("idle", &self.idle()).finish()
    }
}

impl Pool {
    fn mine(&self) -> &Slot {
        &self.slots[WORKER.with(std::cell::Cell::get)]
    }

    /// Idle connections now, every worker's.
    pub fn idle(&self) -> usize {
        self.slots.iter().map(|s| lock(s).len()).sum()
    }

    /// Drops the connections idle longer than `max_idle`, every worker's.
    pub fn prune(&self, max_idle: Duration) {
        for slot in self.slots.iter() {
            prune(slot, max_idle);
        }
    }

    fn take(&self, max_idle: Duration) -> Option<Held> {
        let slot = self.mine();
        let now = Instant::now();
        loop {
            let (conn, at) = lock(slot).pop()?;
            // The newest is idle the shortest; if even it is too old, so
            // is every other.
            if now.duration_since(at) < max_idle {
                return Some(conn);
            }
            prune(slot, max_idle);
        }
    }

    fn put(&self, conn: Held, max: usize) {
        let mut idle = lock(self.mine());
        if idle.len() < max {
            idle.push((conn, Instant::now()));
        }
    }
}

fn prune(slot: &Slot, max_idle: Duration) {
    let now = Instant::now();
    // Dropped outside the lock: closing a socket is a system call.
    let expired: Vec<(Held, Instant)> = {
        let mut idle = lock(slot);
        let keep = idle
            .iter()
            .position(|(_, at)| now.duration_since(*at) < max_idle)
            .unwrap_or(idle.len());
        idle.drain(..keep).collect()
    };
    drop(expired);
}

/// Why an attempt got no answer.
#[derive(Debug)]
pub enum SendError {
    /// The connection (or its TLS handshake) failed: nothing reached the
    /// node.
    Connect,
    /// The connection broke after the request may have reached the node.
    Dropped,
}

/// How connections to the nodes are made and kept.
#[derive(Debug, Clone)]
pub struct Upstreams {
    connector: Connector,
    max_idle: Duration,
    max_idle_per_node: usize,
}

/// What one attempt sends: the method, the path and query (origin form),
/// the headers less hop-by-hop, the node's `host`, and the body.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub host: &'a HeaderValue,
    pub body: &'a Bytes,
}

impl Upstreams {
    pub fn new(connector: Connector, max_idle: Duration, max_idle_per_node: usize) -> Upstreams {
        Upstreams {
            connector,
            max_idle,
            max_idle_per_node,
        }
    }

    /// How long a connection may stay idle.
    pub fn max_idle(&self) -> Duration {
        self.max_idle
    }

    async fn connect(&self, authority: &Uri) -> Result<Held, SendError> {
        let io = self
            .connector
            .clone()
            .call(authority.clone())
            .await
            .map_err(|_| SendError::Connect)?;
        Ok(Box::new(Conn {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::with_capacity(1024),
        }))
    }

    /// An idle connection of `pool` that is still open and clean.
    async fn idle(&self, pool: &Pool) -> Option<Held> {
        loop {
            let mut c = pool.take(self.max_idle)?;
            if c.usable().await {
                return Some(c);
            }
        }
    }

    /// Sends `req` to the node at `authority` (`http://host:port`) over a
    /// pooled connection of `node`, or a new one, and reads its answer
    /// whole; the connection then goes back to `node`'s idle list if the
    /// answer leaves it reusable.
    pub async fn send(
        &self,
        node: &std::sync::Arc<crate::table::NodeState>,
        authority: &Uri,
        req: Outgoing<'_>,
    ) -> Result<Response<Full<Bytes>>, SendError> {
        let mut c = loop {
            let (mut c, fresh) = match self.idle(&node.pool).await {
                Some(c) => (c, false),
                None => (self.connect(authority).await?, true),
            };
            write_request(&mut c.wbuf, &req);
            match c.io.write(&c.wbuf).await {
                Ok(n) if n > 0 => {
                    if n < c.wbuf.len() {
                        c.io.write_all(&c.wbuf[n..])
                            .await
                            .map_err(|_| SendError::Dropped)?;
                    }
                    // TLS may hold records back when the socket is full;
                    // plain TCP has nothing to flush.
                    c.io.flush().await.map_err(|_| SendError::Dropped)?;
                    break c;
                }
                // Refused before a byte was written: a reused connection
                // the node had closed. Once more, on another.
                _ if !fresh => continue,
                _ => return Err(SendError::Connect),
            }
        };
        let head_request = req.method == Method::HEAD;
        let mut eof = false;
        let answer = loop {
            match h1::decode(&mut c.rbuf, eof, head_request) {
                Ok(Some(a)) => break a,
                Ok(None) if !eof => {}
                Ok(None) | Err(_) => return Err(SendError::Dropped),
            }
            c.rbuf.reserve(READ_CHUNK);
            let n =
                c.io.read_buf(&mut c.rbuf)
                    .await
                    .map_err(|_| SendError::Dropped)?;
            eof = n == 0;
        };
        let resp = response(&answer)?;
        if answer.keep_alive && !eof && c.rbuf.is_empty() {
            node.pool.put(c, self.max_idle_per_node);
        }
        Ok(resp)
    }
}

/// The answer as the edge passes it on: status, the headers less
/// hop-by-hop, the body.
fn response(a: &h1::Answer) -> Result<Response<Full<Bytes>>, SendError> {
    let mut resp = Response::new(Full::new(a.body.clone()));
    *resp.status_mut() = StatusCode::from_u16(a.status).map_err(|_| SendError::Dropped)?;
    let headers = resp.headers_mut();
    for (name, value) in a.headers() {
        let name = HeaderName::from_bytes(name).map_err(|_| SendError::Dropped)?;
        // The node's connection headers are not the client's (the same
        // list the request goes without).
        if crate::proxy::is_hop_by_hop(&name) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| SendError::Dropped)?;
        headers.append(name, value);
    }
    Ok(resp)
}

/// Writes the request line, `host`, the headers, `content-length` and the
/// body of `req` into `out`.
fn write_request(out: &mut Vec<u8>, req: &Outgoing<'_>) {
    out.clear();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(req.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in req.headers {
        if name == header::HOST || name == header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // As hyper's client: a body's length, and 0 for the methods that
    // carry one even when it is empty.
    let body_method = matches!(*req.method, Method::POST | Method::PUT | Method::PATCH);
    if !req.body.is_empty() || body_method {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(req.body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_written_whole_with_its_length_and_the_nodes_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("edge.example"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let host = HeaderValue::from_static("10.0.0.1:8080");
        let body = Bytes::from_static(b"{}");
        let mut out = Vec::new();
        let post = Outgoing {
            method: &Method::POST,
            path: "/v1/orders?x=1",
            headers: &headers,
            host: &host,
            body: &body,
        };
        write_request(&mut out, &post);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "POST /v1/orders?x=1 HTTP/1.1\r\nhost: 10.0.0.1:8080\r\nx-a: 1\r\nx-a: 2\r\n\
             content-length: 2\r\n\r\n{}"
        );
        let empty = Bytes::new();
        let get = Outgoing {
            method: &Method::GET,
            path: "/readyz",
            body: &empty,
            ..post
        };
        write_request(&mut out, &get);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "GET /readyz HTTP/1.1\r\nhost: 10.0.0.1:8080\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        let put = Outgoing {
            method: &Method::PUT,
            ..get
        };
        write_request(&mut out, &put);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("content-length: 0\r\n\r\n"));
    }

    #[test]
    fn an_answer_keeps_its_headers_but_the_hop_by_hop_ones() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nConnection: keep-alive\r\nx-tandem-seq: 0:7\r\n\
               transfer-encoding: chunked\r\nset-cookie: a\r\nset-cookie: b\r\n\r\n\
               2\r\nok\r\n0\r\n\r\n"[..],
        );
        let a = h1::decode(&mut buf, false, false).unwrap().unwrap();
        let resp = response(&a).unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let names: Vec<&str> = resp.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-tandem-seq", "set-cookie"]);
        assert_eq!(resp.headers().get_all("set-cookie").iter().count(), 2);
        assert_eq!(&a.body[..], b"ok");
        assert_eq!(hyper::body::Body::size_hint(resp.body()).exact(), Some(2));
    }
}
