//! The tests' one order through an edge: a resting limit order, so every
//! account's open orders grow (the engine-limit test needs that).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Places order `n` through `addr` (buys at 10, sells at 11: everything
/// rests): its status, or the error.
pub async fn place(c: &HttpClient, addr: SocketAddr, n: u64) -> Result<u16, String> {
    let account = format!("acc{}", n % 8);
    let (side, price) = if n.is_multiple_of(2) {
        ("buy", "10")
    } else {
        ("sell", "11")
    };
    let body = format!(
        r#"{{"market":"M","id":"o{n}","account":"{account}","side":"{side}","type":"limit","price":"{price}","qty":"1"}}"#
    );
    let req = http::Request::post(format!("http://{addr}/v1/orders"))
        .header("content-type", "application/json")
        .header("x-tandem-account", &account)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let r = c.request(req).await.map_err(|e| e.to_string())?;
    let s = r.status().as_u16();
    let _ = r.into_body().collect().await;
    Ok(s)
}
