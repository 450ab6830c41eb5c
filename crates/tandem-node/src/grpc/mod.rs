//! gRPC mirror of the HTTP API (`proto/tandem/v1/tandem.proto`, service
//! `tandem.v1.OrderEntry`), served on the node's own hyper server, same
//! port, for requests whose `content-type` is `application/grpc*`.
//!
//! Every call runs the HTTP handler (`api::order_entry_outcome`,
//! `api::get_order`, `api::book`, `api::status`) so that semantics are
//! identical: a request becomes the same `json::Fields` and so the same
//! `Command` (validation is the codec's), gRPC metadata becomes the request
//! headers (for `x-tandem-min-seq`), and the answer becomes the proto
//! message (a command's events by `submit::events_of`, the one conversion
//! of the unary calls, `Submit` and `StreamMarket`). The
//! answer's headers (`x-tandem-seq`, `x-dex-version`, `x-tandem-version`,
//! `retry-after`) go back as metadata, on errors too. HTTP statuses map to
//! gRPC codes as the proto file documents. `StreamMarket` is the `feed`
//! the WebSocket stream sends.
//!
//! `Submit` (the `submit` module) is the streaming order entry: each
//! request runs `api::order_entry_outcome`, the same admission, append and
//! answer as the unary calls, many at once per call.
//!
//! Generated code (`tandem.v1.rs`) is checked in; `scripts/gen-proto.sh`
//! regenerates it. Its client half is used by the tests (over any tower
//! service, e.g. a hyper-util client: no tonic transport).

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{FutureExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tandem_codec::json::{self, Val};
use tandem_codec::Op;
use tandem_core::Command;
use tonic::codegen::Service as _;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::api::{self, Answer};
use crate::feed::{self, FeedEnd, MarketFeed};
use crate::node::Node;
use crate::{BoxBody, BoxError};

/// The code generated from `tandem.proto` (package `tandem.v1`).
#[path = "tandem.v1.rs"]
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod pb;

use pb::order_entry_server::{OrderEntry, OrderEntryServer};

mod submit;
use submit::events_of;
pub use submit::{SubmitStream, SUBMIT_IN_FLIGHT};

/// True for a gRPC request (`content-type: application/grpc[+proto]`).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Answers one gRPC request; counted in metrics as route `grpc` with the
/// HTTP status its gRPC code stands for (200 when the call succeeded).
pub async fn serve<B>(node: Arc<Node>, req: Request<B>, started: Instant) -> Response<BoxBody>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    let max = node.cfg.limits.max_body_bytes;
    let mut svc = OrderEntryServer::new(Grpc {
        node: Arc::clone(&node),
    })
    .max_decoding_message_size(max);
    let resp = AssertUnwindSafe(svc.call(req))
        .catch_unwind()
        .await
        .map(|r| match r {
            Ok(r) => r,
            Err(never) => match never {},
        });
    let mut resp = match resp {
        Ok(r) => r,
        Err(_) => {
            node.metrics.panicked();
            Status::internal(
                "internal: the handler failed; nothing was appended by this request's failure",
            )
            .into_http()
        }
    };
    // tonic answers a message over the limit OUT_OF_RANGE; the HTTP API's
    // 413 is RESOURCE_EXHAUSTED here.
    let h = resp.headers_mut();
    if h.get("grpc-status").is_some_and(|v| v == "11") {
        h.insert(
            "grpc-status",
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
    let status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
        .map_or(200, |c| http_status_of(Code::from_i32(c)));
    node.metrics.request("grpc", status, started.elapsed());
    resp.map(|b| b.map_err(|s| Box::new(s) as BoxError).boxed_unsync())
}

/// The HTTP status a gRPC code stands for (metrics label).
fn http_status_of(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::NotFound | Code::Unimplemented => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Unavailable => 503,
        Code::Cancelled => 499,
        _ => 500,
    }
}

/// The gRPC code of an HTTP status of the API.
fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        404 => Code::NotFound,
        405 => Code::Unimplemented,
        409 => Code::AlreadyExists,
        413 | 429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        500 => Code::Internal,
        _ => Code::Unknown,
    }
}

/// The headers `api::respond` gives every HTTP answer, as metadata.
fn answer_metadata(node: &Node, a: &Answer) -> MetadataMap {
    let mut h = HeaderMap::new();
    api::common_headers(node, a.partition, a.covers, &mut h);
    if let Some(s) = a.retry_after {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
    MetadataMap::from_headers(h)
}

/// An error answer as a status: the code of its HTTP status, the message
/// of its `{"error":..}` body, its headers as metadata.
fn status_of(node: &Node, a: &Answer) -> Status {
    Status::with_metadata(
        code_of(a.status),
        error_message(a),
        answer_metadata(node, a),
    )
}

/// The message of an error answer's `{"error":..}` body.
fn error_message(a: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&a.body).into_owned())
}

/// A `200` answer converted by `f`, or the status of the answer.
fn reply<T>(
    node: &Node,
    a: Answer,
    f: impl FnOnce(&serde_json::Value) -> Option<T>,
) -> Result<tonic::Response<T>, Status> {
    reply_bytes(node, a, |b| {
        f(&serde_json::from_slice::<serde_json::Value>(b).ok()?)
    })
}

/// As `reply`, converting the body bytes.
fn reply_bytes<T>(
    node: &Node,
    a: Answer,
    f: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<tonic::Response<T>, Status> {
    if a.status != StatusCode::OK {
        return Err(status_of(node, &a));
    }
    let msg = f(&a.body).ok_or_else(|| {
        Status::with_metadata(
            Code::Internal,
            "internal: unreadable answer",
            answer_metadata(node, &a),
        )
    })?;
    let mut r = tonic::Response::new(msg);
    *r.metadata_mut() = answer_metadata(node, &a);
    Ok(r)
}

/// Position of a command field in `json::Fields`.
fn key(name: &str) -> usize {
    json::KEYS
        .iter()
        .position(|k| *k == name)
        .expect("a known command field")
}

/// `json::Fields` with `market`, `id` and `account` set.
fn fields(market: String, id: String, account: String) -> json::Fields<'static> {
    let mut f: json::Fields = Default::default();
    f[key("market")] = Some(Val::Str(Cow::Owned(market)));
    f[key("id")] = Some(Val::Str(Cow::Owned(id)));
    f[key("account")] = Some(Val::Str(Cow::Owned(account)));
    f
}

fn s(v: &'static str) -> Option<Val<'static>> {
    Some(Val::Str(Cow::Borrowed(v)))
}

/// An enum value of the proto as a JSON field: unspecified is absent, an
/// unknown number a non-string (so the codec rejects the field).
fn enum_field<E: TryFrom<i32>>(
    v: i32,
    name: impl Fn(E) -> Option<&'static str>,
) -> Option<Val<'static>> {
    match E::try_from(v) {
        Ok(e) => name(e).and_then(s),
        Err(_) => Some(Val::Other),
    }
}

fn opt_str(v: &serde_json::Value, k: &str) -> Option<String> {
    v.get(k)?.as_str().map(str::to_owned)
}

fn str_of(v: &serde_json::Value, k: &str) -> Option<String> {
    opt_str(v, k)
}

/// Runs a place, cancel or amend (`api::order_entry_outcome`, the HTTP
/// path) and answers with its reply, the metadata of the HTTP answer.
async fn command(
    node: &Arc<Node>,
    headers: &HeaderMap,
    cmd: Command,
) -> Result<tonic::Response<pb::CommandReply>, Status> {
    let (partition, o) = api::order_entry_outcome(node, headers, cmd)
        .await
        .map_err(|a| status_of(node, &a))?;
    let mut meta = Answer::error(StatusCode::OK, "");
    meta.partition = Some(partition);
    meta.covers = o.seq;
    let events = events_of(&o.events).ok_or_else(|| {
        Status::with_metadata(
            Code::Internal,
            "internal: unreadable answer",
            answer_metadata(node, &meta),
        )
    })?;
    let mut r = tonic::Response::new(pb::CommandReply {
        partition,
        seq: o.seq,
        events,
    });
    *r.metadata_mut() = answer_metadata(node, &meta);
    Ok(r)
}

fn levels(l: &feed::Levels) -> Vec<pb::Level> {
    l.iter()
        .map(|(price, qty)| pb::Level {
            price: price.clone(),
            qty: qty.clone(),
        })
        .collect()
}

fn book_of(b: &feed::BookView) -> pb::Book {
    pb::Book {
        partition: b.partition,
        seq: b.seq,
        bids: levels(&b.bids),
        asks: levels(&b.asks),
    }
}

fn order_of(v: &serde_json::Value) -> Option<pb::Order> {
    Some(pb::Order {
        market: str_of(v, "market")?,
        id: str_of(v, "id")?,
        account: str_of(v, "account")?,
        side: match v.get("side")?.as_str()? {
            "buy" => pb::Side::Buy,
            "sell" => pb::Side::Sell,
            _ => pb::Side::Unspecified,
        } as i32,
        r#type: match v.get("type")?.as_str()? {
            "limit" => pb::OrderType::Limit,
            "market" => pb::OrderType::Market,
            _ => pb::OrderType::Unspecified,
        } as i32,
        price: opt_str(v, "price"),
        qty: str_of(v, "qty")?,
        remaining: str_of(v, "remaining")?,
        status: match v.get("status")?.as_str()? {
            "open" => pb::OrderStatus::Open,
            "filled" => pb::OrderStatus::Filled,
            "cancelled" => pb::OrderStatus::Cancelled,
            _ => pb::OrderStatus::Unspecified,
        } as i32,
        post_only: v.get("post_only")?.as_bool()?,
    })
}

fn status_msg(v: &serde_json::Value) -> Option<pb::Status> {
    Some(pb::Status {
        node: str_of(v, "node")?,
        zone: str_of(v, "zone")?,
        cluster: str_of(v, "cluster")?,
        version: str_of(v, "version")?,
        role: str_of(v, "role")?,
        ready: v.get("ready")?.as_bool()?,
        draining: v.get("draining")?.as_bool()?,
        partitions: v
            .get("partitions")?
            .as_array()?
            .iter()
            .map(|p| {
                Some(pb::PartitionStatus {
                    id: u32::try_from(p.get("id")?.as_u64()?).ok()?,
                    applied_seq: p.get("applied_seq")?.as_u64()?,
                    output_hash: str_of(p, "output_hash")?,
                    caught_up: p
                        .get("caught_up")
                        .and_then(|c| c.as_bool())
                        .unwrap_or(false),
                })
            })
            .collect::<Option<_>>()?,
    })
}

/// Path-like fields must be non-empty (the HTTP routes cannot name an
/// empty market, id or account).
fn required(node: &Node, pairs: &[(&str, &str)]) -> Result<(), Status> {
    required_answer(pairs).map_err(|a| status_of(node, &a))
}

/// As `required`, the error as the HTTP answer.
fn required_answer(pairs: &[(&str, &str)]) -> Result<(), Answer> {
    match pairs.iter().find(|(_, v)| v.is_empty()) {
        Some((name, _)) => Err(Answer::error(
            StatusCode::BAD_REQUEST,
            &format!("{name}: missing"),
        )),
        None => Ok(()),
    }
}

/// The command of a `PlaceOrderRequest` (invalid fields give a
/// `Command::Invalid` naming the field, as the codec decides).
fn place_command(r: pb::PlaceOrderRequest) -> Command {
    let mut f = fields(r.market, r.id, r.account);
    f[key("side")] = enum_field(r.side, |e| match e {
        pb::Side::Buy => Some("buy"),
        pb::Side::Sell => Some("sell"),
        pb::Side::Unspecified => None,
    });
    f[key("type")] = enum_field(r.r#type, |e| match e {
        pb::OrderType::Limit => Some("limit"),
        pb::OrderType::Market => Some("market"),
        pb::OrderType::Unspecified => None,
    });
    f[key("tif")] = enum_field(r.tif, |e| match e {
        pb::TimeInForce::Gtc => Some("gtc"),
        pb::TimeInForce::Ioc => Some("ioc"),
        pb::TimeInForce::Fok => Some("fok"),
        pb::TimeInForce::Unspecified => None,
    });
    f[key("price")] = r.price.map(|p| Val::Str(Cow::Owned(p)));
    f[key("qty")] = Some(Val::Str(Cow::Owned(r.qty)));
    if r.post_only {
        f[key("post_only")] = Some(Val::Bool(true));
    }
    tandem_codec::from_fields(&f, Some(Op::Place))
}

/// The command of a `CancelOrderRequest`.
fn cancel_command(r: pb::CancelOrderRequest) -> Result<Command, Answer> {
    required_answer(&[("market", &r.market), ("id", &r.id)])?;
    let f = fields(r.market, r.id, r.account);
    Ok(tandem_codec::from_fields(&f, Some(Op::Cancel)))
}

/// The command of an `AmendOrderRequest`.
fn amend_command(r: pb::AmendOrderRequest) -> Result<Command, Answer> {
    required_answer(&[("market", &r.market), ("id", &r.id)])?;
    let mut f = fields(r.market, r.id, r.account);
    f[key("price")] = r.price.map(|p| Val::Str(Cow::Owned(p)));
    f[key("qty")] = r.qty.map(|q| Val::Str(Cow::Owned(q)));
    Ok(tandem_codec::from_fields(&f, Some(Op::Amend)))
}

/// The depth of a book request: 0 is the default.
fn depth(node: &Node, d: u32) -> Result<usize, Status> {
    let d = (d != 0).then_some(d as usize);
    feed::check_depth(d, node.cfg.limits.max_depth).map_err(|a| status_of(node, &a))
}

/// The service: the HTTP handlers behind the generated trait.
#[derive(Debug, Clone)]
pub struct Grpc {
    node: Arc<Node>,
}

/// The stream of `StreamMarket`.
pub type MarketStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<pb::MarketUpdate, Status>> + Send>>;

fn update(u: pb::market_update::Update) -> pb::MarketUpdate {
    pb::MarketUpdate { update: Some(u) }
}

#[tonic::async_trait]
impl OrderEntry for Grpc {
    async fn place_order(
        &self,
        req: tonic::Request<pb::PlaceOrderRequest>,
    ) -> Result<tonic::Response<pb::CommandReply>, Status> {
        let headers = req.metadata().clone().into_headers();
        let cmd = place_command(req.into_inner());
        command(&self.node, &headers, cmd).await
    }

    async fn cancel_order(
        &self,
        req: tonic::Request<pb::CancelOrderRequest>,
    ) -> Result<tonic::Response<pb::CommandReply>, Status> {
        let headers = req.metadata().clone().into_headers();
        let cmd = cancel_command(req.into_inner()).map_err(|a| status_of(&self.node, &a))?;
        command(&self.node, &headers, cmd).await
    }

    async fn amend_order(
        &self,
        req: tonic::Request<pb::AmendOrderRequest>,
    ) -> Result<tonic::Response<pb::CommandReply>, Status> {
        let headers = req.metadata().clone().into_headers();
        let cmd = amend_command(req.into_inner()).map_err(|a| status_of(&self.node, &a))?;
        command(&self.node, &headers, cmd).await
    }

    async fn get_order(
        &self,
        req: tonic::Request<pb::GetOrderRequest>,
    ) -> Result<tonic::Response<pb::Order>, Status> {
        let headers = req.metadata().clone().into_headers();
        let r = req.into_inner();
        required(
            &self.node,
            &[
                ("market", &r.market),
                ("id", &r.id),
                ("account", &r.account),
            ],
        )?;
        let a = api::get_order(&self.node, &headers, &r.market, &r.id, &r.account).await;
        reply(&self.node, a, order_of)
    }

    async fn get_book(
        &self,
        req: tonic::Request<pb::GetBookRequest>,
    ) -> Result<tonic::Response<pb::Book>, Status> {
        let headers = req.metadata().clone().into_headers();
        let r = req.into_inner();
        required(&self.node, &[("market", &r.market)])?;
        let d = depth(&self.node, r.depth)?;
        let a = api::book(&self.node, &headers, &r.market, d).await;
        reply_bytes(&self.node, a, |b| Some(book_of(&feed::parse_book(b)?)))
    }

    async fn get_status(
        &self,
        _req: tonic::Request<pb::GetStatusRequest>,
    ) -> Result<tonic::Response<pb::Status>, Status> {
        let a = api::status(&self.node).await;
        reply(&self.node, a, status_msg)
    }

    type SubmitStream = SubmitStream;

    async fn submit(
        &self,
        req: tonic::Request<tonic::Streaming<pb::SubmitRequest>>,
    ) -> Result<tonic::Response<SubmitStream>, Status> {
        Ok(submit::serve(&self.node, req))
    }

    type StreamMarketStream = MarketStream;

    async fn stream_market(
        &self,
        req: tonic::Request<pb::StreamMarketRequest>,
    ) -> Result<tonic::Response<MarketStream>, Status> {
        let headers = req.metadata().clone().into_headers();
        let r = req.into_inner();
        let node = &self.node;
        required(node, &[("market", &r.market)])?;
        let d = depth(node, r.depth)?;
        let (feed, book) = MarketFeed::open(node, &headers, &r.market, d)
            .await
            .map_err(|a| status_of(node, &a))?;
        let mut meta_answer = Answer::error(StatusCode::OK, "");
        meta_answer.partition = Some(book.partition);
        let first = update(pb::market_update::Update::Book(book_of(&book)));
        let rest = futures_util::stream::unfold(Some(feed), |feed| async move {
            let mut feed = feed?;
            match feed.next().await {
                Ok(feed::Update::Book(b)) => Some((
                    Ok(update(pb::market_update::Update::Book(book_of(&b)))),
                    Some(feed),
                )),
                Ok(feed::Update::Events { seq, events }) => {
                    let events = events_of(&events).unwrap_or_default();
                    Some((
                        Ok(update(pb::market_update::Update::Events(
                            pb::MarketEvents { seq, events },
                        ))),
                        Some(feed),
                    ))
                }
                Err(end) => {
                    let code = match end {
                        FeedEnd::Lagged(_) => Code::Aborted,
                        FeedEnd::Closed | FeedEnd::Draining => Code::Unavailable,
                    };
                    Some((Err(Status::new(code, end.to_string())), None))
                }
            }
        });
        let stream = futures_util::stream::once(async move { Ok(first) }).chain(rest);
        let mut resp = tonic::Response::new(Box::pin(stream) as MarketStream);
        *resp.metadata_mut() = answer_metadata(node, &meta_answer);
        Ok(resp)
    }
}
