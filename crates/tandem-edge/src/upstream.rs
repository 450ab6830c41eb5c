//! HTTP/1.1 keep-alive connections to the nodes for buffered requests,
//! driven on the task of the request that uses them.
//!
//! hyper-util's pooled client runs each upstream connection on a task of
//! its own and hands every request to it over a channel and every answer
//! back over another, so a proxied request woke three tasks and crossed
//! two channels (and often the other runtime thread). Here a request takes
//! an idle connection of its node (or opens one), polls the connection
//! itself until the answer's head is in, and the answer's body keeps
//! polling it while the client's connection reads the body; once the body
//! has ended the connection goes back to its node's idle list. Nothing
//! else polls an idle connection: one the node closed is found closed when
//! it is taken (it is dropped and another taken), and one idle longer than
//! `upstream.pool_idle_secs` (below the nodes' idle timeout, so the edge
//! never sends on a connection the node is closing) is dropped unused.
//!
//! What an attempt's failure means is kept as the pooled client reported
//! it: a failed connect (or TLS handshake) is [`SendError::Connect`], the
//! request never reached the node; a request a reused connection refused
//! before writing a byte of it is sent again on a new connection, as
//! hyper-util does; anything else is [`SendError::Dropped`].

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use tandem_conn::tls::{Connector, MaybeTls};
use tower_service::Service;

use crate::table::lock;

/// One connection to a node: the request side and the connection future,
/// polled by whoever holds it. Held boxed ([`Held`]): hyper's connection
/// state is several hundred bytes, and it moves at every take and return
/// and with the request's future; a box moves as a pointer.
struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
    /// `None` once it has closed or failed: dropping it fails what is
    /// still queued on `send` at once, instead of leaving it waiting.
    conn: Option<http1::Connection<MaybeTls, Full<Bytes>>>,
}

impl Conn {
    /// Polls the connection once: false when it has closed or failed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        if Pin::new(conn).poll(cx).is_ready() {
            self.conn = None;
            return false;
        }
        true
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
        let (send, conn) = http1::handshake(io).await.map_err(|_| SendError::Connect)?;
        Ok(Box::new(Conn {
            send,
            conn: Some(conn),
        }))
    }

    /// An idle connection of `pool` that is open and ready for a request.
    async fn idle(&self, pool: &Pool) -> Option<Held> {
        loop {
            let mut c = pool.take(self.max_idle)?;
            // One poll of the connection (it reads the node's close, if
            // any) and of its readiness; anything but ready is dropped.
            let ready = poll_fn(|cx| {
                let open = c.drive(cx);
                Poll::Ready(open && matches!(c.send.poll_ready(cx), Poll::Ready(Ok(()))))
            })
            .await;
            if ready {
                return Some(c);
            }
        }
    }

    /// Sends `req` (origin-form URI, `host` set) to the node at
    /// `authority` (`http://host:port`) over a pooled connection of
    /// `pool`, or a new one. The answer's body returns the connection to
    /// `pool` once it has ended.
    pub async fn send(
        &self,
        pool: &std::sync::Arc<crate::table::NodeState>,
        authority: &Uri,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut reused = self.idle(&pool.pool).await;
        loop {
            let fresh = reused.is_none();
            let mut c = match reused.take() {
                Some(c) => c,
                None => self.connect(authority).await?,
            };
            let sent = {
                let mut answer = std::pin::pin!(c.send.try_send_request(req));
                poll_fn(|cx| {
                    c.drive(cx);
                    answer.as_mut().poll(cx)
                })
                .await
            };
            match sent {
                Ok(resp) => {
                    let max = self.max_idle_per_node;
                    let pool = std::sync::Arc::clone(pool);
                    return Ok(resp.map(|body| PooledBody {
                        body,
                        conn: Some(c),
                        pool,
                        max,
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Refused before a byte was written: a reused
                    // connection the node had closed. Once more, new.
                    Some(r) if !fresh => {
                        req = r;
                        reused = self.idle(&pool.pool).await;
                        if reused.is_none() {
                            continue;
                        }
                    }
                    Some(_) => return Err(SendError::Connect),
                    None => return Err(SendError::Dropped),
                },
            }
        }
    }
}

/// The body of a node's answer: reading it drives the connection it
/// comes over, which goes back to the node's idle list when the body has
/// ended (and is closed when the body fails or is dropped unfinished).
pub struct PooledBody {
    body: Incoming,
    conn: Option<Held>,
    pool: std::sync::Arc<crate::table::NodeState>,
    max: usize,
}

impl fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBody")
            .field("pooled", &self.conn.is_some())
            .finish()
    }
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.pool.put(c, self.max);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(c) = &mut this.conn {
            if !c.drive(cx) {
                // Closed (`connection: close`, or the node went away):
                // what it read is in the body; it is not kept.
                this.conn = None;
            }
        }
        let r = Pin::new(&mut this.body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    /// A body read to its end that the server did not poll once more
    /// (it saw `is_end_stream`) still gives its connection back.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
