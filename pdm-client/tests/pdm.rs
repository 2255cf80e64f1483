//! The PDM backend against an in-test axum server.
//!
//! **This server is not PDM.** It is a strict stand-in that enforces the documented request
//! shapes: upstream's `POST /v1/lua/commit` (`internal/pdm/client.go`: JSON body
//! `{zone, records:[{hostname, luaBody, ttl, primaryRegion}]}` with no other field, records
//! sorted by hostname, `Content-Type`/`Accept: application/json`, `X-Catalyst-Token`) — a route
//! upstream's PDM does not implement — plus PDM's documented pool endpoints
//! (`core/pool-domain-manager/api/openapi.yaml` and `internal/handler/handler.go`: status codes
//! and bodies as documented there). It also plays a fencing-aware PDM: a commit whose
//! `X-Continuum-Epoch` is lower than one it already accepted gets 409.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use pdm_client::lua::{self, Placement, PlacementSpec, RegionSpec};
use pdm_client::model::{PoolCommitRequest, ReserveRequest};
use pdm_client::pdm::PoolCommitted;
use pdm_client::{DnsControl, DnsUpdate, Error, PdmClient, PdmConfig};
use serde::Deserialize;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret";

/// Upstream's LUA commit body, declared here independently of the crate's model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    zone: String,
    records: Vec<CommitRecord>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CommitRecord {
    hostname: String,
    lua_body: String,
    ttl: u32,
    primary_region: String,
}

#[derive(Default)]
struct Fake {
    /// Raw bodies of accepted LUA commits.
    commits: Mutex<Vec<String>>,
    /// Highest epoch accepted.
    epoch: Mutex<Option<u64>>,
    /// Requests per route label.
    hits: Mutex<BTreeMap<&'static str, u32>>,
    /// Answer 503 to this many requests of the flaky routes first.
    fail_first: AtomicU32,
    /// Pool allocations by (domain, sub): (state, token).
    pool: Mutex<BTreeMap<(String, String), (String, String)>>,
}

impl Fake {
    fn hit(&self, route: &'static str) {
        *self.hits.lock().unwrap().entry(route).or_default() += 1;
    }

    fn hits(&self, route: &'static str) -> u32 {
        self.hits.lock().unwrap().get(route).copied().unwrap_or(0)
    }

    fn flaky(&self) -> bool {
        self.fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn err(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({"error": code, "detail": detail}))).into_response()
}

async fn lua_commit(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: String) -> Response {
    fake.hit("lua");
    if fake.flaky() {
        return err(StatusCode::SERVICE_UNAVAILABLE, "busy", "try again");
    }
    if headers
        .get("x-catalyst-token")
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "bad token");
    }
    let json_header =
        |name| headers.get(name).and_then(|v| v.to_str().ok()) == Some("application/json");
    if !json_header(header::CONTENT_TYPE) || !json_header(header::ACCEPT) {
        return err(
            StatusCode::BAD_REQUEST,
            "headers",
            "JSON content type and accept required",
        );
    }
    let parsed: CommitBody = match serde_json::from_str(&body) {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, "body", &e.to_string()),
    };
    let sorted = parsed
        .records
        .windows(2)
        .all(|w| w[0].hostname < w[1].hostname);
    let valid = !parsed.zone.is_empty()
        && !parsed.records.is_empty()
        && sorted
        && parsed.records.iter().all(|r| {
            r.hostname.ends_with(&format!(".{}", parsed.zone))
                && !r.lua_body.is_empty()
                && !r.lua_body.contains('"')
                && r.ttl > 0
                && !r.primary_region.is_empty()
        });
    if !valid {
        return err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "records do not match the documented shape",
        );
    }
    let epoch: Option<u64> = headers
        .get("x-continuum-epoch")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut stored = fake.epoch.lock().unwrap();
    if let (Some(have), Some(got)) = (*stored, epoch)
        && got < have
    {
        return err(
            StatusCode::CONFLICT,
            "stale-epoch",
            &format!("have {have}, got {got}"),
        );
    }
    *stored = (*stored).max(epoch);
    fake.commits.lock().unwrap().push(body);
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

async fn healthz(State(fake): State<Arc<Fake>>) -> Response {
    fake.hit("healthz");
    if fake.flaky() {
        return err(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", "db down");
    }
    Json(json!({"status": "ok", "managedDomains": ["omani.works"]})).into_response()
}

async fn reserved() -> Response {
    Json(json!({"reserved": ["api", "www"]})).into_response()
}

#[derive(Deserialize)]
struct Sub {
    sub: String,
}

async fn check(
    State(fake): State<Arc<Fake>>,
    Path(domain): Path<String>,
    Query(q): Query<Sub>,
) -> Response {
    let taken = fake
        .pool
        .lock()
        .unwrap()
        .contains_key(&(domain.clone(), q.sub.clone()));
    Json(json!({
        "available": !taken,
        "reason": if taken { "taken" } else { "" },
        "fqdn": format!("{}.{domain}", q.sub),
    }))
    .into_response()
}

async fn reserve(
    State(fake): State<Arc<Fake>>,
    Path(domain): Path<String>,
    body: String,
) -> Response {
    fake.hit("reserve");
    if fake.flaky() {
        return err(StatusCode::SERVICE_UNAVAILABLE, "busy", "try again");
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return err(StatusCode::BAD_REQUEST, "invalid JSON body", "");
    };
    let sub = req["subdomain"].as_str().unwrap_or_default().to_owned();
    if sub.is_empty() || !sub.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-format",
            "bad label",
        );
    }
    let mut pool = fake.pool.lock().unwrap();
    let key = (domain.clone(), sub.clone());
    if pool.contains_key(&key) {
        return err(
            StatusCode::CONFLICT,
            "conflict",
            "this subdomain is already reserved or active",
        );
    }
    let token = format!("tok-{sub}");
    pool.insert(key, ("reserved".into(), token.clone()));
    (
        StatusCode::CREATED,
        Json(json!({
            "poolDomain": domain, "subdomain": sub, "state": "reserved",
            "reservedAt": "2026-01-01T00:00:00Z", "expiresAt": "2026-01-01T00:10:00Z",
            "reservationToken": token, "createdBy": req["createdBy"],
        })),
    )
        .into_response()
}

async fn pool_commit(
    State(fake): State<Arc<Fake>>,
    Path(domain): Path<String>,
    Json(req): Json<Value>,
) -> Response {
    let sub = req["subdomain"].as_str().unwrap_or_default().to_owned();
    for field in [
        "subdomain",
        "reservationToken",
        "sovereignFQDN",
        "loadBalancerIP",
    ] {
        if req[field].as_str().is_none_or(str::is_empty) {
            return err(StatusCode::UNPROCESSABLE_ENTITY, "missing", field);
        }
    }
    if sub == "expired" {
        return err(StatusCode::GONE, "reservation-expired", "reserve again");
    }
    let mut pool = fake.pool.lock().unwrap();
    let Some((state, token)) = pool.get_mut(&(domain.clone(), sub.clone())) else {
        return err(StatusCode::NOT_FOUND, "not-found", "call /reserve first");
    };
    if req["reservationToken"] != *token {
        return err(StatusCode::FORBIDDEN, "token-mismatch", "wrong token");
    }
    if state == "active" {
        return err(StatusCode::CONFLICT, "already-active", "already active");
    }
    *state = "active".into();
    let alloc = json!({
        "poolDomain": domain, "subdomain": sub, "state": "active",
        "reservedAt": "2026-01-01T00:00:00Z", "createdBy": "t",
        "sovereignFQDN": req["sovereignFQDN"], "loadBalancerIP": req["loadBalancerIP"],
    });
    if sub == "dnsfail" {
        let mut body = alloc;
        body["warning"] =
            json!("row committed but PowerDNS write failed; retry commit to publish DNS");
        body["detail"] = json!("powerdns write: 502");
        return (StatusCode::ACCEPTED, Json(body)).into_response();
    }
    Json(alloc).into_response()
}

async fn release(
    State(fake): State<Arc<Fake>>,
    Path(domain): Path<String>,
    Json(req): Json<Value>,
) -> Response {
    fake.hit("release");
    let sub = req["subdomain"].as_str().unwrap_or_default().to_owned();
    match fake
        .pool
        .lock()
        .unwrap()
        .remove(&(domain.clone(), sub.clone()))
    {
        None => err(StatusCode::NOT_FOUND, "not-found", "no allocation exists"),
        Some((state, _)) => {
            Json(json!({"freed": {"poolDomain": domain, "subdomain": sub, "state": state}}))
                .into_response()
        }
    }
}

async fn list(State(fake): State<Arc<Fake>>, Path(domain): Path<String>) -> Response {
    let allocations: Vec<Value> = fake
        .pool
        .lock()
        .unwrap()
        .iter()
        .filter(|((d, _), _)| *d == domain)
        .map(|((d, s), (state, _))| json!({"poolDomain": d, "subdomain": s, "state": state}))
        .collect();
    Json(json!({"poolDomain": domain, "allocations": allocations})).into_response()
}

async fn slow() -> Response {
    // Longer than the client's timeout in `requests_time_out_with_a_typed_error`.
    tokio::time::sleep(Duration::from_secs(5)).await;
    StatusCode::OK.into_response()
}

async fn serve(fake: Arc<Fake>) -> SocketAddr {
    let app = Router::new()
        .route("/v1/lua/commit", post(lua_commit))
        .route("/healthz", get(healthz))
        .route("/slow/healthz", get(slow))
        .route("/api/v1/reserved", get(reserved))
        .route("/api/v1/pool/{domain}/check", get(check))
        .route("/api/v1/pool/{domain}/reserve", post(reserve))
        .route("/api/v1/pool/{domain}/commit", post(pool_commit))
        .route("/api/v1/pool/{domain}/release", delete(release))
        .route("/api/v1/pool/{domain}/list", get(list))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client(addr: SocketAddr, token: Option<&str>) -> PdmClient {
    let mut config = PdmConfig::new(format!("http://{addr}"));
    config.token = token.map(str::to_owned);
    config.timeout = Duration::from_secs(2);
    PdmClient::new(config).unwrap()
}

fn update(epoch: u64, primary: &str) -> DnsUpdate {
    let spec = PlacementSpec::new(Placement::ActiveHotStandby, primary)
        .region(RegionSpec::new("hz-fsn-rtz-prod", ["5.1.2.3", "5.1.2.4"]))
        .region(RegionSpec::new("hz-hel-rtz-prod", ["5.5.6.7"]))
        .probe_url("https://probe.example.com/healthz");
    let rendered = lua::render(&spec).unwrap();
    DnsUpdate::new("example.com", epoch).records(["web.example.com", "api.example.com"], &rendered)
}

#[tokio::test]
async fn lua_commit_sends_upstreams_body_and_headers() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    let pdm: Arc<dyn DnsControl> = Arc::new(client(addr, Some(TOKEN)));
    let applied = pdm.apply(&update(3, "hz-hel-rtz-prod")).await.unwrap();
    assert_eq!(applied.changed, ["api.example.com", "web.example.com"]);
    assert_eq!(applied.previous_epoch, None);
    let body = "ifurlup('https://probe.example.com/healthz', {{'5.5.6.7'}, {'5.1.2.3', '5.1.2.4'}}, {selector='all', interval=5, timeout=2})";
    let expected = format!(
        r#"{{"zone":"example.com","records":[{{"hostname":"api.example.com","luaBody":"{body}","ttl":30,"primaryRegion":"hz-hel-rtz-prod"}},{{"hostname":"web.example.com","luaBody":"{body}","ttl":30,"primaryRegion":"hz-hel-rtz-prod"}}]}}"#
    );
    assert_eq!(*fake.commits.lock().unwrap(), [expected]);
}

#[tokio::test]
async fn wrong_or_missing_token_is_an_auth_error() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    for token in [None, Some("wrong")] {
        let e = client(addr, token)
            .apply(&update(1, "hz-fsn-rtz-prod"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Auth { status: 401, .. }), "{e:?}");
    }
    assert!(fake.commits.lock().unwrap().is_empty());
    // 401 is not retried.
    assert_eq!(fake.hits("lua"), 2);
}

#[tokio::test]
async fn a_stale_epoch_is_a_conflict_at_a_fencing_aware_pdm() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    let pdm = client(addr, Some(TOKEN));
    pdm.apply(&update(7, "hz-hel-rtz-prod")).await.unwrap();
    let e = pdm.apply(&update(6, "hz-fsn-rtz-prod")).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    assert_eq!(fake.commits.lock().unwrap().len(), 1);
}

/// Upstream's PDM has no `/v1/lua/commit`: it answers 404, which is a typed NotFound.
#[tokio::test]
async fn a_pdm_without_the_lua_route_is_not_found() {
    let app = Router::new().route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let e = client(addr, Some(TOKEN))
        .apply(&update(1, "hz-fsn-rtz-prod"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn server_errors_are_retried_for_idempotent_calls_only() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    let pdm = client(addr, Some(TOKEN));

    fake.fail_first.store(2, Ordering::SeqCst);
    assert_eq!(pdm.health().await.unwrap().status, "ok");
    assert_eq!(fake.hits("healthz"), 3);

    fake.fail_first.store(1, Ordering::SeqCst);
    pdm.apply(&update(1, "hz-fsn-rtz-prod")).await.unwrap();
    assert_eq!(fake.hits("lua"), 2, "the LUA commit (a REPLACE) is retried");

    fake.fail_first.store(1, Ordering::SeqCst);
    let e = pdm
        .reserve(
            "omani.works",
            &ReserveRequest {
                subdomain: "acme".into(),
                created_by: "t".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Server { status: 503, .. }), "{e:?}");
    assert_eq!(
        fake.hits("reserve"),
        1,
        "reserve is not idempotent: sent once"
    );

    fake.fail_first.store(5, Ordering::SeqCst);
    let e = pdm.health().await.unwrap_err();
    assert!(matches!(e, Error::Server { status: 503, .. }), "{e:?}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn requests_time_out_with_a_typed_error() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake).await;
    let mut config = PdmConfig::new(format!("http://{addr}/slow"));
    config.timeout = Duration::from_millis(300);
    let pdm = PdmClient::new(config).unwrap();
    let e = pdm.health().await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(e.metric_label(), "timeout");
}

#[tokio::test]
async fn pool_endpoints_follow_the_documented_status_codes() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    let pdm = client(addr, Some(TOKEN));
    let domain = "omani.works";

    assert_eq!(pdm.reserved().await.unwrap().reserved, ["api", "www"]);
    assert!(pdm.check(domain, "acme").await.unwrap().available);

    let r = pdm
        .reserve(
            domain,
            &ReserveRequest {
                subdomain: "acme".into(),
                created_by: "ops".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (r.state.as_str(), r.reservation_token.as_str()),
        ("reserved", "tok-acme")
    );
    assert!(!pdm.check(domain, "acme").await.unwrap().available);
    let dup = pdm
        .reserve(
            domain,
            &ReserveRequest {
                subdomain: "acme".into(),
                created_by: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::Conflict { .. }), "{dup:?}");
    let bad = pdm
        .reserve(
            domain,
            &ReserveRequest {
                subdomain: "Bad_Label".into(),
                created_by: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad, Error::Rejected { status: 422, .. }),
        "{bad:?}"
    );

    let commit = |sub: &str, token: &str| PoolCommitRequest {
        subdomain: sub.into(),
        reservation_token: token.into(),
        sovereign_fqdn: format!("{sub}.{domain}"),
        load_balancer_ip: "5.1.2.3".into(),
    };
    let e = pdm
        .commit(domain, &commit("acme", "wrong"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Auth { status: 403, .. }), "{e:?}");
    match pdm
        .commit(domain, &commit("acme", "tok-acme"))
        .await
        .unwrap()
    {
        PoolCommitted::Active(a) => {
            assert_eq!(
                (a.state.as_str(), a.load_balancer_ip.as_str()),
                ("active", "5.1.2.3")
            )
        }
        other => panic!("{other:?}"),
    }
    let e = pdm
        .commit(domain, &commit("acme", "tok-acme"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    let e = pdm.commit(domain, &commit("ghost", "x")).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    let e = pdm
        .commit(domain, &commit("expired", "x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Rejected { status: 410, .. }), "{e:?}");

    pdm.reserve(
        domain,
        &ReserveRequest {
            subdomain: "dnsfail".into(),
            created_by: String::new(),
        },
    )
    .await
    .unwrap();
    match pdm
        .commit(domain, &commit("dnsfail", "tok-dnsfail"))
        .await
        .unwrap()
    {
        PoolCommitted::DnsPending { allocation, detail } => {
            assert_eq!(allocation.state, "active");
            assert!(detail.contains("powerdns write"));
        }
        other => panic!("{other:?}"),
    }

    let listed = pdm.list(domain).await.unwrap();
    assert_eq!(listed.allocations.len(), 2);
    let released = pdm.release(domain, "acme").await.unwrap();
    assert_eq!(
        (released.freed.subdomain.as_str(), released.dns_pending),
        ("acme", false)
    );
    let e = pdm.release(domain, "acme").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert_eq!(fake.hits("release"), 2, "release is sent once per call");
}

#[tokio::test]
async fn nothing_is_sent_for_an_empty_or_invalid_update_and_reads_are_unsupported() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    let pdm = client(addr, Some(TOKEN));
    let e = pdm
        .apply(&DnsUpdate::new("example.com", 1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidUpdate(_)), "{e:?}");
    let single = PlacementSpec::new(Placement::SingleRegion, "a")
        .region(RegionSpec::new("a", ["192.0.2.1"]));
    let outside =
        DnsUpdate::new("example.org", 1).record("api.example.com", &lua::render(&single).unwrap());
    assert!(matches!(
        pdm.apply(&outside).await,
        Err(Error::InvalidUpdate(_))
    ));
    assert_eq!(fake.hits("lua"), 0);
    assert!(matches!(
        pdm.published("example.com", "api.example.com").await,
        Err(Error::Unsupported { backend: "pdm", .. })
    ));
}
