//! The signing client behind `tandem order place|cancel|amend`: builds the
//! HTTP request of one command (the API's body, path and query), signs the
//! command the node will decode from it, and sends it.
//!
//! The command is decoded from the very body that is sent (by the codec,
//! as the node does), and the signature is over that decoded command, so
//! client and node sign and verify the same canonical fields.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use tandem_codec::Op;
use tandem_core::Command;

use super::keys::SecretKey;
use super::{to_hex, Credentials, Policy, SignedOp, EXPIRY_HEADER, SIGNATURE_HEADER};

/// One order-entry command as flags give it.
#[derive(Debug, Clone, Default)]
pub struct OrderRequest {
    pub market: String,
    pub id: String,
    /// Place only: `buy` or `sell`.
    pub side: Option<String>,
    /// Place only: `limit` (default) or `market`.
    pub order_type: Option<String>,
    pub price: Option<String>,
    pub qty: Option<String>,
    /// Place only: `gtc` (default), `ioc`, `fok`.
    pub tif: Option<String>,
    pub post_only: bool,
}

/// The HTTP request of one signed command, ready to send.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub method: Method,
    /// Path and query, percent-encoded.
    pub path: String,
    /// JSON body (empty for a cancel).
    pub body: String,
    pub credentials: Credentials,
    /// The command as the node will decode it.
    pub command: Command,
}

/// Percent-encodes one path segment or query value (everything but RFC
/// 3986 unreserved characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds and signs the request of `op` for `key`'s account, valid until
/// `expiry` (Unix seconds). An error names the field that is missing or
/// invalid, as the node would.
pub fn build(
    op: SignedOp,
    req: &OrderRequest,
    key: &SecretKey,
    expiry: u64,
    policy: &Policy,
) -> Result<SignedRequest, String> {
    let account = key.account();
    let mut body = serde_json::Map::new();
    let (method, path, decode_op) = match op {
        SignedOp::Place => {
            body.insert("market".into(), req.market.clone().into());
            body.insert("id".into(), req.id.clone().into());
            body.insert("account".into(), account.clone().into());
            for (k, v) in [
                ("side", &req.side),
                ("type", &req.order_type),
                ("price", &req.price),
                ("qty", &req.qty),
                ("tif", &req.tif),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), v.clone().into());
                }
            }
            if req.post_only {
                body.insert("post_only".into(), true.into());
            }
            (Method::POST, "/v1/orders".to_string(), Op::Place)
        }
        SignedOp::Cancel => (
            Method::DELETE,
            format!(
                "/v1/orders/{}/{}?account={}",
                percent_encode(&req.market),
                percent_encode(&req.id),
                percent_encode(&account)
            ),
            Op::Cancel,
        ),
        SignedOp::Amend => {
            body.insert("account".into(), account.clone().into());
            for (k, v) in [("price", &req.price), ("qty", &req.qty)] {
                if let Some(v) = v {
                    body.insert(k.into(), v.clone().into());
                }
            }
            (
                Method::PATCH,
                format!(
                    "/v1/orders/{}/{}",
                    percent_encode(&req.market),
                    percent_encode(&req.id)
                ),
                Op::Amend,
            )
        }
    };
    // The command the node decodes: the body plus, for cancel and amend,
    // the market and id of the path (and the account of the query).
    let mut full = body.clone();
    full.insert("market".into(), req.market.clone().into());
    full.insert("id".into(), req.id.clone().into());
    full.insert("account".into(), account.into());
    let command = tandem_codec::decode_with_op(
        serde_json::Value::Object(full).to_string().as_bytes(),
        decode_op,
    );
    if let Command::Invalid(i) = &command {
        return Err(format!("{}: missing or invalid", i.field));
    }
    let credentials = key
        .sign(&command, expiry, policy)
        .ok_or("the command cannot be signed")?;
    let body = match op {
        SignedOp::Cancel => String::new(),
        _ => serde_json::Value::Object(body).to_string(),
    };
    Ok(SignedRequest {
        method,
        path,
        body,
        credentials,
        command,
    })
}

/// Sends `req` to the node at `base` (`http://host:port`); returns the
/// answer's status and body. Bounded by `timeout`.
pub async fn send(
    base: &str,
    req: &SignedRequest,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    use anyhow::Context;
    let uri: http::Uri = format!("{}{}", base.trim_end_matches('/'), req.path)
        .parse()
        .with_context(|| format!("node URL {base:?}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut r = Request::builder()
        .method(req.method.clone())
        .uri(uri)
        .header(SIGNATURE_HEADER, to_hex(&req.credentials.sig))
        .header(EXPIRY_HEADER, req.credentials.expiry.to_string());
    if !req.body.is_empty() {
        r = r.header(http::header::CONTENT_TYPE, "application/json");
    }
    let r = r.body(Full::new(Bytes::from(req.body.clone())))?;
    let resp = tokio::time::timeout(timeout, client.request(r))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {base} within {timeout:?}"))?
        .with_context(|| format!("send to {base}"))?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| anyhow::anyhow!("answer body from {base} not read within {timeout:?}"))?
        .with_context(|| format!("read answer from {base}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `build` then `send` on a runtime of its own: `tandem order`.
pub fn sign_and_send(
    base: &str,
    op: SignedOp,
    req: &OrderRequest,
    key: &SecretKey,
    expiry: u64,
    policy: &Policy,
) -> anyhow::Result<(u16, String)> {
    let signed = build(op, req, key, expiry, policy).map_err(|e| anyhow::anyhow!(e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(send(base, &signed, Duration::from_secs(30)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scheme;

    #[test]
    fn requests_are_the_apis_and_verify() {
        let key = SecretKey::derive(Scheme::Ed25519, 1, 1);
        let policy = Policy::new(1, 300, 5);
        let req = OrderRequest {
            market: "BTC/USD".into(),
            id: "o 1".into(),
            side: Some("buy".into()),
            price: Some("10.50".into()),
            qty: Some("1".into()),
            ..OrderRequest::default()
        };
        let p = build(SignedOp::Place, &req, &key, 100, &policy).unwrap();
        assert_eq!((p.method.as_str(), p.path.as_str()), ("POST", "/v1/orders"));
        assert_eq!(
            policy.verify(&p.command, &p.credentials),
            Ok(Scheme::Ed25519)
        );
        let c = build(SignedOp::Cancel, &req, &key, 100, &policy).unwrap();
        assert!(c
            .path
            .starts_with("/v1/orders/BTC%2FUSD/o%201?account=ed25519%3A"));
        assert_eq!(c.body, "");
        let err = build(
            SignedOp::Place,
            &OrderRequest {
                side: None,
                ..req.clone()
            },
            &key,
            100,
            &policy,
        )
        .unwrap_err();
        assert!(err.starts_with("side:"), "{err}");
        let err = build(
            SignedOp::Amend,
            &OrderRequest {
                price: None,
                qty: None,
                ..req
            },
            &key,
            100,
            &policy,
        )
        .unwrap_err();
        assert!(err.starts_with("price:"), "{err}");
    }
}
