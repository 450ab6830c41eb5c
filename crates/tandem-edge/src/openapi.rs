//! The OpenAPI 3.1 description of the edge's public listener, served at
//! `GET /openapi.json`. The edge forwards every other request to a node,
//! so its API is the node's (`crates/tandem-node/openapi.json`, read at
//! build time) with what the edge itself adds: answers it makes without a
//! node (400 for a request it cannot forward, 413 over its own body
//! limit, 502/504 when a node failed and the request was not repeated,
//! 503 when no node could take it), and the `x-tandem-cluster` header on
//! forwarded answers. Its own answers carry none of the node's headers,
//! so those are optional here. Built once, on first use.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Map, Value};

use crate::BoxBody;

/// The node's description, as the node serves it.
pub const NODE_OPENAPI_JSON: &str = include_str!("../../tandem-node/openapi.json");

/// The statuses the edge answers itself, on any route.
const EDGE_STATUSES: [&str; 5] = ["400", "413", "502", "503", "504"];

/// HTTP methods as OpenAPI path items name them.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The edge's description (see the module doc).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let node: Value = serde_json::from_str(NODE_OPENAPI_JSON)
            .expect("tandem-node's openapi.json is JSON (its tests parse it)");
        edge_document(node).to_string()
    })
}

/// `GET /openapi.json` on the public listener: the edge's description.
pub fn answer() -> Response<BoxBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(document().as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The node's description turned into the edge's.
pub fn edge_document(mut doc: Value) -> Value {
    doc["info"]["title"] = json!("Tandem edge API");
    let node_description = doc["info"]["description"].as_str().unwrap_or("").to_owned();
    doc["info"]["description"] = json!(format!(
        "The public API of a Tandem edge: the node API below, forwarded to a node of the \
         cluster the request is routed to (x-dex-version pin, account affinity, weights), \
         with `x-tandem-cluster` naming that cluster. The edge answers itself 400 when it \
         cannot forward a request (a malformed `account` query parameter), 413 over its own \
         `limits.max_body_bytes`, 502 or 504 when the node failed and the request was not \
         safe to repeat, and 503 when no node could take it; those answers carry none of \
         the node's headers. The admin API is on a separate listener.\n\n{node_description}"
    ));
    let comps = &mut doc["components"];
    for name in ["Seq", "DexVersion"] {
        comps["headers"][name]["required"] = json!(false);
    }
    comps["headers"]["Cluster"] = json!({
        "description": "The cluster whose node answered (absent on the edge's own answers).",
        "schema": {"type": "string"}
    });
    comps["responses"]["EdgeAnswer"] = json!({
        "description": "The edge's own answer: 400 a request it cannot forward, 413 a body over \
                        its limit, 502/504 a node failed and the request was not repeated, 503 \
                        no node could take the request (with `retry-after`).",
        "headers": {"retry-after": {"description": "Seconds to wait before retrying.", "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    if let Some(rs) = comps["responses"].as_object_mut() {
        for (name, r) in rs.iter_mut() {
            if name != "EdgeAnswer" {
                add_cluster_header(r);
            }
        }
    }
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for m in METHODS {
                if let Some(responses) = item
                    .get_mut(m)
                    .and_then(|op| op.get_mut("responses"))
                    .and_then(Value::as_object_mut)
                {
                    edge_responses(responses);
                }
            }
        }
    }
    doc
}

/// Adds the edge's statuses an operation does not already list, and the
/// cluster header to its inline answers.
fn edge_responses(responses: &mut Map<String, Value>) {
    for r in responses.values_mut() {
        add_cluster_header(r);
    }
    for status in EDGE_STATUSES {
        responses
            .entry(status)
            .or_insert_with(|| json!({"$ref": "#/components/responses/EdgeAnswer"}));
    }
}

fn add_cluster_header(r: &mut Value) {
    if r.get("$ref").is_some() {
        return;
    }
    if let Some(o) = r.as_object_mut() {
        let headers = o.entry("headers").or_insert_with(|| json!({}));
        headers["x-tandem-cluster"] = json!({"$ref": "#/components/headers/Cluster"});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_of_the_node_is_kept_and_gets_the_edge_answers() {
        let node: Value = serde_json::from_str(NODE_OPENAPI_JSON).unwrap();
        let edge: Value = serde_json::from_str(document()).unwrap();
        assert_eq!(edge["openapi"], node["openapi"]);
        let (np, ep) = (
            node["paths"].as_object().unwrap(),
            edge["paths"].as_object().unwrap(),
        );
        assert_eq!(np.keys().collect::<Vec<_>>(), ep.keys().collect::<Vec<_>>());
        let mut ops = 0;
        for (path, item) in np {
            for m in METHODS {
                let Some(op) = item.get(m) else {
                    assert!(ep[path].get(m).is_none(), "{m} {path}");
                    continue;
                };
                ops += 1;
                let er = &ep[path][m]["responses"];
                for (status, _) in op["responses"].as_object().unwrap() {
                    assert!(er.get(status).is_some(), "{m} {path} lost {status}");
                }
                for status in EDGE_STATUSES {
                    assert!(er.get(status).is_some(), "{m} {path} lacks {status}");
                }
            }
        }
        assert!(ops >= 12, "{ops} operations");
        assert_eq!(edge["components"]["headers"]["Seq"]["required"], false);
        assert!(
            edge["components"]["responses"]["Outcome"]["headers"]["x-tandem-cluster"].is_object()
        );
    }
}
