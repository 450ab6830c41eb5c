//! The WebSocket market stream, `GET /v1/markets/{market}/stream[?depth=N]`:
//! the `feed` of one market as JSON text messages.
//!
//! The request is gated like the HTTP book (ready, `x-tandem-min-seq`),
//! `depth` is the book's (1..=`limits.max_depth`, default 50), and errors
//! before the upgrade are ordinary HTTP answers (`{"error":..}`; `426` when
//! the request is not a WebSocket upgrade, `503` past `limits.max_streams`).
//! The `101` answer carries the usual headers (`x-tandem-seq`, ...).
//! Then the node sends:
//!
//! - `{"type":"book","partition":P,"seq":N,"bids":[["price","qty"],..],"asks":[..]}`
//!   first: the book at seq N, aggregated by level, `depth` levels a side;
//! - `{"type":"events","seq":N,"events":[...]}` for every command of the
//!   market after that, with the events of the HTTP answers;
//! - `{"type":"book",...}` again (the whole top `depth` levels, not a diff)
//!   after events that changed them; its seq is the replica's position and
//!   every events message up to it has been sent before it;
//! - `{"type":"error","error":"lagged: ..."}` then a close with code 1008
//!   (policy) when the subscriber fell too far behind: the client
//!   subscribes again and starts from the new snapshot. Nothing is ever
//!   skipped silently. While the replica applies a long run of commands a
//!   book may come later than its events (never before them), covering
//!   several commands.
//!
//! The node pings every `PING_INTERVAL` and closes a connection that has
//! sent nothing (not even a pong) for two intervals; when it starts
//! draining it sends `{"type":"error","error":"draining: ..."}` and closes
//! every stream with 1001 (going away). Messages from the client
//! are ignored (at most `MAX_CLIENT_MESSAGE` bytes each).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::api::{self, Answer};
use crate::feed::{self, FeedEnd, MarketFeed};
use crate::node::Node;
use crate::BoxBody;

/// Interval of the node's pings; a connection silent for two is closed.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);

/// Largest message a client may send (it has nothing to say but pongs).
pub const MAX_CLIENT_MESSAGE: usize = 4096;

fn header_has(req: &Request<impl Sized>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// `depth` from the query string: `Ok(None)` when absent.
fn depth_param(query: Option<&str>) -> Result<Option<usize>, ()> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "depth" {
            return v.parse().map(Some).map_err(|_| ());
        }
    }
    Ok(None)
}

/// Answers `GET /v1/markets/{market}/stream`: `101` and the stream, or an
/// HTTP error. Counted in metrics as route `stream`.
pub async fn serve<B>(node: Arc<Node>, mut req: Request<B>, started: Instant) -> Response<BoxBody>
where
    B: Send + 'static,
{
    let accepted = AssertUnwindSafe(accept(&node, &req))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            node.metrics.panicked();
            Err(Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal: the handler failed",
            ))
        });
    let (answer, key) = match accepted {
        Ok((feed, key)) => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            // The stream keeps its connection's slot until it ends.
            let slot = req.extensions_mut().remove::<crate::server::ConnSlot>();
            tokio::spawn(async move {
                let _slot = slot;
                let Ok(upgraded) = on_upgrade.await else {
                    return; // The client went away before switching.
                };
                let cfg = WebSocketConfig::default()
                    .max_message_size(Some(MAX_CLIENT_MESSAGE))
                    .max_frame_size(Some(MAX_CLIENT_MESSAGE));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(cfg),
                )
                .await;
                run(ws, feed).await;
            });
            let mut a = Answer::error(StatusCode::SWITCHING_PROTOCOLS, "");
            a.body = Bytes::new();
            (a, Some(key))
        }
        Err(a) => (a, None),
    };
    let mut resp = api::respond(&node, answer, started, "stream");
    if let Some(key) = key {
        let h = resp.headers_mut();
        h.remove(header::CONTENT_TYPE);
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(v) = HeaderValue::from_str(&key) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
    }
    resp
}

/// Checks the upgrade and opens the feed; the first item (the book) is
/// queued in the feed's answer. `Err` is the HTTP answer to give instead.
async fn accept<B>(node: &Arc<Node>, req: &Request<B>) -> Result<(Opened, String), Answer> {
    let bad = |msg: &str| Answer::error(StatusCode::BAD_REQUEST, msg);
    if !header_has(req, header::UPGRADE, "websocket") {
        let mut a = Answer::error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade: this route is a WebSocket stream; send `upgrade: websocket`",
        );
        a.retry_after = None;
        return Err(a);
    }
    if !header_has(req, header::CONNECTION, "upgrade") {
        return Err(bad("connection: must contain `upgrade`"));
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(bad("sec-websocket-version: must be 13"));
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Err(bad("sec-websocket-key: missing"));
    };
    let key = derive_accept_key(key.as_bytes());
    let segs: Vec<&str> = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let Some(market) = segs.get(2).and_then(|m| crate::api::percent_decode(m)) else {
        return Err(bad("path: malformed percent-encoding"));
    };
    let max_depth = node.cfg.limits.max_depth;
    let Ok(depth) = depth_param(req.uri().query()) else {
        return Err(bad(&format!(
            "depth: must be an integer from 1 to {max_depth}"
        )));
    };
    let depth = feed::check_depth(depth, max_depth)?;
    let (feed, book) = MarketFeed::open(node, req.headers(), &market, depth).await?;
    Ok((Opened { feed, book }, key))
}

/// An open feed and the snapshot to send first.
#[derive(Debug)]
struct Opened {
    feed: MarketFeed,
    book: feed::BookView,
}

async fn close<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}

/// Sends the feed until it ends, the client leaves, or the node drains.
async fn run<S>(mut ws: WebSocketStream<S>, opened: Opened)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Opened { mut feed, book } = opened;
    if ws.send(Message::text(book.to_json())).await.is_err() {
        return;
    }
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            u = feed.next() => match u {
                Ok(u) => {
                    if ws.send(Message::text(u.to_json())).await.is_err() {
                        return;
                    }
                }
                Err(end) => {
                    let msg = serde_json::json!({"type": "error", "error": end.to_string()});
                    let _ = ws.send(Message::text(msg.to_string())).await;
                    let (code, reason) = match end {
                        FeedEnd::Lagged(_) => (CloseCode::Policy, "lagged"),
                        FeedEnd::Closed => (CloseCode::Away, "stopping"),
                        FeedEnd::Draining => (CloseCode::Away, "draining"),
                    };
                    close(&mut ws, code, reason).await;
                    return;
                }
            },
            m = ws.next() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                    // tungstenite answers the close; flush it.
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
                    return;
                }
                Some(Ok(_)) => heard = Instant::now(),
            },
            _ = ping.tick() => {
                if heard.elapsed() >= 2 * PING_INTERVAL {
                    close(&mut ws, CloseCode::Away, "no pong").await;
                    return;
                }
                if ws.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
}
