//! The Consul layer over HTTP, against a loopback server that answers as
//! a Consul agent's config API does (the answers recorded from its API
//! reference: `404` for an entry not written yet, the entry with its
//! `ModifyIndex`, `true`/`false` for a check-and-set write) and records
//! every request. No Consul agent runs on the build machines.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tandem_control::client::Http;
use tandem_rollout::layers::ConsulLayer;
use tandem_rollout::plan::{Plan, Version};

/// A config-entry store with Consul's check-and-set rule; `steal` makes
/// the next write of a kind lose its check-and-set (another writer got
/// there first).
#[derive(Default)]
struct Agent {
    index: u64,
    entries: BTreeMap<String, (u64, Value)>,
    steal: Option<String>,
    log: Vec<String>,
}

async fn answer(agent: Arc<Mutex<Agent>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let token = req
        .headers()
        .get("x-consul-token")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut a = agent.lock().unwrap();
    a.log.push(format!("{method} {uri} token={token:?}"));
    let reply = |status: u16, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    if token.as_deref() != Some("acl-secret") {
        return reply(403, "Permission denied".into());
    }
    let path = uri.path();
    if method == "GET" {
        let key = path.trim_start_matches("/v1/config/").to_owned();
        return match a.entries.get(&key) {
            None => reply(404, String::new()),
            Some((idx, entry)) => {
                let mut e = entry.clone();
                e["CreateIndex"] = 1.into();
                e["ModifyIndex"] = (*idx).into();
                reply(200, e.to_string())
            }
        };
    }
    assert_eq!((method.as_str(), path), ("PUT", "/v1/config"));
    let entry: Value = serde_json::from_slice(&body).unwrap();
    let key = format!(
        "{}/{}",
        entry["Kind"].as_str().unwrap(),
        entry["Name"].as_str().unwrap()
    );
    let cas: u64 = uri
        .query()
        .and_then(|q| q.strip_prefix("cas="))
        .map(|v| v.parse().unwrap())
        .expect("every write is check-and-set");
    if a.steal.as_deref() == Some(entry["Kind"].as_str().unwrap()) {
        a.steal = None;
        a.index += 1;
        let i = a.index;
        a.entries.insert(key.clone(), (i, entry.clone()));
    }
    let current = a.entries.get(&key).map_or(0, |(i, _)| *i);
    if current != cas {
        return reply(200, "false".into());
    }
    a.index += 1;
    let i = a.index;
    a.entries.insert(key, (i, entry));
    reply(200, "true".into())
}

fn plan() -> Plan {
    common::plan_of(&[("aws", Version::Stable), ("gcp", Version::Canary)])
}

fn weights(aws: u32, gcp: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([("aws".to_owned(), aws), ("gcp".to_owned(), gcp)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_reach_consul_with_check_and_set_and_survive_a_concurrent_writer() {
    let agent = Arc::new(Mutex::new(Agent::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::clone(&agent);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let agent = Arc::clone(&served);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let agent = Arc::clone(&agent);
                    async move { Ok::<_, Infallible>(answer(agent, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let http = Http::new(Duration::from_secs(2));
    let url = format!("http://{addr}");
    let mut layer = ConsulLayer::new(http.clone(), &url, Some("acl-secret".into()), "tandem-node");
    let p = plan();

    // First change: the resolver and the splitter are created (cas=0).
    layer.apply(&p, &weights(95, 5)).await.expect("written");
    {
        let a = agent.lock().unwrap();
        let (_, splitter) = &a.entries["service-splitter/tandem-node"];
        assert_eq!(
            splitter["Splits"][0],
            serde_json::json!({"Weight": 95, "ServiceSubset": "aws"})
        );
        assert_eq!(
            splitter["Splits"][1],
            serde_json::json!({"Weight": 5, "ServiceSubset": "gcp"})
        );
        assert!(a.entries.contains_key("service-resolver/tandem-node"));
        assert!(a
            .log
            .iter()
            .all(|l| l.ends_with("token=Some(\"acl-secret\")")));
        assert!(
            a.log.iter().any(|l| l.starts_with("PUT /v1/config?cas=0")),
            "{:?}",
            a.log
        );
    }

    // Another writer gets in between the read and the write: the write
    // loses its check-and-set, is read again and retried.
    agent.lock().unwrap().steal = Some("service-splitter".into());
    layer
        .apply(&p, &weights(70, 30))
        .await
        .expect("written on retry");
    {
        let a = agent.lock().unwrap();
        let (_, splitter) = &a.entries["service-splitter/tandem-node"];
        assert_eq!(splitter["Splits"][1]["Weight"], 30);
        let puts = a.log.iter().filter(|l| l.starts_with("PUT")).count();
        assert_eq!(
            puts, 4,
            "resolver, splitter, a lost write and its retry: {:?}",
            a.log
        );
        // The resolver is written once only.
        let resolver_gets = a
            .log
            .iter()
            .filter(|l| l.contains("service-resolver"))
            .count();
        assert_eq!(resolver_gets, 1, "{:?}", a.log);
    }

    // A refused token is an error that says so, not a silent skip.
    let mut bad = ConsulLayer::new(http, &url, Some("wrong".into()), "tandem-node");
    let e = bad.apply(&p, &weights(100, 0)).await.expect_err("refused");
    assert!(e.to_string().contains("403"), "{e}");
}
