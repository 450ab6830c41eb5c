//! Helpers shared by the node's integration tests: a small blocking
//! HTTP/1.1 client over `std::net::TcpStream` (keep-alive, content-length
//! and chunked bodies), used both for well-formed requests and for the
//! malformed, slow or oversized ones no ordinary client would send, plus a
//! free-port probe, the log crates' `TempDir` and a tansu `Broker`.
//!
//! The client is deliberately plain: it writes exactly the bytes it is given
//! and reports every connection error as an `io::Error`, so a test can tell
//! a refused connection from a dropped request from an HTTP answer.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use tandem_log::conformance::TempDir;

/// Longest a test waits for one answer before calling it an error (a bound
/// against hangs, not a timing assertion).
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the answer) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// `{"error":"..."}`'s message; panics if the body is not that shape.
    pub fn error(&self) -> String {
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("error body is not an object: {}", self.text()));
        assert_eq!(obj.len(), 1, "error body has only `error`: {}", self.text());
        obj["error"]
            .as_str()
            .unwrap_or_else(|| panic!("error is not a string: {}", self.text()))
            .to_owned()
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.text())
    }
}

/// A keep-alive client connection.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        Ok(Conn {
            stream,
            addr,
            buf: Vec::new(),
        })
    }

    /// Sends one request and reads its answer. `headers` are added after
    /// `host` and `content-length`.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("content-type: application/json\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)?;
        self.read_response()
    }

    /// Writes raw bytes (for malformed requests).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn eof() -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a full answer",
        )
    }

    /// Reads one answer (head, then a content-length, chunked or
    /// read-to-close body).
    pub fn read_response(&mut self) -> io::Result<Resp> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill()? == 0 {
                return Err(Self::eof());
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("status line {status_line:?}"),
                )
            })?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let body = if let Some(len) = get("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "content-length"))?;
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(Self::eof());
                }
            }
            self.buf.drain(..len).collect()
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    if self.fill()? == 0 {
                        return Err(Self::eof());
                    }
                };
                let size = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    if self.fill()? == 0 {
                        return Err(Self::eof());
                    }
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break body;
                }
            }
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            while self.fill()? > 0 {}
            std::mem::take(&mut self.buf)
        };
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// True once the peer has closed: a read returns end of file or a
    /// reset (waits at most the read timeout).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Resp> {
    Conn::open(addr)?.send(method, path, headers, body)
}

/// A `place` body (no `op`) for a limit order.
pub fn place_body(
    market: &str,
    id: &str,
    account: &str,
    side: &str,
    price: &str,
    qty: &str,
) -> String {
    format!(
        r#"{{"market":"{market}","id":"{id}","account":"{account}","side":"{side}","type":"limit","price":"{price}","qty":"{qty}"}}"#
    )
}

/// The `event` names of an order-entry answer's events.
pub fn event_names(v: &serde_json::Value) -> Vec<String> {
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A two-worker runtime for a node served in the test's process, and a
/// loopback listener on a free port.
pub fn runtime_and_listener() -> (tokio::runtime::Runtime, tokio::net::TcpListener, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (rt, listener, addr)
}

/// Serves `node` on `listener` (the node's own server) until the
/// returned sender fires or is dropped.
pub fn serve_node(
    rt: &tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    node: &std::sync::Arc<tandem_node::Node>,
) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(tandem_node::server::serve(
        listener,
        std::sync::Arc::clone(node),
        async move {
            let _ = rx.await;
        },
        Duration::ZERO,
    ));
    tx
}

/// Waits until the node's replicas have caught up (fails after 30 s).
pub fn wait_caught_up(node: &tandem_node::Node) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !node.is_caught_up() {
        assert!(
            std::time::Instant::now() < deadline,
            "node did not catch up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A tansu broker on a free loopback port (three tries), killed on drop.
pub struct Broker {
    child: std::process::Child,
    port: u16,
}

impl Broker {
    pub fn start(dir: &std::path::Path) -> Broker {
        std::fs::create_dir_all(dir).expect("broker dir");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            match tandem_kafka::tansu::spawn(dir, port, port) {
                Ok(child) => return Broker { child, port },
                Err(e) => last = e,
            }
        }
        panic!("tansu broker did not start: {last}");
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
