//! A cross-cloud link in user space: a TCP proxy that delays every byte by
//! a one-way delay in each direction, keeping the stream's order. The
//! source measured 0.8 ms between clouds; `tc netem` is not available on
//! these machines, so the demo puts one of these between the edge and every
//! node (the edge is outside every cloud, as Cloudflare's is) and one
//! between every node and the broker (the source's Kafka was Confluent
//! Cloud, a service of its own). The delay can be changed while connections
//! are open (the `bad-canary` scenario makes a canary's links slow once it
//! has weight).
//!
//! Each direction is a reader that stamps every chunk with the time it
//! arrived and a writer that sends it at that time plus the delay; a
//! bounded queue between them gives backpressure, so a slow peer slows
//! its sender instead of filling memory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks in flight per direction before the reader waits.
const QUEUE: usize = 256;
const CHUNK: usize = 16 * 1024;

/// A running link: accepts on `addr`, forwards to its target.
#[derive(Debug)]
pub struct Link {
    addr: SocketAddr,
    target: SocketAddr,
    delay_us: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Link {
    /// Listens on a free loopback port and forwards to `target` with
    /// `delay` one way.
    pub async fn start(target: SocketAddr, delay: Duration) -> std::io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Link::serve(listener, target, delay)
    }

    /// Forwards connections accepted on `listener` to `target`.
    pub fn serve(
        listener: TcpListener,
        target: SocketAddr,
        delay: Duration,
    ) -> std::io::Result<Link> {
        let addr = listener.local_addr()?;
        let delay_us = Arc::new(AtomicU64::new(delay.as_micros() as u64));
        let d = Arc::clone(&delay_us);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let d = Arc::clone(&d);
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        // The target is down: the client sees the close, as
                        // it would across a real link to a dead host.
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    pipe(inbound, outbound, d).await;
                });
            }
        });
        Ok(Link {
            addr,
            target,
            delay_us,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The one-way delay now.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Changes the one-way delay for every byte read from now on, on open
    /// connections too.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Both directions of one connection, until either side closes.
async fn pipe(a: TcpStream, b: TcpStream, delay_us: Arc<AtomicU64>) {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let up = tokio::spawn(one_way(ar, bw, Arc::clone(&delay_us)));
    let down = tokio::spawn(one_way(br, aw, delay_us));
    let _ = tokio::join!(up, down);
}

/// Reads from `r` and writes to `w` each chunk `delay` after it arrived.
/// An end of stream is passed on (after the delay, like the data before
/// it) as a write shutdown.
async fn one_way(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay_us: Arc<AtomicU64>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            let due = Instant::now() + Duration::from_micros(delay_us.load(Ordering::Relaxed));
            // An empty chunk marks the end.
            if tx.send((due, buf[..n].to_vec())).await.is_err() || n == 0 {
                return;
            }
        }
    });
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if chunk.is_empty() || w.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    reader.abort();
}
