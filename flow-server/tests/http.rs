//! HTTP behaviour with `Router::oneshot`: every route, status code and validation rule, and the
//! upstream fixtures accepted unchanged.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use flow_server::args::Config;
use flow_server::auth::Auth;
use flow_server::{AppState, app};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use common::{config, node_json, upsert_flow, upsert_nodes};

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn call(app: &Router, req: Request<Body>) -> Resp {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

fn post_req(flow: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(format!("/v1/flows/{flow}/events"))
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

fn get_req(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn mk_app(cfg: Config) -> (Router, AppState) {
    let state = AppState::memory(&cfg);
    (app(state.clone()), state)
}

async fn assert_error(
    app: &Router,
    req: Request<Body>,
    status: u16,
    code: &str,
    field: Option<&str>,
) {
    let r = call(app, req).await;
    assert_eq!(
        r.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v = r.json();
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    match field {
        Some(f) => assert_eq!(v["field"], f, "{v}"),
        None => assert!(v["field"].is_null(), "{v}"),
    }
}

#[tokio::test]
async fn post_answers_the_seq_and_the_snapshot_aggregates_every_event() {
    let (app, _) = mk_app(config());
    let r1 = call(&app, post_req("f", upsert_flow("f"))).await;
    assert_eq!(r1.status, 200);
    let s1 = r1.json()["seq"].as_u64().unwrap();
    let r2 = call(&app, post_req("f", upsert_nodes("f", "a", "running"))).await;
    let s2 = r2.json()["seq"].as_u64().unwrap();
    assert_eq!(s2, s1 + 1, "seqs are strictly increasing and contiguous");
    let rels =
        r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"contains"}]}"#;
    let s3 = call(&app, post_req("f", rels)).await.json()["seq"]
        .as_u64()
        .unwrap();

    let snap = call(&app, get_req("/v1/flows/f/snapshot")).await;
    assert_eq!(snap.status, 200);
    assert_eq!(snap.headers["content-type"], "application/json");
    assert_eq!(snap.headers["x-flow-seq"], s3.to_string().as_str());
    let v = snap.json();
    assert_eq!(v["type"], "snapshot");
    assert_eq!(v["flow"]["id"], "f");
    assert_eq!(v["nodes"][0]["id"], "a");
    assert_eq!(v["relationships"][0]["type"], "contains");
}

#[tokio::test]
async fn snapshot_of_an_unknown_flow_is_404() {
    let (app, state) = mk_app(config());
    assert_error(
        &app,
        get_req("/v1/flows/nope/snapshot"),
        404,
        "not_found",
        None,
    )
    .await;
    // Watching a flow creates nothing visible: still 404.
    let _sub = state.hub().subscribe("watched", None).unwrap();
    assert_error(
        &app,
        get_req("/v1/flows/watched/snapshot"),
        404,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn bad_json_is_400_naming_the_position() {
    let (app, _) = mk_app(config());
    // The contract names the position: `?` inside a broken document, `.` for the top level.
    assert_error(
        &app,
        post_req("f", "{not json"),
        400,
        "invalid_json",
        Some("?"),
    )
    .await;
    assert_error(&app, post_req("f", ""), 400, "invalid_json", Some(".")).await;
    assert_error(
        &app,
        post_req("f", r#"{"type":"upsert-nodes","nodes":[{"id":1}]}"#),
        400,
        "invalid_json",
        Some("nodes[0].id"),
    )
    .await;
    assert_error(
        &app,
        post_req("f", r#"{"nodes":[]}"#),
        400,
        "invalid_json",
        Some("type"),
    )
    .await;
}

#[tokio::test]
async fn every_contract_rule_is_a_400_with_its_code_and_field() {
    let (app, state) = mk_app(config());
    let node_no_label =
        r#"{"type":"upsert-nodes","nodes":[{"id":"a","flowId":"f","label":"","status":"x"}]}"#;
    let cases: Vec<(String, &str, &str)> = vec![
        (r#"{"type":"banana"}"#.into(), "unknown_type", "type"),
        (r#"{"type":"snapshot"}"#.into(), "required", "flow"),
        (r#"{"type":"upsert-flow"}"#.into(), "required", "flow"),
        (r#"{"type":"upsert-nodes","nodes":[]}"#.into(), "empty", "nodes"),
        (r#"{"type":"upsert-rels"}"#.into(), "empty", "relationships"),
        (r#"{"type":"delete-nodes","ids":[]}"#.into(), "empty", "ids"),
        (r#"{"type":"delete-rels"}"#.into(), "empty", "pairs"),
        (node_no_label.into(), "empty", "nodes[0].label"),
        (
            r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"contains","lag":-1}]}"#.into(),
            "negative",
            "relationships[0].lag",
        ),
        (
            r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"sideways"}]}"#.into(),
            "invalid_json",
            "relationships[0].type",
        ),
        (
            r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"contains","condition":"maybe"}]}"#.into(),
            "invalid_json",
            "relationships[0].condition",
        ),
        (
            format!(r#"{{"type":"upsert-flow","flow":{{"id":"f","status":"x"}},"nodes":[{}]}}"#, node_json("f", "a", "x")),
            "misplaced_field",
            "nodes",
        ),
        (
            format!(r#"{{"type":"upsert-nodes","nodes":[{},{}]}}"#, node_json("f", "a", "x"), node_json("f", "a", "y")),
            "duplicate",
            "nodes[1]",
        ),
        (upsert_flow("other"), "flow_mismatch", "flow.id"),
        (upsert_nodes("other", "a", "x"), "flow_mismatch", "nodes[0].flowId"),
    ];
    for (body, code, field) in cases {
        assert_error(&app, post_req("f", body.clone()), 400, code, Some(field)).await;
    }
    // Nothing was changed by any of them.
    assert!(
        state
            .hub()
            .get("f")
            .is_none_or(|f| f.snapshot(state.metrics()).empty)
    );
    let m = state.metrics().encode();
    assert!(
        m.contains(r#"flow_server_rejected_events_total{code="flow_mismatch"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn bodies_over_one_mib_are_413() {
    let (app, _) = mk_app(config());
    let label = "x".repeat(1 << 20);
    let big = upsert_nodes("f", &label, "running");
    assert_error(
        &app,
        post_req("f", big.clone()),
        413,
        "payload_too_large",
        None,
    )
    .await;
    // Declared length over the limit, and a streamed (chunked) body without a length.
    let req = Request::post("/v1/flows/f/events")
        .header("content-type", "application/json")
        .header("content-length", big.len().to_string())
        .body(Body::from(big.clone()))
        .unwrap();
    assert_error(&app, req, 413, "payload_too_large", None).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = Body::from_stream(futures_util::stream::iter(chunks));
    assert_error(
        &app,
        post_req("f", streamed),
        413,
        "payload_too_large",
        None,
    )
    .await;
}

#[tokio::test]
async fn non_json_content_types_are_415() {
    let (app, _) = mk_app(config());
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = Request::post("/v1/flows/f/events");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let req = req.body(Body::from(upsert_flow("f"))).unwrap();
        assert_error(
            &app,
            req,
            415,
            "unsupported_media_type",
            Some("Content-Type"),
        )
        .await;
    }
    let req = Request::post("/v1/flows/f/events")
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(upsert_flow("f")))
        .unwrap();
    assert_eq!(call(&app, req).await.status, 200);
}

#[tokio::test]
async fn tokens_guard_ingest_and_read_separately() {
    let cfg = Config {
        auth: Auth::new(vec!["w1".into(), "w2".into()], vec!["r1".into()]),
        ..config()
    };
    let (app, _) = mk_app(cfg);
    let post_with = |tok: Option<&str>| {
        let mut r = Request::post("/v1/flows/f/events").header("content-type", "application/json");
        if let Some(t) = tok {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::from(upsert_flow("f"))).unwrap()
    };
    // Ingest: missing, wrong, a read token, a query token (headers only for ingest) → 401.
    assert_error(&app, post_with(None), 401, "unauthorized", None).await;
    assert_error(&app, post_with(Some("nope")), 401, "unauthorized", None).await;
    assert_error(&app, post_with(Some("r1")), 401, "unauthorized", None).await;
    let r = call(&app, post_with(None)).await;
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let q = Request::post("/v1/flows/f/events?access_token=w1")
        .header("content-type", "application/json")
        .body(Body::from(upsert_flow("f")))
        .unwrap();
    assert_error(&app, q, 401, "unauthorized", None).await;
    assert_eq!(call(&app, post_with(Some("w2"))).await.status, 200);

    // Read: header or ?access_token=; an ingest token does not read.
    assert_error(
        &app,
        get_req("/v1/flows/f/snapshot"),
        401,
        "unauthorized",
        None,
    )
    .await;
    let with = |path: &str, tok: &str| {
        Request::get(path)
            .header("authorization", format!("Bearer {tok}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_error(
        &app,
        with("/v1/flows/f/snapshot", "w1"),
        401,
        "unauthorized",
        None,
    )
    .await;
    assert_eq!(
        call(&app, with("/v1/flows/f/snapshot", "r1")).await.status,
        200
    );
    assert_eq!(
        call(&app, get_req("/v1/flows/f/snapshot?access_token=r1"))
            .await
            .status,
        200
    );
    assert_error(
        &app,
        get_req("/v1/flows/f/stream"),
        401,
        "unauthorized",
        None,
    )
    .await;
    assert_error(
        &app,
        get_req("/v1/flows/f/stream?access_token=bad"),
        401,
        "unauthorized",
        None,
    )
    .await;
    let stream = app
        .clone()
        .oneshot(get_req("/v1/flows/f/stream?access_token=r1"))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    // DELETE is an ingest action.
    let del = |tok: Option<&str>| {
        let mut r = Request::delete("/v1/flows/f");
        if let Some(t) = tok {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    };
    assert_error(&app, del(Some("r1")), 401, "unauthorized", None).await;
    assert_eq!(call(&app, del(Some("w1"))).await.status, 204);
}

#[tokio::test]
async fn delete_is_204_idempotent_and_removes_the_flow() {
    let (app, _) = mk_app(config());
    assert_eq!(
        call(&app, post_req("f", upsert_flow("f"))).await.status,
        200
    );
    let del = |p: &str| Request::delete(p).body(Body::empty()).unwrap();
    let r = call(&app, del("/v1/flows/f")).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_error(
        &app,
        get_req("/v1/flows/f/snapshot"),
        404,
        "not_found",
        None,
    )
    .await;
    assert_eq!(call(&app, del("/v1/flows/f")).await.status, 204);
    assert_eq!(
        call(&app, del("/v1/flows/never-existed/")).await.status,
        204
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_as_json() {
    let (app, _) = mk_app(config());
    assert_error(&app, get_req("/nope"), 404, "not_found", None).await;
    assert_error(&app, get_req("/v1/flows/"), 404, "not_found", None).await;
    assert_error(
        &app,
        get_req("/v1/flows/f/events"),
        405,
        "method_not_allowed",
        None,
    )
    .await;
    let put = Request::put("/v1/flows/f/snapshot")
        .body(Body::empty())
        .unwrap();
    assert_error(&app, put, 405, "method_not_allowed", None).await;
}

#[tokio::test]
async fn flow_ids_are_bounded() {
    let (app, _) = mk_app(config());
    let long = "x".repeat(513);
    assert_error(
        &app,
        post_req(&long, upsert_flow(&long)),
        400,
        "invalid_flow_id",
        Some("flowId"),
    )
    .await;
    // Percent-encoded ids are decoded (upstream: URL-decoded first segment).
    let r = call(&app, post_req("a%20b", upsert_flow("a b"))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn per_flow_limits_are_422_naming_the_field() {
    let mut cfg = config();
    cfg.hub.limits.max_nodes = 1;
    let (app, _) = mk_app(cfg);
    assert_eq!(
        call(&app, post_req("f", upsert_nodes("f", "a", "x")))
            .await
            .status,
        200
    );
    assert_eq!(
        call(&app, post_req("f", upsert_nodes("f", "a", "y")))
            .await
            .status,
        200
    );
    assert_error(
        &app,
        post_req("f", upsert_nodes("f", "b", "x")),
        422,
        "limit_exceeded",
        Some("nodes"),
    )
    .await;
}

#[tokio::test]
async fn the_flow_bound_is_503_when_every_flow_is_watched() {
    let mut cfg = config();
    cfg.hub.max_flows = 1;
    let (app, state) = mk_app(cfg);
    let _watching = state.hub().subscribe("a", None).unwrap();
    assert_error(
        &app,
        post_req("b", upsert_flow("b")),
        503,
        "too_many_flows",
        None,
    )
    .await;
}

#[tokio::test]
async fn health_ready_metrics_and_descriptor() {
    let (app, state) = mk_app(config());
    let h = call(&app, get_req("/healthz")).await;
    assert_eq!((h.status.as_u16(), h.body.as_slice()), (200, &b"ok\n"[..]));
    assert_eq!(call(&app, get_req("/readyz")).await.status, 200);
    let d = call(&app, get_req("/")).await;
    assert_eq!(d.json()["service"], "openova-flow-server");
    let head = call(
        &app,
        Request::builder()
            .method(Method::HEAD)
            .uri("/")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    call(&app, post_req("f", upsert_flow("f"))).await;
    let m = call(&app, get_req("/metrics")).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains(r#"flow_server_ingested_events_total{type="upsert-flow"} 1"#),
        "{text}"
    );
    assert!(text.contains("flow_server_flows 1"), "{text}");
    state.begin_shutdown();
    let r = call(&app, get_req("/readyz")).await;
    assert_eq!(r.status, 503);
    assert_eq!(call(&app, get_req("/healthz")).await.status, 200);
}

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contract/tests/fixtures")
        .join(name);
    let mut b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    while b.last() == Some(&b'\n') {
        b.pop();
    }
    b
}

#[tokio::test]
async fn upstream_fixtures_are_accepted_unchanged() {
    let (app, _) = mk_app(config());
    let flow = "sovereign-omantel";
    // The full snapshot round-trips byte for byte through the materialised view.
    let snap = fixture("snapshot.json");
    assert_eq!(call(&app, post_req(flow, snap.clone())).await.status, 200);
    let got = call(&app, get_req(&format!("/v1/flows/{flow}/snapshot"))).await;
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        String::from_utf8_lossy(&snap)
    );
    for name in [
        "snapshot-empty.json",
        "upsert-flow.json",
        "upsert-nodes.json",
        "upsert-rels.json",
        "delete-rels.json",
        "delete-nodes.json",
    ] {
        let r = call(&app, post_req(flow, fixture(name))).await;
        assert_eq!(
            r.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["seq"].as_u64().is_some());
    }
    let v = call(&app, get_req(&format!("/v1/flows/{flow}/snapshot")))
        .await
        .json();
    assert_eq!(v["flow"]["status"], "succeeded");
}

#[tokio::test]
async fn garbage_never_breaks_the_server() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let (app, _) = mk_app(config());
    let mut runner = TestRunner::deterministic();
    let bodies = proptest::collection::vec(any::<u8>(), 0..300);
    let json_ish = "[{}\\[\\]\":,a-z0-9 -]{0,200}";
    for i in 0..300 {
        let body: Vec<u8> = if i % 2 == 0 {
            bodies.new_tree(&mut runner).unwrap().current()
        } else {
            let s: String = json_ish.new_tree(&mut runner).unwrap().current();
            format!(r#"{{"type":"upsert-nodes","nodes":[{s}]}}"#).into_bytes()
        };
        let r = call(&app, post_req("f", body)).await;
        assert!(
            r.status == 200 || r.status == 400,
            "status {} for garbage: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(call(&app, get_req("/healthz")).await.status, 200);
}
