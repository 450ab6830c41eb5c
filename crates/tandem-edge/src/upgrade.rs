//! WebSocket (and any HTTP/1.1 upgrade) through the edge: the upgrade
//! request goes to a node chosen like any other request; once the node
//! answers 101, the client's and the node's connections are joined and
//! bytes are copied both ways until either side closes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::proxy::{edge_error, Edge};
use crate::{BoxBody, BoxError};

/// True for a request asking to switch protocols.
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().contains_key(http::header::UPGRADE)
}

/// Proxies one upgrade request.
pub async fn proxy_upgrade(edge: &Arc<Edge>, mut req: Request<Incoming>) -> Response<BoxBody> {
    let started = Instant::now();
    let account = req
        .headers()
        .get("x-tandem-account")
        .map(|v| v.as_bytes().to_vec())
        .or_else(|| {
            req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|p| p.strip_prefix("account="))
                    .map(|v| v.as_bytes().to_vec())
            })
        });
    let pin = req
        .headers()
        .get("x-dex-version")
        .and_then(|v| tandem_route::Role::from_header(v.as_bytes()));
    let Some((cluster, node)) = edge.choose(pin, account.as_deref()) else {
        edge.metrics.unroutable();
        return edge_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no cluster available",
            Some(1),
        );
    };
    let stream = match tokio::net::TcpStream::connect(&node.addr).await {
        Ok(s) => s,
        Err(_) => {
            edge.metrics.upstream_error(&cluster.name, &cluster.version);
            return edge_error(StatusCode::BAD_GATEWAY, "upstream: cannot connect", Some(1));
        }
    };
    let stream = match &edge.upstream_tls {
        None => tandem_conn::tls::MaybeTls::Plain(TokioIo::new(stream)),
        Some(tls) => {
            let host = node.addr.rsplit_once(':').map_or("", |(h, _)| h);
            let timeout = std::time::Duration::from_millis(edge.cfg.upstream.connect_timeout_ms);
            match tls.connect(host, stream, timeout).await {
                Ok(s) => tandem_conn::tls::MaybeTls::Tls(Box::new(TokioIo::new(s))),
                Err(_) => {
                    edge.metrics.upstream_error(&cluster.name, &cluster.version);
                    return edge_error(
                        StatusCode::BAD_GATEWAY,
                        "upstream: TLS handshake failed",
                        Some(1),
                    );
                }
            }
        }
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(stream).await else {
        return edge_error(
            StatusCode::BAD_GATEWAY,
            "upstream: handshake failed",
            Some(1),
        );
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut up = Request::new(Empty::<Bytes>::new());
    *up.method_mut() = req.method().clone();
    *up.uri_mut() = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    for (k, v) in req.headers() {
        up.headers_mut().append(k.clone(), v.clone());
    }
    let mut resp = match sender.send_request(up).await {
        Ok(r) => r,
        Err(_) => {
            edge.metrics.upstream_error(&cluster.name, &cluster.version);
            return edge_error(StatusCode::BAD_GATEWAY, "upstream: no answer", Some(1));
        }
    };
    edge.metrics.answered(
        &cluster.name,
        &cluster.version,
        resp.status().as_u16(),
        started.elapsed(),
    );
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp.map(|b| b.map_err(BoxError::from).boxed_unsync());
    }
    let client_side = hyper::upgrade::on(&mut req);
    let node_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        if let (Ok(c), Ok(n)) = (client_side.await, node_side.await) {
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(n)).await;
        }
    });
    let mut out = Response::new(
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *out.status_mut() = resp.status();
    *out.headers_mut() = resp.headers().clone();
    out
}
