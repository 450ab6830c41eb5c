//! The server scaffold of Tandem's node and edge, and its parts:
//!
//! - [`server`]: accept, connection limit and refusal, HTTP/1.1 + HTTP/2,
//!   per-request panic catch, early answers (`connection: close` and a
//!   lingering close), JSON on hyper's own error answers, drain. A server
//!   plugs in a [`server::Service`].
//! - [`handover`]: listening sockets bound or inherited, and passed to a
//!   successor process on SIGUSR2 without refusing a connection.
//! - [`tls`]: rustls on the listeners (certificate reload, ALPN, client
//!   certificates) and to upstreams (the edge's connector).
//! - [`h1`]: HTTP/1.1 answers decoded for the clients that drive their
//!   own connections (the load generator's, the edge's to its nodes).
//! - [`percent`]: the one percent-decoder (strict: a malformed escape is
//!   an error, answered `400` naming the field).
//! - Here: connection timing, with two rules that hyper alone does not
//!   give:
//!
//! - **Idle keep-alive.** A connection with no byte in either direction
//!   for `idle` is closed (gracefully, by the caller). `idle` is long (the
//!   node: 620 s) so that whatever pools connections in front always closes
//!   first; hyper's own `header_read_timeout` also runs while a keep-alive
//!   connection waits for its next request, which closed idle connections
//!   after 10 s, under the edge's 60 s pool: the source's keep-alive 502s.
//!   So servers turn that off and use these rules instead.
//! - **Slow request.** Once a client has sent a byte of a request, its
//!   head must be in within `request` (10 s by default), or the connection
//!   is closed: a slowloris client trickling a header cannot hold a
//!   connection, and idle connections are untouched. The server says when
//!   a head is in (`Timing::head_read`, from its service); from then until
//!   it writes the answer, the request is the handler's to bound (an edge
//!   waiting on its upstream), and bytes read meanwhile (a body) start no
//!   clock.
//!
//! The slow-request rule applies to HTTP/1 only: an HTTP/2 connection (seen
//! by its preface) multiplexes long streams (gRPC) and has its own
//! keep-alive pings.
//!
//! The scaffold's connection stream (`server`) records the times;
//! [`Timing::verdict`] says what to do.

pub mod h1;
pub mod handover;
pub mod percent;
pub mod server;
#[cfg(feature = "test-pki")]
pub mod test_pki;
pub mod tls;
mod x509;

pub use x509::{civil_from_days, days_from_civil};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Times of one connection, in milliseconds since `base`.
#[derive(Debug)]
pub struct Timing {
    base: Instant,
    /// Last byte in either direction.
    last: AtomicU64,
    /// First byte read since the server last wrote (0 = none pending).
    pending_since: AtomicU64,
    /// 0 = nothing read yet, 1 = HTTP/1, 2 = HTTP/2 (preface seen).
    protocol: std::sync::atomic::AtomicU8,
    /// A request's head is in and its answer not yet started.
    in_request: std::sync::atomic::AtomicBool,
}

/// What the rules say about a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// No byte for the idle timeout.
    Idle,
    /// A request started and was not answered in time.
    Slow,
}

impl Timing {
    pub fn new(base: Instant) -> Arc<Timing> {
        Arc::new(Timing {
            base,
            last: AtomicU64::new(Self::ms(base)),
            pending_since: AtomicU64::new(0),
            protocol: std::sync::atomic::AtomicU8::new(0),
            in_request: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn ms(base: Instant) -> u64 {
        // +1 so that 0 can mean "none".
        base.elapsed().as_millis() as u64 + 1
    }

    fn read(&self, first_bytes: &[u8]) {
        if self.protocol.load(Relaxed) == 0 {
            let h2 = first_bytes.starts_with(b"PRI * HTTP/2.0");
            self.protocol.store(if h2 { 2 } else { 1 }, Relaxed);
        }
        let now = Self::ms(self.base);
        self.last.store(now, Relaxed);
        if !self.in_request.load(Relaxed) {
            let _ = self
                .pending_since
                .compare_exchange(0, now, Relaxed, Relaxed);
        }
    }

    /// A request's head has been read (call it from the service): the
    /// slow-request clock stops until the answer is written.
    pub fn head_read(&self) {
        self.in_request.store(true, Relaxed);
        self.pending_since.store(0, Relaxed);
    }

    fn wrote(&self) {
        self.last.store(Self::ms(self.base), Relaxed);
        self.in_request.store(false, Relaxed);
        self.pending_since.store(0, Relaxed);
    }

    /// Applies the rules with these limits.
    pub fn verdict(&self, idle: Duration, request: Duration) -> Verdict {
        let now = Self::ms(self.base);
        let pending = self.pending_since.load(Relaxed);
        let http1 = self.protocol.load(Relaxed) == 1;
        if http1 && pending != 0 && now.saturating_sub(pending) >= request.as_millis() as u64 {
            return Verdict::Slow;
        }
        if now.saturating_sub(self.last.load(Relaxed)) >= idle.as_millis() as u64 {
            return Verdict::Idle;
        }
        Verdict::Keep
    }

    /// How often to apply the rules so neither is late by much.
    pub fn check_every(idle: Duration, request: Duration) -> Duration {
        (idle.min(request) / 4).max(Duration::from_millis(20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_slow_rules() {
        let base = Instant::now() - Duration::from_secs(100);
        let t = Timing::new(base);
        let (idle, req) = (Duration::from_secs(50), Duration::from_secs(10));
        assert_eq!(t.verdict(idle, req), Verdict::Keep);
        t.read(b"GET / HTTP/1.1");
        // A request byte 20 s ago, never answered: slow.
        t.pending_since.store(Timing::ms(base) - 20_000, Relaxed);
        assert_eq!(t.verdict(idle, req), Verdict::Slow);
        // Answered: nothing pending; quiet for 60 s: idle.
        t.wrote();
        t.last.store(Timing::ms(base) - 60_000, Relaxed);
        assert_eq!(t.verdict(idle, req), Verdict::Idle);
        t.read(b"GET / HTTP/1.1");
        assert_eq!(t.verdict(idle, req), Verdict::Keep);
    }

    #[test]
    fn a_request_whose_head_is_in_waits_for_its_answer_without_the_rule() {
        let base = Instant::now() - Duration::from_secs(100);
        let t = Timing::new(base);
        let (idle, req) = (Duration::from_secs(50), Duration::from_secs(10));
        t.read(b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
        t.head_read();
        // The body arrives, then the handler waits 20 s for an upstream.
        t.read(b"hello");
        t.last.store(Timing::ms(base) - 20_000, Relaxed);
        assert_eq!(t.verdict(idle, req), Verdict::Keep);
        // Answered; the next request's first byte starts the clock again.
        t.wrote();
        t.read(b"G");
        t.pending_since.store(Timing::ms(base) - 20_000, Relaxed);
        assert_eq!(t.verdict(idle, req), Verdict::Slow);
    }

    #[test]
    fn http2_connections_have_no_slow_request_rule() {
        let base = Instant::now() - Duration::from_secs(100);
        let t = Timing::new(base);
        t.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        t.pending_since.store(Timing::ms(base) - 20_000, Relaxed);
        let (idle, req) = (Duration::from_secs(50), Duration::from_secs(10));
        assert_eq!(t.verdict(idle, req), Verdict::Keep);
    }
}
