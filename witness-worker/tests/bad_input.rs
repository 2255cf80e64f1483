//! Generated bad input (bodies, headers, paths, methods) never gets a 5xx, and any request
//! that is not answered 2xx leaves the lease state exactly as it was. Runs against the
//! witness-server core in-process (thousands of cases) and over HTTP against the wasm Worker
//! in workerd (a few hundred).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use std::cell::Cell;
use witness_worker::api::{Incoming, Method};
use witness_worker::server::{Witness, system_clock};
use witness_worker::store::FileStore;

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    auth: Option<String>,
    if_match: Option<String>,
    x_holder: Option<String>,
    request_id: Option<String>,
    body: Vec<u8>,
}

fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ -~]{0,40}",
        any::<String>().prop_map(|s| s.chars().take(60).collect()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just(serde_json::json!(null)),
        Just(serde_json::json!("region-a")),
        Just(serde_json::json!("")),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!([1, 2])),
        Just(serde_json::json!({"x": 1})),
        Just(serde_json::json!("acquire")),
        Just(serde_json::json!("release")),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (field.clone(), field.clone(), field).prop_map(|(h, t, o)| {
            serde_json::to_vec(&serde_json::json!({"holder": h, "ttlSeconds": t, "op": o})).unwrap()
        }),
        junk().prop_map(String::into_bytes),
    ]
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"]),
        prop_oneof![
            Just("/lease/fuzz".to_string()),
            "/lease/[a-z%0-9/]{0,12}",
            "/[ -~]{0,20}"
        ],
        prop::option::of(prop_oneof![
            Just("Bearer tok-a".to_string()),
            Just("Bearer tok-b".to_string()),
            junk()
        ]),
        prop::option::of(prop_oneof![
            Just("1".to_string()),
            Just("W/\"1\"".to_string()),
            junk()
        ]),
        prop::option::of(prop_oneof![
            Just("region-a".to_string()),
            Just("region-b".to_string()),
            junk()
        ]),
        prop::option::of(junk()),
        body(),
    )
        .prop_map(
            |(method, path, auth, if_match, x_holder, request_id, body)| Req {
                method,
                path,
                auth,
                if_match,
                x_holder,
                request_id,
                body,
            },
        )
}

fn incoming(r: &Req) -> Incoming {
    Incoming {
        method: Some(Method::parse(r.method)),
        path: r.path.clone(),
        authorization: r.auth.clone(),
        if_match: r.if_match.clone(),
        x_holder: r.x_holder.clone(),
        request_id: r.request_id.clone(),
        body: r.body.clone(),
    }
}

fn good_acquire(holder: &str) -> Incoming {
    Incoming {
        method: Some(Method::Put),
        path: "/lease/fuzz".into(),
        authorization: Some("Bearer tok-any".into()),
        if_match: Some("0".into()),
        body: format!(r#"{{"holder":"{holder}","ttlSeconds":3600,"op":"acquire"}}"#).into_bytes(),
        ..Incoming::default()
    }
}

async fn read(w: &Witness) -> String {
    let r = w
        .handle(Incoming {
            method: Some(Method::Get),
            path: "/lease/fuzz".into(),
            authorization: Some("Bearer tok-any".into()),
            ..Incoming::default()
        })
        .await;
    // Drop witnessNow: only the lease state must not change.
    let mut v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v.as_object_mut().unwrap().remove("witnessNow");
    v.to_string()
}

#[tokio::test]
async fn generated_bad_requests_never_5xx_or_change_state_on_witness_server() {
    let dir = tempfile::tempdir().unwrap();
    let w = Witness::new(
        FileStore::open(dir.path().join("s.json")).unwrap(),
        common::tokens(),
        system_clock(),
    );
    assert_eq!(w.handle(good_acquire("region-a")).await.status, 200);
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = proptest::collection::vec(request(), 1..2);
    let rt = tokio::runtime::Handle::current();
    let n = Cell::new(0u64);
    // proptest's runner is synchronous; drive each case on this runtime from a blocking thread.
    let w2 = w.clone();
    let result = tokio::task::spawn_blocking(move || {
        runner
            .run(&cases, |reqs| {
                for r in reqs {
                    n.set(n.get() + 1);
                    let (before, resp, after) = rt.block_on(async {
                        let before = read(&w2).await;
                        let resp = w2.handle(incoming(&r)).await;
                        (before, resp, read(&w2).await)
                    });
                    prop_assert!(resp.status < 500, "{r:?} -> {}", resp.status);
                    if !(200..300).contains(&resp.status) {
                        prop_assert_eq!(
                            &before,
                            &after,
                            "{:?} -> {} changed state",
                            r,
                            resp.status
                        );
                    }
                }
                Ok(())
            })
            .map(|_| n.get())
    })
    .await
    .unwrap();
    let n = result.expect("no 5xx, no state change on refusal");
    println!("witness-server: {n} generated requests, 0 5xx, 0 state changes on refusal");
}

#[tokio::test]
async fn generated_bad_requests_never_5xx_on_the_wasm_worker() {
    let w = common::start_workerd().await;
    let base = w.url().trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let mut runner = TestRunner::new(Config {
        cases: 250,
        failure_persistence: None,
        ..Config::default()
    });
    let tree_cases: Vec<Req> = (0..250)
        .map(|_| request().new_tree(&mut runner).unwrap().current())
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for r in &tree_cases {
        let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
        // Paths that are not valid URL paths are refused by the client; skip those inputs.
        let Ok(url) = reqwest::Url::parse(&format!("{base}{}", r.path)) else {
            continue;
        };
        let mut rb = http.request(method, url).body(r.body.clone());
        for (k, v) in [
            ("Authorization", &r.auth),
            ("If-Match", &r.if_match),
            ("X-Holder", &r.x_holder),
            ("X-Request-Id", &r.request_id),
        ] {
            if let Some(v) = v
                && let Ok(v) = reqwest::header::HeaderValue::from_str(v)
            {
                rb = rb.header(k, v);
            }
        }
        let status = match rb.send().await {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => panic!("{r:?}: {e}"),
        };
        assert!(status < 500, "{r:?} -> {status}");
        *statuses.entry(status).or_insert(0) += 1;
    }
    println!(
        "workerd: {} generated requests, statuses {statuses:?}",
        tree_cases.len()
    );
}
