//! The server scaffold shared by the node and the edge, in the spirit of
//! Pingora's `Server` and `Service`: the scaffold owns connections, a
//! [`Service`] answers requests. [`serve`] accepts on a listener (bound or
//! inherited, see [`crate::handover`]), refuses connections over the limit
//! with the service's answer, serves HTTP/1.1 and HTTP/2 on one port with
//! the header limits, applies the idle and slow-request rules of
//! [`crate::Timing`], catches a panicking request (`500` JSON, counted by
//! the service's hook; the connection and the server carry on), and drains
//! on stop.
//!
//! Two things hyper does not do for a client that writes its whole request
//! before reading its answer (many simple clients):
//!
//! - **Early answers.** An answer given before the body was read (`413`)
//!   says `connection: close`, and a closing connection *lingers* (as
//!   nginx's lingering close): the write side is shut, and what the client
//!   still sends is read and thrown away, for at most [`LINGER_TIME`] (and
//!   [`LINGER_QUIET`] without a byte) and [`LINGER_BYTES`], before the
//!   socket closes. Closing with unread bytes makes the kernel send a
//!   reset, which destroys the answer in the client's receive buffer.
//! - **JSON on hyper's own answers.** hyper answers a request head it
//!   cannot parse or that is too large (`400`, `431`, ...) itself, with an
//!   empty body. The connection's stream sees that answer being written
//!   (an HTTP/1 head the service did not produce) and writes in its place
//!   the same status with `{"error":"..."}`, the service's headers and
//!   `connection: close`.
//!
//! Drain ([`Stop`]): the service is told (`/readyz` fails), new
//! connections are still accepted for the grace (`Stop::Drain`; none on a
//! hand-over, where the successor accepts from the same queue), then the
//! listener is dropped, idle connections are closed, in-flight requests
//! finish, and a connection accepted just before the stop gets
//! `first_request_grace` to send its first request, which is answered.
//! [`serve`] returns when every connection is closed or `drain_timeout`
//! has passed.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::tls::{PeerCert, ServerTls};
use crate::{Timing, Verdict};

/// Errors of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response a [`Service`] gives.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Longest a closing connection keeps reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(30);
/// A lingering connection closes after this long without a byte.
pub const LINGER_QUIET: Duration = Duration::from_secs(5);
/// Most bytes a lingering connection reads and throws away.
pub const LINGER_BYTES: u64 = 64 << 20;
/// The same for a connection refused over the limit (it holds no slot).
const REFUSED_LINGER: (Duration, u64) = (Duration::from_secs(2), 1 << 20);

/// The limits and timings of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more are refused with the service's
    /// `503` (a lingering connection still counts).
    pub max_connections: usize,
    /// Largest request head (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// A connection without a byte in either direction this long closes.
    pub idle: Duration,
    /// An HTTP/1 request head must be in this long after its first byte.
    pub request_head: Duration,
    pub h2_keepalive_interval: Option<Duration>,
    pub h2_keepalive_timeout: Duration,
    /// `Stop::Drain` keeps accepting this long (balancers move away).
    pub drain_grace: Duration,
    /// In-flight requests get at most this long after accepting stops.
    pub drain_timeout: Duration,
    /// A connection accepted before the stop may send its first request
    /// this long after it (it is answered, then closed).
    pub first_request_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            idle: Duration::from_secs(620),
            request_head: Duration::from_secs(10),
            h2_keepalive_interval: Some(Duration::from_secs(30)),
            h2_keepalive_timeout: Duration::from_secs(20),
            drain_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(20),
            first_request_grace: Duration::from_secs(2),
        }
    }
}

/// What a server plugs into the scaffold: its handler and its hooks.
pub trait Service: Send + Sync + 'static {
    /// Answers one request. A panic in it (or in the future) is caught:
    /// the client gets `500` and [`Service::panicked`] is called.
    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<BoxBody>> + Send + 'static;

    /// Headers every answer carries; added to the answers the scaffold
    /// writes itself (refusal, panic, hyper's own errors).
    fn answer_headers(&self, _headers: &mut HeaderMap) {}

    /// The `error` of the `503` to a connection over the limit.
    fn refusal(&self) -> String {
        "connections: this server is at its connection limit; retry on another".into()
    }

    /// A request panicked (it was answered `500`).
    fn panicked(&self) {}
    fn connection_opened(&self) {}
    fn connection_closed(&self) {}
    fn connection_refused(&self) {}
    /// A TLS handshake failed or timed out (the connection was closed).
    fn tls_handshake_failed(&self) {}
    /// The drain started (`open` connections): stop saying ready.
    fn draining(&self, _open: usize) {}
    /// May this accept loop take the next connection now? `false` leaves
    /// it queued for another loop accepting from the same socket (the
    /// edge's worker threads balance their connections so); the question
    /// is asked again after [`ACCEPT_DEFERRED`].
    fn may_accept(&self) -> bool {
        true
    }
}

/// How long an accept loop whose service said no (`may_accept`) waits
/// before it asks again.
pub const ACCEPT_DEFERRED: Duration = Duration::from_millis(1);

/// Why [`serve`] stops accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Shutting down: keep accepting for `drain_grace`, then drain.
    Drain,
    /// A successor serves the same sockets: stop accepting at once, drain.
    HandOver,
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Every connection closed within `drain_timeout`.
    pub clean: bool,
    /// Connections still open at the end.
    pub open: usize,
}

/// A share of a connection's slot, in the extensions of each request that
/// may take its connection over (`upgrade`, `CONNECT`): whoever keeps it
/// (a WebSocket stream after its upgrade) keeps the connection counted
/// against the limit and waited for by the drain. The stream of an
/// upgraded connection holds one too, so keeping it is optional.
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<dyn Any + Send + Sync>);

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnSlot")
    }
}

/// Open connections, and a wake-up when the last one closes.
#[derive(Default)]
struct Open {
    n: AtomicUsize,
    zero: Notify,
}

struct OpenGuard<S: Service> {
    open: Arc<Open>,
    svc: Arc<S>,
}

impl<S: Service> Drop for OpenGuard<S> {
    fn drop(&mut self) {
        self.svc.connection_closed();
        if self.open.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.open.zero.notify_waiters();
        }
    }
}

/// `{"error":"..."}` with `msg` escaped.
pub fn error_json(msg: &str) -> String {
    let mut s = String::with_capacity(msg.len() + 12);
    s.push_str("{\"error\":\"");
    for c in msg.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push_str("\"}");
    s
}

/// A JSON error answer with the service's headers.
pub fn error_response<S: Service + ?Sized>(
    svc: &S,
    status: StatusCode,
    msg: &str,
) -> Response<BoxBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(error_json(msg)))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    svc.answer_headers(h);
    r
}

/// The bytes of a whole HTTP/1.1 JSON error answer that closes the
/// connection.
fn raw_error<S: Service + ?Sized>(svc: &S, status: StatusCode, msg: &str, extra: &str) -> Vec<u8> {
    let body = error_json(msg);
    let mut h = HeaderMap::new();
    svc.answer_headers(&mut h);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n{extra}connection: close\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    for (k, v) in &h {
        if k == CONNECTION || k == CONTENT_LENGTH || k == CONTENT_TYPE {
            continue;
        }
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The `error` for an answer hyper made itself.
fn hyper_error_message(status: u16, max_header_bytes: usize) -> String {
    match status {
        431 => format!(
            "headers: the request head is larger than {max_header_bytes} bytes or has too many fields"
        ),
        414 => "uri: too long".into(),
        400 => "request: malformed HTTP request head".into(),
        505 => "version: HTTP version not supported".into(),
        501 => "transfer-encoding: not supported".into(),
        s => format!("request: refused by the HTTP layer ({s})"),
    }
}

/// Whether the request says it has a body.
fn declares_body<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(TRANSFER_ENCODING)
        || req
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// State of one connection shared by its stream and its request wrapper.
struct ConnState {
    timing: Arc<Timing>,
    /// Answers the service produced (HTTP/1 heads hyper then writes).
    answers: AtomicU64,
    /// The client may still be sending what nobody read (an early answer,
    /// hyper's own error): linger when closing. Cleared for a slowloris.
    linger: AtomicBool,
    /// Renders the JSON answer that replaces one hyper made itself.
    render: Box<dyn Fn(StatusCode) -> Vec<u8> + Send + Sync>,
}

/// A replacement answer being written in place of hyper's.
struct Rewrite {
    bytes: Vec<u8>,
    at: usize,
    /// The length of hyper's answer, reported written once ours is.
    replaces: usize,
}

/// An accepted connection, in plaintext or after its TLS handshake.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The stream of a served connection: times bytes for the rules, puts the
/// JSON answer in place of hyper's own, holds the connection's slot, and
/// lingers when dropped.
struct ConnIo {
    stream: Option<Stream>,
    state: Arc<ConnState>,
    slot: Option<ConnSlot>,
    heads: u64,
    rewrite: Option<Rewrite>,
    eof: bool,
}

impl ConnIo {
    fn stream(&mut self) -> Pin<&mut Stream> {
        Pin::new(self.stream.as_mut().expect("stream present until drop"))
    }

    /// Looks at the start of a write: a response head hyper made itself
    /// (an HTTP/1 error answer with no body while no answer of the service
    /// is due) starts a rewrite.
    fn intercept(&mut self, first: &[u8]) {
        if self.state.timing.protocol.load(Ordering::Relaxed) != 1
            || !(first.starts_with(b"HTTP/1.1 ") || first.starts_with(b"HTTP/1.0 "))
            || first.len() < 12
        {
            return;
        }
        let Some(status) = std::str::from_utf8(&first[9..12])
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
        else {
            return;
        };
        if status == 100 {
            return;
        }
        if self.heads < self.state.answers.load(Ordering::Acquire) {
            self.heads += 1;
            return;
        }
        let head_only = first.ends_with(b"\r\n\r\n")
            && first.windows(4).filter(|w| w == b"\r\n\r\n").count() == 1;
        let lower = first.to_ascii_lowercase();
        let empty = lower.windows(19).any(|w| w == b"content-length: 0\r\n");
        if status >= 400 && head_only && empty {
            if let Ok(status) = StatusCode::from_u16(status) {
                self.state.linger.store(true, Ordering::Release);
                self.rewrite = Some(Rewrite {
                    bytes: (self.state.render)(status),
                    at: 0,
                    replaces: first.len(),
                });
            }
        }
    }

    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            let ConnIo {
                stream, rewrite, ..
            } = self;
            let rw = rewrite.as_mut().expect("rewrite in progress");
            if rw.at == rw.bytes.len() {
                let n = rw.replaces;
                self.rewrite = None;
                self.state.timing.wrote();
                return Poll::Ready(Ok(n));
            }
            let stream = Pin::new(stream.as_mut().expect("stream present until drop"));
            match stream.poll_write(cx, &rw.bytes[rw.at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => rw.at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = self.stream().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if buf.filled().len() > before {
                self.state.timing.read(&buf.filled()[before..]);
            } else if buf.remaining() > 0 {
                self.eof = true;
            }
        }
        r
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.rewrite.is_none() {
            self.intercept(buf);
        }
        if self.rewrite.is_some() {
            return self.poll_rewrite(cx);
        }
        let r = self.stream().poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.timing.wrote();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.rewrite.is_none() {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                // The head is always the first slice hyper queues.
                self.intercept(first);
            }
        }
        if self.rewrite.is_some() {
            return self.poll_rewrite(cx);
        }
        let r = self.stream().poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.timing.wrote();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.eof || !self.state.linger.load(Ordering::Acquire) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let slot = self.slot.take();
            rt.spawn(linger(stream, LINGER_TIME, LINGER_BYTES, slot));
        }
    }
}

/// Shuts the write side and reads (and throws away) what the client still
/// sends, within bounds, so that closing sends no reset over an answer the
/// client has not read yet.
async fn linger(mut stream: Stream, time: Duration, bytes: u64, slot: Option<ConnSlot>) {
    let _slot = slot;
    let _ = stream.shutdown().await;
    let end = tokio::time::Instant::now() + time;
    let mut buf = vec![0u8; 16 << 10];
    let mut total = 0u64;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match tokio::time::timeout(left.min(LINGER_QUIET), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                total += n as u64;
                if total >= bytes {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// What every accepted connection of one listener needs.
struct Shared<S: Service> {
    svc: Arc<S>,
    limits: Limits,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    open: Arc<Open>,
    closing: watch::Receiver<bool>,
    base: Instant,
    tls: Option<Arc<ServerTls>>,
}

impl<S: Service> Shared<S> {
    fn new(
        svc: Arc<S>,
        limits: Limits,
        closing: watch::Receiver<bool>,
        tls: Option<Arc<ServerTls>>,
    ) -> Self {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // hyper's header timeout also runs while a keep-alive
            // connection waits for its next request; the slow-request rule
            // of `Timing` takes its place.
            .header_read_timeout(None)
            .max_buf_size(limits.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.h2_keepalive_interval)
            .keep_alive_timeout(limits.h2_keepalive_timeout)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Shared {
            svc,
            limits,
            builder,
            open: Arc::new(Open::default()),
            closing,
            base: Instant::now(),
            tls,
        }
    }

    /// Serves one accepted connection on its own task, or refuses it.
    fn accept(self: &Arc<Self>, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        if self.open.n.load(Ordering::Acquire) >= self.limits.max_connections {
            self.svc.connection_refused();
            let bytes = raw_error(
                &*self.svc,
                StatusCode::SERVICE_UNAVAILABLE,
                &self.svc.refusal(),
                "retry-after: 1\r\n",
            );
            let (tls, handshake) = (self.tls.clone(), self.limits.request_head);
            tokio::spawn(async move {
                let Some((mut stream, _)) = handshake_with(tls, stream, handshake).await else {
                    return;
                };
                if stream.write_all(&bytes).await.is_ok() {
                    linger(stream, REFUSED_LINGER.0, REFUSED_LINGER.1, None).await;
                }
            });
            return;
        }
        self.open.n.fetch_add(1, Ordering::AcqRel);
        self.svc.connection_opened();
        let slot = ConnSlot(Arc::new(OpenGuard {
            open: Arc::clone(&self.open),
            svc: Arc::clone(&self.svc),
        }));
        let shared = Arc::clone(self);
        tokio::spawn(async move { shared.connection(stream, slot).await });
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, slot: ConnSlot) {
        // The handshake has the request-head time: a client that opens a
        // connection and says nothing holds a slot no longer.
        let Some((stream, peer)) =
            handshake_with(self.tls.clone(), stream, self.limits.request_head).await
        else {
            self.svc.tls_handshake_failed();
            return;
        };
        let timing = Timing::new(self.base);
        let render = {
            let (svc, max) = (Arc::clone(&self.svc), self.limits.max_header_bytes);
            Box::new(move |status: StatusCode| {
                raw_error(
                    &*svc,
                    status,
                    &hyper_error_message(status.as_u16(), max),
                    "",
                )
            })
        };
        let state = Arc::new(ConnState {
            timing: Arc::clone(&timing),
            answers: AtomicU64::new(0),
            linger: AtomicBool::new(false),
            render,
        });
        let io = ConnIo {
            stream: Some(stream),
            state: Arc::clone(&state),
            slot: Some(slot.clone()),
            heads: 0,
            rewrite: None,
            eof: false,
        };
        // Set (and notified) once the connection's first request arrives.
        let first = Arc::new(Notify::new());
        let seen = Arc::new(AtomicBool::new(false));
        let svc = {
            let (first, seen, state) = (Arc::clone(&first), Arc::clone(&seen), Arc::clone(&state));
            let svc = Arc::clone(&self.svc);
            hyper::service::service_fn(move |mut req: Request<Incoming>| {
                state.timing.head_read();
                if !seen.swap(true, Ordering::AcqRel) {
                    first.notify_one();
                }
                // Only a request that may take the connection over needs
                // the slot (a first insert allocates the extensions' map,
                // which every plain request then paid for).
                if req.method() == http::Method::CONNECT
                    || req.headers().contains_key(http::header::UPGRADE)
                {
                    req.extensions_mut().insert(slot.clone());
                }
                if let Some(p) = &peer {
                    req.extensions_mut().insert(p.clone());
                }
                let (svc, state) = (Arc::clone(&svc), Arc::clone(&state));
                async move {
                    let resp = answer(svc, req, &state).await;
                    state.answers.fetch_add(1, Ordering::AcqRel);
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let (idle, request) = (self.limits.idle, self.limits.request_head);
        let mut closing = self.closing.clone();
        let grace = self.limits.first_request_grace;
        // A connection accepted just before the stop may not have had its
        // request read yet; shutting it down at once would close it
        // unanswered, which a hand-over must never do. So it gets a grace
        // to send its first request, answered with `connection: close`.
        let shut = async {
            let _ = closing.wait_for(|c| *c).await;
            if !seen.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(grace, first.notified()).await;
            }
        };
        tokio::pin!(shut);
        let mut tick = tokio::time::interval(Timing::check_every(idle, request));
        let mut closed = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = &mut shut, if !closed => {
                    closed = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tick.tick() => match timing.verdict(idle, request) {
                    Verdict::Keep => {}
                    // Idle: close between requests, as a keep-alive
                    // timeout does.
                    Verdict::Idle if !closed => {
                        closed = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Verdict::Idle => {}
                    // A request trickling in (slowloris): drop it, no linger.
                    Verdict::Slow => {
                        state.linger.store(false, Ordering::Release);
                        return;
                    }
                },
            }
        }
    }
}

/// The TLS handshake of an accepted connection when the listener has TLS
/// (bounded by `timeout`), with the client's certificate if it gave one;
/// `None` when the handshake failed (the connection is dropped).
async fn handshake_with(
    tls: Option<Arc<ServerTls>>,
    tcp: TcpStream,
    timeout: Duration,
) -> Option<(Stream, Option<PeerCert>)> {
    let Some(tls) = tls else {
        return Some((Stream::Plain(tcp), None));
    };
    let accept = tls.acceptor().accept(tcp);
    let stream = tokio::time::timeout(timeout, accept).await.ok()?.ok()?;
    let peer = crate::tls::peer_cert(stream.get_ref().1);
    Some((Stream::Tls(Box::new(stream)), peer))
}

/// The service's answer, a `500` if it panicked, and `connection: close`
/// on an early answer.
async fn answer<S: Service>(
    svc: Arc<S>,
    req: Request<Incoming>,
    state: &ConnState,
) -> Response<BoxBody> {
    let http1 = req.version() < Version::HTTP_2;
    let body = declares_body(&req);
    let call = {
        let svc = Arc::clone(&svc);
        async move { svc.call(req).await }
    };
    let mut resp = match AssertUnwindSafe(call).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            svc.panicked();
            error_response(
                &*svc,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal: the request's handler failed; the server carries on",
            )
        }
    };
    if http1 && body && resp.status().as_u16() >= 400 {
        state.linger.store(true, Ordering::Release);
        if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
            // The body was not read: the connection cannot carry another
            // request, and the client must be told before it sends one.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        } else {
            // Another early answer may have left the body unread: let
            // hyper see that first, so its head says `connection: close`.
            tokio::task::yield_now().await;
        }
    }
    resp
}

/// Serves `listener` with `svc` until `stop` resolves, then drains (see
/// the module doc) and says how the drain ended.
pub async fn serve<S: Service>(
    listener: TcpListener,
    svc: Arc<S>,
    limits: Limits,
    stop: impl Future<Output = Stop>,
) -> Drained {
    serve_tls(listener, svc, limits, None, stop).await
}

/// [`serve`] with TLS when `tls` is given: each accepted connection does
/// its handshake first (within `limits.request_head`; a failed one is
/// closed), with the config current at that moment, so a
/// [`ServerTls::reload`] reaches new connections only. ALPN picks HTTP/2
/// or HTTP/1.1; a client certificate, when the listener requires one, is
/// in each request's extensions as a [`PeerCert`].
pub async fn serve_tls<S: Service>(
    listener: TcpListener,
    svc: Arc<S>,
    limits: Limits,
    tls: Option<Arc<ServerTls>>,
    stop: impl Future<Output = Stop>,
) -> Drained {
    let (closing_tx, closing_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(svc, limits, closing_rx, tls));
    tokio::pin!(stop);
    let how = loop {
        if !shared.svc.may_accept() {
            tokio::select! {
                how = &mut stop => break how,
                _ = tokio::time::sleep(ACCEPT_DEFERRED) => continue,
            }
        }
        tokio::select! {
            how = &mut stop => break how,
            r = listener.accept() => match r {
                Ok((s, _)) => shared.accept(s),
                // Out of descriptors and the like: back off, keep going.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    };
    shared.svc.draining(shared.open.n.load(Ordering::Acquire));
    if how == Stop::Drain && !shared.limits.drain_grace.is_zero() {
        // Balancers still route here until they see /readyz fail.
        let end = tokio::time::Instant::now() + shared.limits.drain_grace;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => break,
                r = listener.accept() => if let Ok((s, _)) = r {
                    shared.accept(s);
                },
            }
        }
    }
    // On a hand-over the successor holds the same socket: closing ours
    // closes nothing the clients see.
    drop(listener);
    let _ = closing_tx.send(true);
    let open = &shared.open;
    let clean = tokio::time::timeout(shared.limits.drain_timeout, async {
        loop {
            let wait = open.zero.notified();
            if open.n.load(Ordering::Acquire) == 0 {
                break;
            }
            wait.await;
        }
    })
    .await
    .is_ok();
    Drained {
        clean,
        open: open.n.load(Ordering::Acquire),
    }
}
