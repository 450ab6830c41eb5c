//! The scaffold with a test service (a closure-like handler), over real
//! sockets and a raw HTTP/1.1 client that writes exactly what it is given:
//! a panicking request gets `500` JSON and the connection and server carry
//! on; a client that writes a whole over-limit body before reading gets
//! the `413` with `connection: close` (8 MiB and 100 KiB); hyper's own
//! `431` and `400` carry the JSON error and the service's headers; a
//! connection over the limit gets the service's refusal.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tandem_conn::server::{self, BoxBody, Limits, Service, Stop};
use tokio::sync::oneshot;

const MAX_BODY: usize = 16 * 1024;

#[derive(Default)]
struct TestService {
    panics: AtomicU64,
    served: AtomicU64,
    opened: AtomicU64,
}

fn text(status: StatusCode, body: &str) -> Response<BoxBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_owned()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

impl Service for TestService {
    async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        self.served.fetch_add(1, Ordering::Relaxed);
        match req.uri().path() {
            "/panic" => panic!("a handler bug"),
            "/body" => match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => text(StatusCode::OK, &format!("{}", b.to_bytes().len())),
                Err(_) => text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    r#"{"error":"body: too large"}"#,
                ),
            },
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                text(StatusCode::OK, "slow")
            }
            _ => text(StatusCode::OK, "ok"),
        }
    }

    fn answer_headers(&self, h: &mut HeaderMap) {
        h.insert("x-test-server", HeaderValue::from_static("scaffold"));
    }

    fn refusal(&self) -> String {
        "connections: test server full".into()
    }

    fn connection_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }
}

/// A scaffold server on its own runtime thread; stops on drop.
struct TestServer {
    addr: SocketAddr,
    svc: Arc<TestService>,
    stop: Option<oneshot::Sender<Stop>>,
    thread: Option<std::thread::JoinHandle<server::Drained>>,
}

impl TestServer {
    fn start(limits: Limits) -> TestServer {
        let svc = Arc::new(TestService::default());
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std.set_nonblocking(true).unwrap();
        let addr = std.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<Stop>();
        let s = Arc::clone(&svc);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(std).unwrap();
                server::serve(l, s, limits, async move { rx.await.unwrap_or(Stop::Drain) }).await
            })
        });
        TestServer {
            addr,
            svc,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn stop(&mut self, how: Stop) -> server::Drained {
        let _ = self.stop.take().unwrap().send(how);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.stop(Stop::HandOver);
        }
    }
}

fn limits() -> Limits {
    Limits {
        drain_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// One parsed answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"));
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{self:?}");
        v["error"].as_str().expect("error is a string").to_owned()
    }
}

/// Reads one answer with a content-length body from `s`, keeping any
/// bytes after it in `buf`.
fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Answer> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    buf.drain(..end + 4);
    while buf.len() < len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[..len]).into_owned();
    buf.drain(..len);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn get(s: &mut TcpStream, buf: &mut Vec<u8>, path: &str) -> Answer {
    write!(s, "GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    read_answer(s, buf).unwrap()
}

/// Whether the server closed `s` (EOF, not a reset) after its answer.
fn closed_cleanly(s: &mut TcpStream, buf: &[u8]) -> bool {
    let mut rest = [0u8; 64];
    buf.is_empty() && matches!(s.read(&mut rest), Ok(0))
}

#[test]
fn a_panicking_request_gets_500_and_nothing_else_changes() {
    let srv = TestServer::start(limits());
    let mut s = connect(srv.addr);
    let mut buf = Vec::new();
    assert_eq!(get(&mut s, &mut buf, "/").status, 200);
    let a = get(&mut s, &mut buf, "/panic");
    assert_eq!(a.status, 500, "{a:?}");
    assert!(a.error().starts_with("internal:"), "{a:?}");
    assert_eq!(a.header("x-test-server"), Some("scaffold"), "{a:?}");
    assert_eq!(srv.svc.panics.load(Ordering::Relaxed), 1);
    // The same connection, and new ones, are served as before.
    assert_eq!(get(&mut s, &mut buf, "/").status, 200);
    let mut s2 = connect(srv.addr);
    assert_eq!(get(&mut s2, &mut Vec::new(), "/").body, "ok");
    assert_eq!(srv.svc.served.load(Ordering::Relaxed), 4);
}

/// Writes the head and the whole body of `len` bytes before reading.
fn post_whole_body(addr: SocketAddr, len: usize) -> (TcpStream, std::io::Result<Answer>, Vec<u8>) {
    let mut s = connect(addr);
    let mut req =
        format!("POST /body HTTP/1.1\r\nhost: t\r\ncontent-length: {len}\r\n\r\n").into_bytes();
    req.resize(req.len() + len, b'x');
    s.write_all(&req)
        .expect("the server reads (or discards) the whole body");
    let mut buf = Vec::new();
    let a = read_answer(&mut s, &mut buf);
    (s, a, buf)
}

#[test]
fn a_client_that_writes_8_mib_before_reading_gets_the_413_and_a_clean_close() {
    let srv = TestServer::start(limits());
    let (mut s, a, buf) = post_whole_body(srv.addr, 8 << 20);
    let a = a.expect("the 413, not a reset");
    assert_eq!(a.status, 413, "{a:?}");
    assert!(a.error().contains("too large"), "{a:?}");
    assert_eq!(a.header("connection"), Some("close"), "{a:?}");
    assert!(closed_cleanly(&mut s, &buf));
}

#[test]
fn a_100_kib_over_limit_body_gets_413_with_connection_close() {
    let srv = TestServer::start(limits());
    let (mut s, a, buf) = post_whole_body(srv.addr, 100 << 10);
    let a = a.expect("the 413, not a reset");
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(a.header("connection"), Some("close"), "{a:?}");
    assert!(closed_cleanly(&mut s, &buf));
    // A body within the limit keeps the connection.
    let (mut s, a, mut buf) = post_whole_body(srv.addr, 1000);
    let a = a.unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, "1000"));
    assert_eq!(a.header("connection"), None);
    assert_eq!(get(&mut s, &mut buf, "/").status, 200);
}

#[test]
fn hyper_own_431_and_400_carry_the_json_error_and_the_service_headers() {
    let srv = TestServer::start(limits());
    // A head over the limit (16 KiB), written whole before reading.
    let mut s = connect(srv.addr);
    let big = "a".repeat(40 << 10);
    write!(s, "GET / HTTP/1.1\r\nhost: t\r\nx-big: {big}\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let a = read_answer(&mut s, &mut buf).expect("the 431, not a reset");
    assert_eq!(a.status, 431, "{a:?}");
    assert!(a.error().starts_with("headers:"), "{a:?}");
    assert_eq!(a.header("x-test-server"), Some("scaffold"), "{a:?}");
    assert_eq!(a.header("connection"), Some("close"), "{a:?}");
    assert!(closed_cleanly(&mut s, &buf));
    // A malformed head.
    let mut s = connect(srv.addr);
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nno colon here\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let a = read_answer(&mut s, &mut buf).expect("the 400");
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.error().starts_with("request:"), "{a:?}");
    // The server carries on.
    assert_eq!(
        get(&mut connect(srv.addr), &mut Vec::new(), "/").status,
        200
    );
}

#[test]
fn a_connection_over_the_limit_gets_the_service_refusal() {
    let srv = TestServer::start(Limits {
        max_connections: 1,
        ..limits()
    });
    let mut first = connect(srv.addr);
    let mut buf = Vec::new();
    assert_eq!(get(&mut first, &mut buf, "/").status, 200);
    let mut s = connect(srv.addr);
    let a = get(&mut s, &mut Vec::new(), "/");
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.error(), "connections: test server full");
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(a.header("x-test-server"), Some("scaffold"));
}

#[test]
fn a_stop_lets_in_flight_requests_finish_and_answers_a_just_accepted_connection() {
    let mut srv = TestServer::start(limits());
    let mut busy = connect(srv.addr);
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    // Accepted, first request not sent yet.
    let mut fresh = connect(srv.addr);
    // Wait until the slow request is in and both connections accepted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while srv.svc.served.load(Ordering::Relaxed) == 0 || srv.svc.opened.load(Ordering::Relaxed) < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let stopper = std::thread::spawn(move || {
        let d = srv.stop(Stop::HandOver);
        (srv, d)
    });
    let mut buf = Vec::new();
    let a = read_answer(&mut busy, &mut buf).expect("the in-flight answer");
    assert_eq!((a.status, a.body.as_str()), (200, "slow"));
    let a = get(&mut fresh, &mut Vec::new(), "/");
    assert_eq!(a.status, 200, "{a:?}");
    let (_srv, drained) = stopper.join().unwrap();
    assert!(drained.clean, "{drained:?}");
}
