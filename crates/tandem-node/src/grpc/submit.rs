//! `Submit`: the streaming order entry of `tandem.v1.OrderEntry`.
//!
//! One call carries many places, cancels and amends. Each request is read,
//! turned into a `Command` by the same conversions as the unary calls
//! (`place_command`, `cancel_command`, `amend_command`) and run through
//! `api::order_entry_outcome`, the HTTP and unary path itself: validation,
//! signature check, readiness and `x-tandem-min-seq` gate, rate limit,
//! idempotency windows, append, wait for the replica. Up to
//! [`SUBMIT_IN_FLIGHT`] requests of a call run at once on the call's own
//! task (`buffer_unordered`: no task per request); the appender batches
//! whatever is queued, from every call, into one append and one fsync.
//! Past the bound the call's request stream is not polled, so HTTP/2 flow
//! control holds the client back: back-pressure, not failure.
//!
//! Replies leave in completion order, each with its request's tag. An
//! error is a reply (`SubmitError`), never the end of the call; the call
//! itself ends with an error only when its request stream breaks (a
//! message that cannot be decoded, or one over `limits.max_body_bytes`)
//! or when the node starts draining, and in both cases only after the
//! replies to every request already read. Each request is counted in the
//! request metrics as route `grpc_submit` with the HTTP status its reply
//! stands for (the call itself counts once as route `grpc`).

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use tonic::Status;

use super::{amend_command, cancel_command, code_of, error_message, pb, place_command};
use crate::api::{self, Answer};
use crate::auth::{EXPIRY_HEADER, SIGNATURE_HEADER};
use crate::node::Node;
use crate::partition::Outcome;

/// Requests of one `Submit` call that run at once (read and not yet
/// answered). Past it the node stops reading the call until a reply goes
/// out. Several calls together are bounded by the appender's queue
/// (`limits.max_pending`, answered UNAVAILABLE "overloaded" past it).
pub const SUBMIT_IN_FLIGHT: usize = 1024;

/// How often an open call checks whether the node started draining.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

/// The reply stream of `Submit`.
pub type SubmitStream = Pin<Box<dyn Stream<Item = Result<pb::SubmitReply, Status>> + Send>>;

/// Serves one `Submit` call.
pub(super) fn serve(
    node: &Arc<Node>,
    req: tonic::Request<tonic::Streaming<pb::SubmitRequest>>,
) -> tonic::Response<SubmitStream> {
    let mut headers = req.metadata().clone().into_headers();
    // A signature belongs to one request, never to the call.
    headers.remove(SIGNATURE_HEADER);
    headers.remove(EXPIRY_HEADER);
    let headers = Arc::new(headers);
    let mut meta = HeaderMap::new();
    api::common_headers(node, None, 0, &mut meta);
    // Why the request stream ended early, if it broke.
    let broken: Arc<Mutex<Option<Status>>> = Arc::default();
    // Set when the drain, not the client, ended the request stream.
    let cut = Arc::new(AtomicBool::new(false));
    let (watch, cut_by) = (Arc::clone(node), Arc::clone(&cut));
    let drained = async move {
        while !watch.is_draining() {
            tokio::time::sleep(DRAIN_CHECK).await;
        }
        cut_by.store(true, Ordering::Release);
    };
    let keep = Arc::clone(&broken);
    let requests = req.into_inner().take_until(drained).scan((), move |(), m| {
        futures_util::future::ready(match m {
            Ok(m) => Some(m),
            Err(s) => {
                // tonic refuses a message over the size limit with
                // OUT_OF_RANGE; the API's 413 is RESOURCE_EXHAUSTED, as
                // `super::serve` maps it for the unary calls.
                let s = if s.code() == tonic::Code::OutOfRange {
                    Status::resource_exhausted(s.message().to_owned())
                } else {
                    s
                };
                *crate::partition::lock(&keep) = Some(s);
                None
            }
        })
    });
    let (n, h) = (Arc::clone(node), headers);
    let replies = requests
        .map(move |m| {
            let (node, headers) = (Arc::clone(&n), Arc::clone(&h));
            async move {
                let tag = m.tag;
                match AssertUnwindSafe(one(&node, &headers, m))
                    .catch_unwind()
                    .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        node.metrics.panicked();
                        error_reply(
                            tag,
                            &Answer::error(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "internal: the handler failed; nothing was appended by this request's failure",
                            ),
                        )
                    }
                }
            }
        })
        .buffer_unordered(SUBMIT_IN_FLIGHT)
        .map(Ok);
    let end = futures_util::stream::once(async move {
        if let Some(s) = crate::partition::lock(&broken).take() {
            return Some(Err(s));
        }
        cut.load(Ordering::Acquire).then(|| {
            Err(Status::unavailable(
                "draining: this node is stopping; every request read was answered, send the rest to another node",
            ))
        })
    })
    .filter_map(futures_util::future::ready);
    let stream: SubmitStream = Box::pin(replies.chain(end));
    let mut resp = tonic::Response::new(stream);
    *resp.metadata_mut() = tonic::metadata::MetadataMap::from_headers(meta);
    resp
}

/// Answers one request.
async fn one(node: &Arc<Node>, headers: &HeaderMap, m: pb::SubmitRequest) -> pb::SubmitReply {
    let started = Instant::now();
    let tag = m.tag;
    let r = run(node, headers, m).await;
    let reply = match r {
        Ok((partition, o)) => match events_of(&o.events) {
            Some(events) => pb::SubmitReply {
                tag,
                result: Some(pb::submit_reply::Result::Reply(pb::CommandReply {
                    partition,
                    seq: o.seq,
                    events,
                })),
            },
            None => error_reply(
                tag,
                &Answer::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal: unreadable answer",
                ),
            ),
        },
        Err(a) => error_reply(tag, &a),
    };
    let status = match &reply.result {
        Some(pb::submit_reply::Result::Error(e)) => e.http_status as u16,
        _ => 200,
    };
    node.metrics
        .request("grpc_submit", status, started.elapsed());
    reply
}

/// The command of a request, with its signature as headers.
async fn run(
    node: &Arc<Node>,
    headers: &HeaderMap,
    m: pb::SubmitRequest,
) -> Result<(u32, Arc<Outcome>), Answer> {
    use pb::submit_request::Command as C;
    let cmd = match m.command {
        Some(C::Place(r)) => place_command(r),
        Some(C::Cancel(r)) => cancel_command(r)?,
        Some(C::Amend(r)) => amend_command(r)?,
        None => {
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                "command: missing: one of place, cancel, amend",
            ))
        }
    };
    if m.signature.is_empty() && m.expiry == 0 {
        return api::order_entry_outcome(node, headers, cmd).await;
    }
    let mut signed = headers.clone();
    if !m.signature.is_empty() {
        let v = HeaderValue::from_str(&m.signature).map_err(|_| {
            Answer::error(
                StatusCode::BAD_REQUEST,
                &format!("{SIGNATURE_HEADER}: not hex"),
            )
        })?;
        signed.insert(SIGNATURE_HEADER, v);
    }
    if m.expiry != 0 {
        signed.insert(EXPIRY_HEADER, HeaderValue::from(m.expiry));
    }
    api::order_entry_outcome(node, &signed, cmd).await
}

/// The error reply of an error answer.
fn error_reply(tag: u64, a: &Answer) -> pb::SubmitReply {
    pb::SubmitReply {
        tag,
        result: Some(pb::submit_reply::Result::Error(pb::SubmitError {
            code: code_of(a.status) as u32,
            http_status: u32::from(a.status.as_u16()),
            message: error_message(a),
            retry_after: a.retry_after.unwrap_or(0),
        })),
    }
}

/// One event of an outcome's JSON, the fields `CommandReply` carries.
#[derive(Deserialize)]
struct WireEvent<'a> {
    seq: u64,
    event: &'a str,
    market: Option<String>,
    id: Option<String>,
    maker: Option<String>,
    taker: Option<String>,
    price: Option<String>,
    qty: Option<String>,
    remaining: Option<String>,
    reason: Option<String>,
}

/// The events of an answer (`[{"seq":..,"event":..},..]`, as the HTTP
/// answer and the market feed carry them) as proto events: the one
/// conversion of every gRPC call, read straight into the strings the
/// messages keep. An event of an unknown kind is `EVENT_KIND_UNSPECIFIED`;
/// fields the proto does not carry are skipped.
pub(super) fn events_of(json: &[u8]) -> Option<Vec<pb::Event>> {
    let evs: Vec<WireEvent<'_>> = serde_json::from_slice(json).ok()?;
    Some(
        evs.into_iter()
            .map(|e| pb::Event {
                seq: e.seq,
                kind: match e.event {
                    "accepted" => pb::EventKind::Accepted,
                    "trade" => pb::EventKind::Trade,
                    "cancelled" => pb::EventKind::Cancelled,
                    "amended" => pb::EventKind::Amended,
                    "rejected" => pb::EventKind::Rejected,
                    _ => pb::EventKind::Unspecified,
                } as i32,
                market: e.market,
                id: e.id,
                maker: e.maker,
                taker: e.taker,
                price: e.price,
                qty: e.qty,
                remaining: e.remaining,
                reason: e.reason,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// Every field of the JSON event lands in its proto field, escapes
    /// decoded; absent fields stay absent; a malformed event is refused.
    #[test]
    fn events_read_field_for_field() {
        let json = br#"[{"seq":5,"event":"accepted","market":"M","id":"o\"1","side":"buy","price":"1.5","qty":"2"},{"seq":5,"event":"trade","market":"M","maker":"o0","taker":"o\"1","price":"1.5","qty":"1"},{"seq":5,"event":"cancelled","market":"M","id":"o\"1","remaining":"1","reason":"ioc"},{"seq":6,"event":"rejected","reason":"invalid"},{"seq":7,"event":"amended","id":"a","price":"2","qty":"3"}]"#;
        let e = events_of(json).expect("reads");
        let kinds: Vec<i32> = e.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                pb::EventKind::Accepted as i32,
                pb::EventKind::Trade as i32,
                pb::EventKind::Cancelled as i32,
                pb::EventKind::Rejected as i32,
                pb::EventKind::Amended as i32,
            ]
        );
        assert_eq!(
            e[0],
            pb::Event {
                seq: 5,
                kind: pb::EventKind::Accepted as i32,
                market: Some("M".into()),
                id: Some("o\"1".into()),
                price: Some("1.5".into()),
                qty: Some("2".into()),
                ..Default::default()
            }
        );
        assert_eq!(
            (e[1].maker.as_deref(), e[1].taker.as_deref()),
            (Some("o0"), Some("o\"1"))
        );
        assert_eq!(
            (e[2].remaining.as_deref(), e[2].reason.as_deref()),
            (Some("1"), Some("ioc"))
        );
        assert_eq!((e[3].seq, e[3].market.as_deref()), (6, None));
        assert!(events_of(b"[{\"event\":\"accepted\"}]").is_none());
        assert!(events_of(b"{}").is_none());
    }

    #[test]
    fn error_replies_carry_code_status_and_field() {
        let mut a = Answer::error(StatusCode::TOO_MANY_REQUESTS, "account: over 5");
        a.retry_after = Some(2);
        let r = error_reply(9, &a);
        let Some(pb::submit_reply::Result::Error(e)) = r.result else {
            panic!("an error reply")
        };
        assert_eq!(r.tag, 9);
        assert_eq!(e.code, Code::ResourceExhausted as u32);
        assert_eq!((e.http_status, e.retry_after), (429, 2));
        assert_eq!(e.message, "account: over 5");
    }
}
