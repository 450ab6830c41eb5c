//! The live feed of one market, shared by the WebSocket stream (`ws`) and
//! the gRPC `StreamMarket` call (`grpc`): a book snapshot, then the events
//! of every command of that market as the replica applies them, each
//! followed by the book again when its top levels changed.
//!
//! No event is missed or repeated between the snapshot and the events: the
//! feed subscribes to the partition's stream of applied commands *before*
//! taking the snapshot (at seq S) and then drops every published command
//! with seq <= S. A book sent after events is consistent with them: the
//! feed reads the book (at seq S') only once it has taken every published
//! command up to S' off its queue (the replica publishes a command before
//! it releases the engine, so all of them are queued by the time a read
//! succeeds), and labels the book with S'.
//!
//! A subscriber that falls more than `partition::STREAM_BUFFER` commands
//! behind the replica is ended (`FeedEnd::Lagged`), never silently
//! skipped. A feed ends when the node starts draining (`FeedEnd::Draining`).
//! At most `limits.max_streams` feeds are open per node.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tandem_core::Side;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

use crate::api::{self, Answer};
use crate::node::Node;
use crate::partition::{Partition, Published};

/// Levels per side when the subscriber does not say.
pub const DEFAULT_DEPTH: usize = 50;

/// A place among the node's `limits.max_streams` market feeds (WebSocket
/// and gRPC together); released on drop. Each open feed holds a broadcast
/// cursor and a book copy of at most 2 x depth levels.
#[derive(Debug)]
struct StreamPermit(Arc<Node>);

impl StreamPermit {
    fn acquire(node: &Arc<Node>) -> Option<StreamPermit> {
        let max = node.cfg.limits.max_streams;
        node.streams_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamPermit(Arc::clone(node)))
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Price levels of one side, best first: (price, total qty) as the
/// canonical decimal strings of the HTTP book.
pub type Levels = Vec<(String, String)>;

/// The book of a market at a seq, aggregated by price level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookView {
    pub partition: u32,
    pub seq: u64,
    pub bids: Levels,
    pub asks: Levels,
}

impl BookView {
    /// `{"type":"book","partition":P,"seq":N,"bids":[["p","q"],..],"asks":[..]}`.
    pub fn to_json(&self) -> String {
        let side = |l: &Levels| {
            serde_json::to_string(&l.iter().map(|(p, q)| [p, q]).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into())
        };
        format!(
            "{{\"type\":\"book\",\"partition\":{},\"seq\":{},\"bids\":{},\"asks\":{}}}",
            self.partition,
            self.seq,
            side(&self.bids),
            side(&self.asks)
        )
    }
}

/// One item of a feed.
#[derive(Debug, Clone)]
pub enum Update {
    /// The book at `seq`.
    Book(BookView),
    /// The events of the command at `seq`, as the JSON array of the HTTP
    /// answers (`[{"seq":..,"event":..},..]`).
    Events { seq: u64, events: Bytes },
}

impl Update {
    /// The WebSocket text of this item.
    pub fn to_json(&self) -> String {
        match self {
            Update::Book(b) => b.to_json(),
            Update::Events { seq, events } => {
                let events = String::from_utf8_lossy(events);
                format!("{{\"type\":\"events\",\"seq\":{seq},\"events\":{events}}}")
            }
        }
    }
}

/// Why a feed ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedEnd {
    /// The subscriber fell behind by more than the stream buffer; `n`
    /// commands were lost to it.
    #[error("lagged: this subscriber fell {0} commands behind the replica; subscribe again")]
    Lagged(u64),
    /// The partition stopped publishing (the node is stopping).
    #[error("closed: the node is stopping")]
    Closed,
    /// The node started draining: subscribe on another node.
    #[error("draining: this node is stopping; subscribe on another node")]
    Draining,
}

/// A subscription to one market. See the module docs.
#[derive(Debug)]
pub struct MarketFeed {
    node: Arc<Node>,
    part: Arc<Partition>,
    market: Vec<u8>,
    depth: usize,
    rx: Receiver<Arc<Published>>,
    /// Highest seq taken off the queue (of any market of the partition).
    last_seq: u64,
    /// The last book handed out.
    book: BookView,
    /// Events of the market were handed out since `book`.
    dirty: bool,
    pending: VecDeque<Update>,
    _permit: StreamPermit,
}

/// `depth` of a subscription: absent means `DEFAULT_DEPTH`; otherwise
/// 1..=`max_depth` (the HTTP book's rule and message).
pub fn check_depth(depth: Option<usize>, max_depth: usize) -> Result<usize, Answer> {
    match depth {
        None => Ok(DEFAULT_DEPTH.min(max_depth.max(1))),
        Some(d) if d >= 1 && d <= max_depth => Ok(d),
        Some(_) => Err(Answer::error(
            StatusCode::BAD_REQUEST,
            &format!("depth: must be an integer from 1 to {max_depth}"),
        )),
    }
}

impl MarketFeed {
    /// Subscribes to `market` and takes the first snapshot, with the HTTP
    /// book's gate (ready, `x-tandem-min-seq` from `headers`). Returns the
    /// feed and its first item (the book), or the answer to give instead.
    pub async fn open(
        node: &Arc<Node>,
        headers: &HeaderMap,
        market: &str,
        depth: usize,
    ) -> Result<(MarketFeed, BookView), Answer> {
        let Some(permit) = StreamPermit::acquire(node) else {
            let mut a = Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "streams: this node serves at most {} market streams; retry on another node",
                    node.cfg.limits.max_streams
                ),
            );
            a.retry_after = Some(1);
            return Err(a);
        };
        let p = node.partition_of(market.as_bytes());
        let part = Arc::clone(&node.partitions[p as usize]);
        // Subscribe first: every command applied after the snapshot is
        // then on the queue.
        let rx = part.subscribe();
        let a = api::book(node, headers, market, depth).await;
        if a.status != StatusCode::OK {
            return Err(a);
        }
        let book = parse_book(&a.body).ok_or_else(|| {
            Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal: unreadable book answer",
            )
        })?;
        let feed = MarketFeed {
            node: Arc::clone(node),
            part,
            market: market.as_bytes().to_vec(),
            depth,
            rx,
            last_seq: book.seq,
            book: book.clone(),
            dirty: false,
            pending: VecDeque::new(),
            _permit: permit,
        };
        Ok((feed, book))
    }

    /// The next item. Cancel-safe: it may be dropped at any await without
    /// losing an item.
    pub async fn next(&mut self) -> Result<Update, FeedEnd> {
        loop {
            if let Some(u) = self.pending.pop_front() {
                return Ok(u);
            }
            if self.dirty {
                match self.rx.try_recv() {
                    Ok(item) => {
                        self.take(&item);
                        continue;
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Lagged(n)) => return Err(FeedEnd::Lagged(n)),
                    Err(TryRecvError::Closed) => return Err(FeedEnd::Closed),
                }
                if self.refresh_book().await? {
                    continue;
                }
                // The replica is applying a long run of commands: keep
                // taking them, and try the book again after a pause.
                let item = tokio::select! {
                    r = self.rx.recv() => r,
                    () = tokio::time::sleep(BOOK_RETRY) => continue,
                    () = draining(&self.node) => return Err(FeedEnd::Draining),
                };
                match item {
                    Ok(item) => self.take(&item),
                    Err(RecvError::Lagged(n)) => return Err(FeedEnd::Lagged(n)),
                    Err(RecvError::Closed) => return Err(FeedEnd::Closed),
                }
                continue;
            }
            if self.node.is_draining() {
                return Err(FeedEnd::Draining);
            }
            let item = tokio::select! {
                r = self.rx.recv() => r,
                () = draining(&self.node) => return Err(FeedEnd::Draining),
            };
            match item {
                Ok(item) => self.take(&item),
                Err(RecvError::Lagged(n)) => return Err(FeedEnd::Lagged(n)),
                Err(RecvError::Closed) => return Err(FeedEnd::Closed),
            }
        }
    }

    /// One published command off the queue.
    fn take(&mut self, item: &Published) {
        if item.seq <= self.last_seq {
            return; // Already in the snapshot.
        }
        self.last_seq = item.seq;
        if item.market.as_ref().map(|m| m.as_bytes()) == Some(&self.market[..]) {
            self.pending.push_back(Update::Events {
                seq: item.seq,
                events: item.events.clone(),
            });
            self.dirty = true;
        }
    }

    /// Reads the book at the replica's position S, takes every queued
    /// command up to S first (their events go out before the book), and
    /// queues the book if its levels changed. `Ok(false)` when the replica
    /// held the engine for all of `BOOK_READ_BOUND` (the book stays due).
    async fn refresh_book(&mut self) -> Result<bool, FeedEnd> {
        let (m, depth) = (&self.market, self.depth);
        let read = self
            .part
            .read(BOOK_READ_BOUND, |e| {
                let seq = e.seq();
                match e.find_market(m) {
                    None => (seq, Vec::new(), Vec::new()),
                    Some(ix) => (
                        seq,
                        e.depth(ix, Side::Buy, depth),
                        e.depth(ix, Side::Sell, depth),
                    ),
                }
            })
            .await;
        let Some((seq, bids, asks)) = read else {
            return Ok(false);
        };
        while self.last_seq < seq {
            match self.rx.try_recv() {
                Ok(item) => self.take(&item),
                // Published before the engine was released: cannot be
                // missing; stop rather than spin if it ever is.
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => return Err(FeedEnd::Lagged(n)),
                Err(TryRecvError::Closed) => return Err(FeedEnd::Closed),
            }
        }
        self.dirty = false;
        let levels = |side: Vec<(tandem_core::Price, u64)>| -> Levels {
            side.into_iter()
                .map(|(p, q)| (units(p.units()), units(q)))
                .collect()
        };
        let book = BookView {
            partition: self.part.id,
            seq: seq.max(self.last_seq),
            bids: levels(bids),
            asks: levels(asks),
        };
        if book.bids != self.book.bids || book.asks != self.book.asks {
            self.pending.push_back(Update::Book(book.clone()));
            self.book = book;
        }
        Ok(true)
    }
}

/// Longest a feed waits for the engine to read a book before it goes back
/// to taking events (and tries again `BOOK_RETRY` later or after the next
/// command): a book is never allowed to hold up events.
const BOOK_READ_BOUND: Duration = Duration::from_millis(20);
const BOOK_RETRY: Duration = Duration::from_millis(10);

/// How often a waiting feed checks whether the node started draining.
const DRAIN_CHECK: Duration = Duration::from_millis(250);

/// Resolves once the node is draining.
async fn draining(node: &Node) {
    while !node.is_draining() {
        tokio::time::sleep(DRAIN_CHECK).await;
    }
}

fn units(u: u64) -> String {
    let mut s = Vec::with_capacity(24);
    tandem_core::write_units(u, &mut s);
    String::from_utf8(s).unwrap_or_default()
}

/// The HTTP book answer `{"partition":P,"seq":N,"bids":[..],"asks":[..]}`.
pub fn parse_book(body: &[u8]) -> Option<BookView> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let side = |k: &str| -> Option<Levels> {
        v.get(k)?
            .as_array()?
            .iter()
            .map(|l| {
                let l = l.as_array()?;
                Some((
                    l.first()?.as_str()?.to_owned(),
                    l.get(1)?.as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    Some(BookView {
        partition: u32::try_from(v.get("partition")?.as_u64()?).ok()?,
        seq: v.get("seq")?.as_u64()?,
        bids: side("bids")?,
        asks: side("asks")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_documented_json() {
        let b = BookView {
            partition: 0,
            seq: 7,
            bids: vec![("100.5".into(), "1".into())],
            asks: vec![],
        };
        assert_eq!(
            b.to_json(),
            r#"{"type":"book","partition":0,"seq":7,"bids":[["100.5","1"]],"asks":[]}"#
        );
        let e = Update::Events {
            seq: 8,
            events: Bytes::from_static(br#"[{"seq":8,"event":"accepted","market":"M","id":"o"}]"#),
        };
        assert_eq!(
            e.to_json(),
            r#"{"type":"events","seq":8,"events":[{"seq":8,"event":"accepted","market":"M","id":"o"}]}"#
        );
        assert_eq!(
            parse_book(br#"{"partition":0,"seq":7,"bids":[["100.5","1"]],"asks":[]}"#),
            Some(b)
        );
    }

    #[test]
    fn depth_follows_the_book_rule() {
        assert_eq!(check_depth(None, 1000).unwrap(), DEFAULT_DEPTH);
        assert_eq!(check_depth(Some(1000), 1000).unwrap(), 1000);
        for bad in [0, 1001] {
            let a = check_depth(Some(bad), 1000).unwrap_err();
            assert_eq!(a.status, StatusCode::BAD_REQUEST);
            assert!(a.body.starts_with(b"{\"error\":\"depth:"));
        }
    }
}
