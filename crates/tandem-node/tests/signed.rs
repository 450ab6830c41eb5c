//! Signed orders end to end (`docs/signing.md`): a node in this process
//! over a file log the test opens itself (so it can read what was
//! appended), driven over HTTP and gRPC with keys of both schemes.
//!
//! Every refusal is checked for its status, for the header or field its
//! message names, and for appending nothing: the log's last seq and the
//! replica's applied seq are the same before and after.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::TempDir;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tandem_core::Command;
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_node::auth::keys::SecretKey;
use tandem_node::auth::{self, audit, to_hex, Credentials, Policy, Scheme};
use tandem_node::config::AuthMode;
use tandem_node::grpc::pb;
use tandem_node::grpc::pb::order_entry_client::OrderEntryClient;
use tandem_node::{Node, NodeConfig};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);
const CHAIN_ID: u64 = 31337;

struct TestNode {
    addr: SocketAddr,
    node: Arc<Node>,
    log: Arc<dyn Log>,
    http: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    dir: TempDir,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn policy() -> Policy {
    Policy::new(CHAIN_ID, 300, 5)
}

impl TestNode {
    async fn start(tag: &str, auth: Option<AuthMode>) -> TestNode {
        let dir = TempDir::new(tag);
        let mut cfg = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            auth,
            ..NodeConfig::default()
        };
        cfg.signing.chain_id = CHAIN_ID;
        cfg.log.fsync = false;
        cfg.limits.wait_ms = 1_000;
        cfg.limits.account_rate = 0;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let fc = FileLogConfig {
            fsync: FsyncPolicy::Never,
            ..FileLogConfig::default()
        };
        let log: Arc<dyn Log> =
            Arc::new(FileLog::open(cfg.data_dir.join("log"), fc).expect("open file log"));
        let node = Node::start_with_logs(cfg, vec![Arc::clone(&log)]).expect("start node");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(tandem_node::server::serve(
            listener,
            Arc::clone(&node),
            async move {
                let _ = rx.await;
            },
            Duration::ZERO,
        ));
        let deadline = Instant::now() + WAIT;
        while !node.is_caught_up() {
            assert!(Instant::now() < deadline, "node did not catch up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        TestNode {
            addr,
            node,
            log,
            http: Client::builder(TokioExecutor::new()).build_http(),
            shutdown: Some(tx),
            served: Some(served),
            dir,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .expect("request");
        let resp = tokio::time::timeout(WAIT, self.http.request(req))
            .await
            .expect("answer in time")
            .expect("answer");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    /// The log's last seq and the replica's applied seq.
    fn positions(&self) -> (u64, u64) {
        (self.log.last_seq(), self.node.partitions[0].applied_seq())
    }

    fn records(&self) -> Vec<(u64, Vec<u8>)> {
        self.log
            .read_from(1, 10_000)
            .expect("read log")
            .into_iter()
            .map(|r| (r.seq, r.payload))
            .collect()
    }

    fn grpc(&self) -> OrderEntryClient<Client<HttpConnector, tonic::body::Body>> {
        let c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        OrderEntryClient::with_origin(c, format!("http://{}", self.addr).parse().expect("uri"))
    }

    async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.served.take() {
            let _ = tokio::time::timeout(WAIT, s).await;
        }
        let node = Arc::clone(&self.node);
        let _ = tokio::task::spawn_blocking(move || node.stop()).await;
        self.dir
    }
}

/// A signed request: its body and its two headers.
struct Signed {
    body: String,
    headers: Vec<(&'static str, String)>,
}

fn headers_of(c: &Credentials) -> Vec<(&'static str, String)> {
    vec![
        (auth::SIGNATURE_HEADER, to_hex(&c.sig)),
        (auth::EXPIRY_HEADER, c.expiry.to_string()),
    ]
}

/// Signs the command `line` (a JSONL command with `op`) with `key`.
fn sign(key: &SecretKey, line: &str, expiry: u64) -> Credentials {
    let cmd: Command = tandem_codec::decode_command(line.as_bytes());
    key.sign(&cmd, expiry, &policy()).expect("a valid command")
}

fn place_line(account: &str, id: &str, price: &str, qty: &str) -> String {
    format!(
        r#"{{"op":"place","market":"ETH-USD","id":"{id}","account":"{account}","side":"sell","type":"limit","price":"{price}","qty":"{qty}","tif":"gtc"}}"#
    )
}

/// A signed place: the body the HTTP API takes is the command without `op`.
fn signed_place(key: &SecretKey, id: &str, price: &str, qty: &str, expiry: u64) -> Signed {
    let line = place_line(&key.account(), id, price, qty);
    Signed {
        body: line.replacen(r#""op":"place","#, "", 1),
        headers: headers_of(&sign(key, &line, expiry)),
    }
}

fn events(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_place_amend_cancel_round_trip_per_scheme() {
    let n = TestNode::start("signed-round-trip", Some(AuthMode::Signed)).await;
    for (i, scheme) in [Scheme::Ed25519, Scheme::Eip712].into_iter().enumerate() {
        let key = SecretKey::derive(scheme, 42, i as u64);
        let account = key.account();
        let id = format!("p{i}");
        let exp = now() + 60;
        // Decimals in the body in a non-canonical form: the signature is
        // over the canonical ones ("2000.5", "1.5").
        let line = place_line(&account, &id, "2000.50", "01.5");
        let creds = sign(&key, &line, exp);
        let body = line.replacen(r#""op":"place","#, "", 1);
        let (st, v) = n
            .call(Method::POST, "/v1/orders", &headers_of(&creds), Some(&body))
            .await;
        assert_eq!(st, StatusCode::OK, "{scheme:?}: {v}");
        assert_eq!(events(&v), ["accepted"]);
        // The log record is the canonical command plus the signature.
        let (_, rec) = n.records().pop().unwrap();
        let text = String::from_utf8(rec.clone()).unwrap();
        assert!(
            text.contains(&format!("\"sig\":\"{}\"", to_hex(&creds.sig))),
            "{text}"
        );
        assert!(text.contains(&format!("\"expiry\":{exp}")), "{text}");
        assert_eq!(auth::record_credentials(&rec).unwrap(), Some(creds));

        // Amend (PATCH) and cancel (DELETE), signed the same way.
        let amend = format!(
            r#"{{"op":"amend","market":"ETH-USD","id":"{id}","account":"{account}","qty":"0.5"}}"#
        );
        let (st, v) = n
            .call(
                Method::PATCH,
                &format!("/v1/orders/ETH-USD/{id}"),
                &headers_of(&sign(&key, &amend, exp)),
                Some(&format!(r#"{{"account":"{account}","qty":"0.5"}}"#)),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{scheme:?}: {v}");
        assert_eq!(events(&v), ["amended"]);
        let cancel =
            format!(r#"{{"op":"cancel","market":"ETH-USD","id":"{id}","account":"{account}"}}"#);
        // An account written in capitals is the same account (the node
        // appends it in lowercase); the signature covers the lowercase one.
        let shouting = account.replacen("ed25519:", "", 1).to_ascii_uppercase();
        let shouting = if scheme == Scheme::Ed25519 {
            format!("ed25519:{shouting}")
        } else {
            format!("0x{}", &shouting[2..])
        };
        let (st, v) = n
            .call(
                Method::DELETE,
                &format!("/v1/orders/ETH-USD/{id}?account={shouting}"),
                &headers_of(&sign(&key, &cancel, exp)),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{scheme:?}: {v}");
        assert_eq!(events(&v), ["cancelled"]);
        let (st, v) = n
            .call(
                Method::GET,
                &format!("/v1/orders/ETH-USD/{id}?account={shouting}"),
                &[],
                None,
            )
            .await;
        assert_eq!(
            (st, v["status"].as_str()),
            (StatusCode::OK, Some("cancelled")),
            "{v}"
        );
        assert_eq!(v["account"].as_str(), Some(account.as_str()));
    }
    // The whole log verifies, every record signed.
    let recs = n.records();
    assert_eq!(recs.len(), 6);
    let r = audit::verify_records(recs.into_iter().map(Ok), &policy(), true);
    assert_eq!((r.signed, r.first_bad.clone()), (6, None), "{r:?}");
    n.stop().await;
}

/// What, method, path, headers, body, expected status, field named.
type Case = (
    &'static str,
    Method,
    String,
    Vec<(&'static str, String)>,
    Option<String>,
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_credential_is_refused_naming_the_field_and_nothing_is_appended() {
    let n = TestNode::start("signed-refusals", Some(AuthMode::Signed)).await;
    let ed = SecretKey::derive(Scheme::Ed25519, 7, 0);
    let ed_other = SecretKey::derive(Scheme::Ed25519, 7, 1);
    let eth = SecretKey::derive(Scheme::Eip712, 7, 2);
    let eth_other = SecretKey::derive(Scheme::Eip712, 7, 3);
    // One accepted order first, so the positions are not zero.
    let ok = signed_place(&ed, "first", "10", "1", now() + 60);
    let (st, v) = n
        .call(Method::POST, "/v1/orders", &ok.headers, Some(&ok.body))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let before = n.positions();
    assert!(before.0 >= 1 && before.1 == before.0, "{before:?}");

    let exp = now() + 60;
    let mut cases: Vec<Case> = Vec::new();
    for (key, other, name) in [(&ed, &ed_other, "ed25519"), (&eth, &eth_other, "eip712")] {
        let good = signed_place(key, "x1", "10", "1", exp);
        let post = |headers: Vec<(&'static str, String)>, body: &str| {
            (
                Method::POST,
                "/v1/orders".to_string(),
                headers,
                Some(body.to_string()),
            )
        };
        // Unsigned.
        let (m, p, h, b) = post(vec![], &good.body);
        cases.push(("unsigned", m, p, h, b, 401, "x-tandem-signature"));
        // One signature bit flipped.
        let mut h = good.headers.clone();
        let mut sig = auth::from_hex(&h[0].1).unwrap();
        sig[10] ^= 1;
        h[0].1 = to_hex(&sig);
        let (m, p, h, b) = post(h, &good.body);
        cases.push(("bad signature", m, p, h, b, 401, "x-tandem-signature"));
        // Signed by another key for this account.
        let line = place_line(&key.account(), "x1", "10", "1");
        let cmd = tandem_codec::decode_command(line.as_bytes());
        let forged = other.sign(&cmd, exp, &policy()).unwrap();
        let (m, p, h, b) = post(headers_of(&forged), &good.body);
        cases.push(("wrong key", m, p, h, b, 401, "x-tandem-signature"));
        // The body changed after signing.
        let (m, p, h, b) = post(
            good.headers.clone(),
            &good.body.replace("\"qty\":\"1\"", "\"qty\":\"2\""),
        );
        cases.push(("other body", m, p, h, b, 401, "x-tandem-signature"));
        // The expiry header changed after signing.
        let mut h = good.headers.clone();
        h[1].1 = (exp + 1).to_string();
        let (m, p, h, b) = post(h, &good.body);
        cases.push(("other expiry", m, p, h, b, 401, "x-tandem-signature"));
        // Expired (validly signed), and too far ahead.
        let old = signed_place(key, "x1", "10", "1", now() - 60);
        let (m, p, h, b) = post(old.headers, &old.body);
        cases.push(("expired", m, p, h, b, 401, "x-tandem-expiry"));
        let far = signed_place(key, "x1", "10", "1", now() + 3_600);
        let (m, p, h, b) = post(far.headers, &far.body);
        cases.push(("too far ahead", m, p, h, b, 400, "x-tandem-expiry"));
        // Malformed signature hex, and a signature of the other scheme's length.
        let mut h = good.headers.clone();
        h[0].1 = format!("zz{}", &h[0].1[2..]);
        let (m, p, h, b) = post(h, &good.body);
        cases.push(("malformed hex", m, p, h, b, 400, "x-tandem-signature"));
        let mut h = good.headers.clone();
        h[0].1 = if name == "ed25519" {
            format!("{}1b", h[0].1)
        } else {
            h[0].1[..128].to_string()
        };
        let (m, p, h, b) = post(h, &good.body);
        cases.push((
            "other scheme's length",
            m,
            p,
            h,
            b,
            400,
            "x-tandem-signature",
        ));
        // Malformed or missing expiry; signature without expiry and back.
        let mut h = good.headers.clone();
        h[1].1 = "12a".into();
        let (m, p, h, b) = post(h, &good.body);
        cases.push(("malformed expiry", m, p, h, b, 400, "x-tandem-expiry"));
        let (m, p, h, b) = post(vec![good.headers[0].clone()], &good.body);
        cases.push(("missing expiry", m, p, h, b, 400, "x-tandem-expiry"));
        let (m, p, h, b) = post(vec![good.headers[1].clone()], &good.body);
        cases.push(("missing signature", m, p, h, b, 400, "x-tandem-signature"));
        // Cancel and amend unsigned, and signed by the wrong key.
        let cancel = format!(
            r#"{{"op":"cancel","market":"ETH-USD","id":"first","account":"{}"}}"#,
            key.account()
        );
        let path = format!("/v1/orders/ETH-USD/first?account={}", key.account());
        cases.push((
            "unsigned cancel",
            Method::DELETE,
            path.clone(),
            vec![],
            None,
            401,
            "x-tandem-signature",
        ));
        let forged = other
            .sign(
                &tandem_codec::decode_command(cancel.as_bytes()),
                exp,
                &policy(),
            )
            .unwrap();
        cases.push((
            "forged cancel",
            Method::DELETE,
            path,
            headers_of(&forged),
            None,
            401,
            "x-tandem-signature",
        ));
        let amend_body = format!(r#"{{"account":"{}","qty":"0.5"}}"#, key.account());
        cases.push((
            "unsigned amend",
            Method::PATCH,
            "/v1/orders/ETH-USD/first".into(),
            vec![],
            Some(amend_body),
            401,
            "x-tandem-signature",
        ));
    }
    // An account that is not a key, signed by something.
    let alice =
        r#"{"market":"ETH-USD","id":"a1","account":"alice","side":"buy","price":"1","qty":"1"}"#;
    let h = vec![
        (auth::SIGNATURE_HEADER, "ab".repeat(64)),
        (auth::EXPIRY_HEADER, exp.to_string()),
    ];
    cases.push((
        "account not a key",
        Method::POST,
        "/v1/orders".into(),
        h,
        Some(alice.into()),
        400,
        "account",
    ));

    let mut refused = [0u64; 2];
    for (what, method, path, headers, body, status, field) in cases {
        let (st, v) = n.call(method, &path, &headers, body.as_deref()).await;
        let err = v["error"].as_str().unwrap_or_default().to_owned();
        assert_eq!(st.as_u16(), status, "{what}: {v}");
        assert!(err.starts_with(&format!("{field}:")), "{what}: {err}");
        assert_eq!(n.positions(), before, "{what}: something was appended");
        refused[usize::from(status == 401)] += 1;
    }
    // Every refusal is counted by status, the one accepted order by scheme.
    let m = n.node.metrics.render();
    for (i, status) in ["400", "401"].iter().enumerate() {
        let line = format!("status=\"{status}\"}} {}", refused[i]);
        assert!(
            m.lines()
                .any(|l| l.starts_with("tandem_auth_refused_total") && l.ends_with(&line)),
            "{line}: {m}"
        );
    }
    assert!(m.lines().any(
        |l| l.starts_with("tandem_signed_orders_total") && l.ends_with("scheme=\"ed25519\"} 1")
    ));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_signed_again_gets_the_original_answer() {
    let n = TestNode::start("signed-retry", Some(AuthMode::Signed)).await;
    let key = SecretKey::derive(Scheme::Eip712, 3, 0);
    let first = signed_place(&key, "r1", "5", "2", now() + 30);
    let (st, v1) = n
        .call(
            Method::POST,
            "/v1/orders",
            &first.headers,
            Some(&first.body),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v1}");
    let at = n.positions();
    // The same order, signed again with a later expiry: a retry.
    let again = signed_place(&key, "r1", "5", "2", now() + 90);
    assert_ne!(again.headers, first.headers);
    let (st, v2) = n
        .call(
            Method::POST,
            "/v1/orders",
            &again.headers,
            Some(&again.body),
        )
        .await;
    assert_eq!((st, &v2), (StatusCode::OK, &v1));
    assert_eq!(n.positions(), at);
    // The same id with another quantity, validly signed: 409.
    let other = signed_place(&key, "r1", "5", "3", now() + 90);
    let (st, v) = n
        .call(
            Method::POST,
            "/v1/orders",
            &other.headers,
            Some(&other.body),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_none_takes_unsigned_orders_and_still_verifies_signed_ones() {
    // The default on loopback: none.
    let n = TestNode::start("signed-none", None).await;
    assert_eq!(n.node.auth_mode, AuthMode::None);
    let (st, v) = n
        .call(
            Method::POST,
            "/v1/orders",
            &[],
            Some(r#"{"market":"ETH-USD","id":"u1","account":"alice","side":"buy","price":"1","qty":"1"}"#),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, rec) = n.records().pop().unwrap();
    // Exactly the record an unsigned node always wrote.
    assert_eq!(
        rec,
        br#"{"op":"place","market":"ETH-USD","id":"u1","account":"alice","side":"buy","type":"limit","price":"1","qty":"1","tif":"gtc"}"#
    );
    let key = SecretKey::derive(Scheme::Ed25519, 5, 0);
    let s = signed_place(&key, "s1", "2", "1", now() + 30);
    let (st, v) = n
        .call(Method::POST, "/v1/orders", &s.headers, Some(&s.body))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let at = n.positions();
    let mut bad = s.headers.clone();
    bad[0].1 = "00".repeat(64);
    let s2 = signed_place(&key, "s2", "2", "1", now() + 30);
    let (st, v) = n
        .call(Method::POST, "/v1/orders", &bad, Some(&s2.body))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(n.positions(), at);
    // verify-log: one unsigned record (fine unless required), one signed.
    let r = audit::verify_records(n.records().into_iter().map(Ok), &policy(), false);
    assert_eq!(
        (r.signed, r.unsigned, r.first_bad.clone()),
        (1, 1, None),
        "{r:?}"
    );
    let r = audit::verify_records(n.records().into_iter().map(Ok), &policy(), true);
    assert_eq!(r.first_bad.map(|b| b.0), Some(1));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_carries_the_signature_as_metadata() {
    let n = TestNode::start("signed-grpc", Some(AuthMode::Signed)).await;
    let key = SecretKey::derive(Scheme::Ed25519, 11, 0);
    let req = pb::PlaceOrderRequest {
        market: "ETH-USD".into(),
        id: "g1".into(),
        account: key.account(),
        side: pb::Side::Buy as i32,
        r#type: pb::OrderType::Limit as i32,
        price: Some("3".into()),
        qty: "1".into(),
        tif: 0,
        post_only: false,
    };
    let mut c = n.grpc();
    let e = c
        .place_order(req.clone())
        .await
        .expect_err("unsigned over gRPC");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        e.message().starts_with("x-tandem-signature:"),
        "{}",
        e.message()
    );
    let line = format!(
        r#"{{"op":"place","market":"ETH-USD","id":"g1","account":"{}","side":"buy","price":"3","qty":"1"}}"#,
        key.account()
    );
    let creds = sign(&key, &line, now() + 30);
    let mut r = tonic::Request::new(req);
    let mut h = HeaderMap::new();
    for (k, v) in headers_of(&creds) {
        h.insert(k, v.parse().unwrap());
    }
    *r.metadata_mut() = tonic::metadata::MetadataMap::from_headers(h);
    let ok = c.place_order(r).await.expect("signed over gRPC");
    assert_eq!(ok.get_ref().events[0].kind, pb::EventKind::Accepted as i32);
    n.stop().await;
}

/// `verify-log` over the file log directory a node wrote, and over its
/// records as JSONL with one record changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_log_passes_a_signed_log_and_names_a_tampered_record() {
    let n = TestNode::start("signed-audit", Some(AuthMode::Signed)).await;
    for i in 0..6u64 {
        let scheme = if i % 2 == 0 {
            Scheme::Ed25519
        } else {
            Scheme::Eip712
        };
        let key = SecretKey::derive(scheme, 8, i);
        let s = signed_place(&key, &format!("o{i}"), "7", "1", now() + 30);
        let (st, v) = n
            .call(Method::POST, "/v1/orders", &s.headers, Some(&s.body))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let recs = n.records();
    let log = Arc::clone(&n.log);
    let dir = {
        let d = n.stop().await;
        drop(log);
        d
    };
    let log_dir = dir.path().join("log");
    let r = audit::verify_records(audit::file_log_records(&log_dir).unwrap(), &policy(), true);
    assert_eq!(
        (r.records, r.signed, r.first_bad.clone()),
        (6, 6, None),
        "{r:?}"
    );

    let jsonl = dir.path().join("records.jsonl");
    let mut text = String::new();
    for (i, (_, rec)) in recs.iter().enumerate() {
        let line = String::from_utf8(rec.clone()).unwrap();
        // Record 4 sells at another price than was signed.
        text.push_str(&if i == 3 {
            line.replace("\"price\":\"7\"", "\"price\":\"70\"")
        } else {
            line
        });
        text.push('\n');
    }
    std::fs::write(&jsonl, text).unwrap();
    let r = audit::verify_records(audit::jsonl_records(&jsonl).unwrap(), &policy(), true);
    let (seq, why) = r.first_bad.expect("the tampered record fails");
    assert_eq!(seq, 4, "{why}");
    assert!(why.contains("x-tandem-signature"), "{why}");
}

/// `verify-log --config` over a node's Kafka log: every partition read to
/// its end, a tampered record named with its partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_log_reads_every_partition_of_a_kafka_log_as_the_node_config_names_it() {
    let n = TestNode::start("signed-audit-kafka", Some(AuthMode::Signed)).await;
    for i in 0..6u64 {
        let key = SecretKey::derive(Scheme::Ed25519, 9, i);
        let s = signed_place(&key, &format!("k{i}"), "7", "1", now() + 30);
        let (st, v) = n
            .call(Method::POST, "/v1/orders", &s.headers, Some(&s.body))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let recs = n.records();
    let dir = n.stop().await;
    let broker = common::Broker::start(&dir.path().join("broker"));
    let bootstrap = broker.bootstrap();
    let topic = "audited-orders";
    tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || {
            tandem_kafka::create_topic(&bootstrap, topic, 2, 1, &[], Duration::from_secs(30))
                .expect("create topic");
            for (p, part) in recs.chunks(3).enumerate() {
                let log = tandem_kafka::KafkaLog::open(tandem_kafka::KafkaLogConfig::new(
                    &bootstrap, topic, p as u32,
                ))
                .expect("open partition");
                let refs: Vec<&[u8]> = part.iter().map(|(_, r)| &r[..]).collect();
                log.append(&refs).expect("append");
            }
        }
    })
    .await
    .unwrap();
    let mut cfg = NodeConfig::default();
    cfg.log.kind = tandem_node::config::LogKind::Kafka;
    cfg.log.kafka_brokers = bootstrap.clone();
    cfg.log.kafka_topic = topic.into();
    cfg.log.kafka_partitions = 2;
    cfg.signing.chain_id = CHAIN_ID;
    let verify = {
        let cfg = cfg.clone();
        move || {
            let logs = tandem_node::node::open_logs_to_read(&cfg).expect("open the logs");
            audit::verify_logs(logs, &Policy::new(cfg.signing.chain_id, 0, 0), true)
        }
    };
    let r = tokio::task::spawn_blocking(verify.clone()).await.unwrap();
    assert_eq!(
        (r.records, r.signed, r.first_bad.clone()),
        (6, 6, None),
        "{r:?}"
    );
    // A record whose price was changed after it was signed, in partition 1.
    tokio::task::spawn_blocking({
        let (bootstrap, rec) = (bootstrap.clone(), n_th_record_tampered(&dir, 1));
        move || {
            let log = tandem_kafka::KafkaLog::open(tandem_kafka::KafkaLogConfig::new(
                &bootstrap, topic, 1,
            ))
            .expect("open partition");
            log.append(&[&rec[..]]).expect("append");
        }
    })
    .await
    .unwrap();
    let r = tokio::task::spawn_blocking(verify).await.unwrap();
    let (_, why) = r.first_bad.expect("the tampered record fails");
    assert!(why.starts_with("partition 1, seq "), "{why}");
    assert!(why.contains("x-tandem-signature"), "{why}");
    assert_eq!(r.records, 7, "every record read up to the bad one");
    // A topic that is not there is an error, not created.
    cfg.log.kafka_topic = "no-such-topic".into();
    let e = tokio::task::spawn_blocking(move || tandem_node::node::open_logs_to_read(&cfg).err())
        .await
        .unwrap()
        .expect("a missing topic is an error");
    assert!(format!("{e:#}").contains("no-such-topic"), "{e:#}");
}

/// Record `i` of the node's file log in `dir` with its price changed.
fn n_th_record_tampered(dir: &TempDir, i: usize) -> Vec<u8> {
    let recs: Vec<(u64, Vec<u8>)> = audit::file_log_records(&dir.path().join("log"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    String::from_utf8(recs[i].1.clone())
        .unwrap()
        .replace("\"price\":\"7\"", "\"price\":\"70\"")
        .into_bytes()
}
