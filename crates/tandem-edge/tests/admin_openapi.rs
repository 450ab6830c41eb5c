//! The admin API's description (`crates/tandem-edge/admin-openapi.json`,
//! served at `GET /openapi.json` on the admin listener) kept equal to the
//! admin router, against an edge in this process:
//!
//! - every described operation, sent as described (token, a body of the
//!   described shape), answers with a status it lists, and a 200 body has
//!   the properties its schema requires; without the token a secured one
//!   answers 401, which it lists too;
//! - on the admin paths, a method answers 404 (no such route) exactly when
//!   the description does not list it;
//! - `GET /openapi.json` answers the description, with no token.

mod common;

use common::*;
use serde_json::{json, Value};
use tandem_edge::admin::ADMIN_OPENAPI_JSON;
use tandem_edge::config::Role;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const ADMIN_PATHS: [&str; 5] = [
    "/admin/routes",
    "/admin/weights",
    "/admin/clusters",
    "/admin/reload",
    "/admin/other",
];

fn description() -> Value {
    serde_json::from_str(ADMIN_OPENAPI_JSON).expect("admin-openapi.json is JSON")
}

/// The schema `s` names, one `$ref` resolved.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_described_operation_answers_as_described_and_nothing_else_is_routed() {
    let doc = description();
    assert_eq!(doc["openapi"], "3.1.0");
    let a = MockNode::start("a").await;
    let b = MockNode::start("b").await;
    let edge = TestEdge::start(
        edge_config(vec![
            cluster("one", Role::Stable, 9, &[(a.addr, "z-a")]),
            cluster("two", Role::Canary, 1, &[(b.addr, "z-a")]),
        ]),
        None,
    )
    .await;
    let c = client();
    let auth = format!("Bearer {TOKEN}");
    let body_for = |path: &str| match path {
        "/admin/weights" => json!({"weights": {"two": 2}}).to_string(),
        "/admin/clusters" => json!({"clusters": [
            {"name": "one", "version": "v1", "role": "stable", "weight": 9,
             "nodes": [{"addr": a.addr.to_string(), "zone": "z-a"}]},
            {"name": "two", "version": "v2", "role": "canary", "weight": 1,
             "nodes": [{"addr": b.addr.to_string(), "zone": "z-a"}]}]})
        .to_string(),
        _ => String::new(),
    };
    let mut described = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let method = method.to_uppercase();
            described.push((method.clone(), path.clone()));
            let statuses: Vec<u16> = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|k| k.parse().expect("numeric status"))
                .collect();
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let body = body_for(path);
            let got = send(
                &c,
                request(
                    &method,
                    &edge.admin_url(path),
                    &[("authorization", &auth)],
                    &body,
                ),
            )
            .await
            .unwrap();
            assert!(
                statuses.contains(&got.status),
                "{method} {path}: {} not among {statuses:?}: {}",
                got.status,
                got.body
            );
            if got.status == 200 && path != "/metrics" {
                let v: Value = serde_json::from_str(&got.body).unwrap();
                let schema = resolve(
                    &doc,
                    &op["responses"]["200"]["content"]["application/json"]["schema"],
                );
                for req in schema["required"].as_array().into_iter().flatten() {
                    let k = req.as_str().unwrap();
                    assert!(
                        v.get(k).is_some(),
                        "{method} {path}: no {k:?} in {}",
                        got.body
                    );
                }
            }
            if secured {
                let bare = send(&c, request(&method, &edge.admin_url(path), &[], &body))
                    .await
                    .unwrap();
                assert_eq!(bare.status, 401, "{method} {path}: {}", bare.body);
                assert!(
                    statuses.contains(&401),
                    "{method} {path}: 401 not described"
                );
            }
        }
    }
    // A write the description shows as stale: 409 with the generation.
    let stale = send(
        &c,
        request(
            "PUT",
            &edge.admin_url("/admin/weights"),
            &[("authorization", &auth)],
            &json!({"weights": {"two": 1}, "generation": 0}).to_string(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(stale.status, 409, "{}", stale.body);
    let v: Value = serde_json::from_str(&stale.body).unwrap();
    assert!(v["generation"].as_u64().is_some(), "{}", stale.body);
    // Undescribed methods on the admin paths are not routed.
    for path in ADMIN_PATHS {
        for method in METHODS {
            let listed = described.contains(&(method.to_owned(), path.to_owned()));
            let got = send(
                &c,
                request(
                    method,
                    &edge.admin_url(path),
                    &[("authorization", &auth)],
                    &body_for(path),
                ),
            )
            .await
            .unwrap();
            assert_eq!(
                got.status == 404,
                !listed,
                "{method} {path}: {} {}",
                got.status,
                got.body
            );
        }
    }
    // The description itself, without a token.
    let got = send(
        &c,
        request("GET", &edge.admin_url("/openapi.json"), &[], ""),
    )
    .await
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(serde_json::from_str::<Value>(&got.body).unwrap(), doc);
}
