//! A small std-only TCP proxy between Kafka clients and one broker that
//! loses acknowledgements: for a chosen fraction of Produce requests it
//! forwards the request, and when the broker's response to it (same
//! correlation id) comes back it swallows the response and closes both
//! sockets, so the client sees its connection drop with the request in
//! flight while the broker has stored the batch.
//!
//! It parses only Kafka's framing: a 4-byte big-endian size, then for a
//! request `api_key i16, api_version i16, correlation_id i32, ...` and for
//! a response `correlation_id i32, ...`. Everything is forwarded verbatim.
//! The broker must advertise the proxy's address in its metadata (tansu's
//! `--advertised-listener-url`), or clients would bypass it.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Kafka's Produce API key.
const PRODUCE: i16 = 0;

/// Largest frame the proxy accepts (the clients' limits are far smaller).
const MAX_FRAME: usize = 256 << 20;

/// What the proxy counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Produce requests forwarded.
    pub produce_requests: u64,
    /// Produce responses swallowed (each followed by a dropped connection).
    pub swallowed: u64,
    /// Client connections accepted.
    pub connections: u64,
}

struct Shared {
    upstream: SocketAddr,
    /// Swallow about `fraction_ppm` per million Produce responses.
    fraction_ppm: u64,
    /// Faults are injected only while this is set.
    faults: AtomicBool,
    stop: AtomicBool,
    /// State of the deterministic generator that picks the victims.
    rng: Mutex<u64>,
    produce_requests: AtomicU64,
    swallowed: AtomicU64,
    connections: AtomicU64,
    /// Both sockets of every connection, to close them on drop.
    open: Mutex<Vec<TcpStream>>,
}

impl Shared {
    /// Whether to swallow the response to the next Produce request.
    fn pick(&self) -> bool {
        if !self.faults.load(Ordering::SeqCst) {
            return false;
        }
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        // splitmix64: deterministic given the seed and the request order.
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % 1_000_000 < self.fraction_ppm
    }
}

/// The proxy; it stops accepting and closes every connection on drop.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Serves `listener` (bound by the caller, so its port can be
    /// advertised before the broker starts), forwarding to `upstream`, and
    /// swallowing about `fraction` of Produce responses (victims chosen by
    /// a generator seeded with `seed`) while faults are on (initially on).
    pub fn start(listener: TcpListener, upstream: SocketAddr, fraction: f64, seed: u64) -> Proxy {
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            fraction_ppm: (fraction.clamp(0.0, 1.0) * 1e6) as u64,
            faults: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            rng: Mutex::new(seed),
            produce_requests: AtomicU64::new(0),
            swallowed: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_loop(&listener, &s));
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Turns fault injection on or off (connections stay up).
    pub fn set_faults(&self, on: bool) {
        self.shared.faults.store(on, Ordering::SeqCst);
    }

    pub fn stats(&self) -> Stats {
        Stats {
            produce_requests: self.shared.produce_requests.load(Ordering::SeqCst),
            swallowed: self.shared.swallowed.load(Ordering::SeqCst),
            connections: self.shared.connections.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor.
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let open = std::mem::take(&mut *self.shared.open.lock().unwrap_or_else(|p| p.into_inner()));
        for s in open {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(broker) = TcpStream::connect(shared.upstream) else {
            // The client sees a dropped connection, as if the broker were down.
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nodelay(true);
        let _ = broker.set_nodelay(true);
        let clones = (
            client.try_clone(),
            broker.try_clone(),
            client.try_clone(),
            broker.try_clone(),
        );
        let (Ok(c2), Ok(b2), Ok(c3), Ok(b3)) = clones else {
            continue;
        };
        {
            let mut open = shared.open.lock().unwrap_or_else(|p| p.into_inner());
            // Forget connections that are gone (best effort: a closed peer
            // makes `peer_addr` fail).
            open.retain(|s| s.peer_addr().is_ok());
            open.push(c3);
            open.push(b3);
        }
        // Correlation ids of this connection's doomed Produce requests.
        let doomed = Arc::new(Mutex::new(HashSet::<i32>::new()));
        let (s1, d1) = (Arc::clone(shared), Arc::clone(&doomed));
        thread::spawn(move || {
            let _ = requests(client, broker, &s1, &d1);
        });
        let s2 = Arc::clone(shared);
        thread::spawn(move || {
            let _ = responses(b2, c2, &s2, &doomed);
        });
    }
}

/// Reads one frame (size prefix included) into `buf`.
fn read_frame(from: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut size = [0u8; 4];
    from.read_exact(&mut size)?;
    let n = i32::from_be_bytes(size);
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("frame size {n}")))?;
    buf.clear();
    buf.extend_from_slice(&size);
    buf.resize(4 + n, 0);
    from.read_exact(&mut buf[4..])
}

fn close(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Client to broker: notes the Produce requests whose responses are to be
/// swallowed, forwards everything.
fn requests(
    mut client: TcpStream,
    mut broker: TcpStream,
    shared: &Shared,
    doomed: &Mutex<HashSet<i32>>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let r = (|| loop {
        read_frame(&mut client, &mut buf)?;
        if buf.len() >= 12 {
            let api_key = i16::from_be_bytes([buf[4], buf[5]]);
            let correlation = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
            if api_key == PRODUCE {
                shared.produce_requests.fetch_add(1, Ordering::SeqCst);
                if shared.pick() {
                    // Noted before forwarding, so before any response.
                    doomed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(correlation);
                }
            }
        }
        broker.write_all(&buf)?;
    })();
    close(&client, &broker);
    r
}

/// Broker to client: forwards responses, except that a doomed one is
/// swallowed and both sockets closed.
fn responses(
    mut broker: TcpStream,
    mut client: TcpStream,
    shared: &Shared,
    doomed: &Mutex<HashSet<i32>>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let r = (|| loop {
        read_frame(&mut broker, &mut buf)?;
        if buf.len() >= 8 {
            let correlation = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            let swallow = doomed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&correlation);
            if swallow {
                shared.swallowed.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
        }
        client.write_all(&buf)?;
    })();
    close(&client, &broker);
    r
}
