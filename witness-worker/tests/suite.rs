//! The witness contract suite (upstream's 14 cases, `spec/upstream-continuum.md` §6.1, plus
//! epoch, idempotency and per-holder authorisation) run against three targets: the pure core,
//! `witness-server` over HTTP, and the built wasm Worker in real workerd with a Durable Object.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{Core, Http, LeaseApi, Refusal, Server, start_workerd};
use std::time::Duration;

/// A TTL long enough to never lapse during a case, and a short one for expiry cases.
const LONG: u64 = 60_000;
const SHORT: u64 = 800;
const PAST_SHORT: u64 = 1_300;

async fn suite(api: &impl LeaseApi, p: &str) {
    let slot = |name: &str| format!("{p}/{name}");

    // 1. AcquireOnEmptySlot
    let s = api
        .acquire(&slot("empty"), "region-a", LONG)
        .await
        .expect("acquire on empty");
    assert!(s.generation >= 1 && s.epoch >= 1, "acquire on empty: {s:?}");
    assert!(s.expires_at > s.acquired_at, "acquire on empty: {s:?}");

    // 2. AcquireBlockedByAnother
    api.acquire(&slot("blocked"), "region-a", LONG)
        .await
        .expect("first");
    assert_eq!(
        api.acquire(&slot("blocked"), "region-b", LONG).await,
        Err(Refusal::Held),
        "blocked"
    );

    // 3. AcquireAfterExpiry (and the epoch moves on)
    let a = api
        .acquire(&slot("expiry"), "region-a", SHORT)
        .await
        .expect("a");
    api.pass(PAST_SHORT).await;
    let b = api
        .acquire(&slot("expiry"), "region-b", LONG)
        .await
        .expect("b after expiry");
    assert_eq!(b.holder, "region-b");
    assert!(b.epoch > a.epoch, "epoch after handover: {a:?} -> {b:?}");

    // 4. AcquireSameHolderExtendsTTL
    let a1 = api
        .acquire(&slot("extend"), "region-a", LONG)
        .await
        .expect("a1");
    api.pass(20).await;
    let a2 = api
        .acquire(&slot("extend"), "region-a", LONG)
        .await
        .expect("a2");
    assert_eq!(a2.acquired_at, a1.acquired_at, "acquiredAt stable");
    assert!(a2.expires_at >= a1.expires_at, "expiresAt non-decreasing");
    assert_eq!(a2.epoch, a1.epoch, "no new epoch for the same holder");

    // 5. RenewExtendsTTLAndBumpsGeneration
    let r0 = api
        .acquire(&slot("renew"), "region-a", LONG)
        .await
        .expect("r0");
    api.pass(20).await;
    let r1 = api
        .renew(&slot("renew"), "region-a", LONG)
        .await
        .expect("renew");
    assert!(r1.generation > r0.generation && r1.expires_at >= r0.expires_at);
    assert_eq!(r1.epoch, r0.epoch);

    // 6. RenewAfterExpiryReturnsLost
    api.acquire(&slot("renew-late"), "region-a", SHORT)
        .await
        .expect("acquire");
    api.pass(PAST_SHORT).await;
    assert_eq!(
        api.renew(&slot("renew-late"), "region-a", LONG).await,
        Err(Refusal::Lost)
    );

    // 7. RenewByNonHolderReturnsLost
    api.acquire(&slot("renew-other"), "region-a", LONG)
        .await
        .expect("acquire");
    assert_eq!(
        api.renew(&slot("renew-other"), "region-b", LONG).await,
        Err(Refusal::Lost)
    );

    // 8. ReleaseIdempotent
    api.acquire(&slot("release"), "region-a", LONG)
        .await
        .expect("acquire");
    api.release(&slot("release"), "region-a")
        .await
        .expect("release");
    api.release(&slot("release"), "region-a")
        .await
        .expect("release again");
    assert_eq!(api.read(&slot("release")).await.expect("read").holder, "");

    // 9. ReleaseByNonHolderIsNoOp
    api.acquire(&slot("release-other"), "region-a", LONG)
        .await
        .expect("acquire");
    api.release(&slot("release-other"), "region-b")
        .await
        .expect("no-op");
    assert_eq!(
        api.read(&slot("release-other")).await.expect("read").holder,
        "region-a"
    );

    // 10. SlotIsolation
    api.acquire(&slot("iso-1"), "region-a", LONG)
        .await
        .expect("iso-1");
    api.acquire(&slot("iso-2"), "region-b", LONG)
        .await
        .expect("iso-2 is another slot");

    // 11. GenerationMonotonicityAcrossOps
    let mut last = 0;
    let g = slot("gen");
    for step in 0..4 {
        let s = match step {
            0 | 2 => api.acquire(&g, "region-a", LONG).await.expect("acquire"),
            1 => api.renew(&g, "region-a", LONG).await.expect("renew"),
            _ => {
                api.release(&g, "region-a").await.expect("release");
                api.read(&g).await.expect("read")
            }
        };
        assert!(s.generation > last, "generation step {step}: {s:?}");
        last = s.generation;
    }

    // 12. ReadOnEmptySlot
    let e = api.read(&slot("never")).await.expect("read empty");
    assert_eq!((e.holder.as_str(), e.generation), ("", 0));

    // 13. ReadAfterTTLEvictionReportsFree (proved by another holder acquiring)
    api.acquire(&slot("evict"), "region-a", SHORT)
        .await
        .expect("acquire");
    api.pass(PAST_SHORT).await;
    let b = api
        .acquire(&slot("evict"), "region-b", LONG)
        .await
        .expect("free after TTL");
    assert_eq!(b.holder, "region-b");

    // Extra: the epoch is never reused across release and re-acquire.
    let x = slot("epoch");
    let e1 = api.acquire(&x, "region-a", LONG).await.expect("e1").epoch;
    api.release(&x, "region-a").await.expect("release");
    let e2 = api.acquire(&x, "region-b", LONG).await.expect("e2").epoch;
    api.release(&x, "region-b").await.expect("release");
    let e3 = api.acquire(&x, "region-a", LONG).await.expect("e3").epoch;
    assert!(e1 < e2 && e2 < e3, "epochs {e1} {e2} {e3}");
}

#[tokio::test]
async fn contract_suite_on_the_pure_core() {
    suite(&Core::new(), "core").await;
}

#[tokio::test]
async fn contract_suite_on_witness_server() {
    let server = Server::start().await;
    suite(&server.http("tok-any"), "native").await;
    http_extras(&server.url).await;
}

#[tokio::test]
async fn contract_suite_on_the_wasm_worker_in_workerd() {
    let w = start_workerd().await;
    let url = w.url().trim_end_matches('/').to_owned();
    suite(
        &Http {
            base_url: url.clone(),
            token: "tok-any".into(),
        },
        "wasm",
    )
    .await;
    http_extras(&url).await;
}

/// Wire-level cases: idempotent replay, per-holder tokens, upstream's error bodies, CAS.
async fn http_extras(base: &str) {
    let http = reqwest::Client::new();
    let url = |slot: &str| format!("{base}/lease/{slot}");
    let put =
        |slot: &str, tok: &str, generation: u64, rid: Option<&str>, body: serde_json::Value| {
            let mut r = http
                .put(url(slot))
                .bearer_auth(tok)
                .header("If-Match", format!("\"{generation}\""))
                .json(&body);
            if let Some(id) = rid {
                r = r.header("X-Request-Id", id);
            }
            r.send()
        };
    let acquire =
        |holder: &str| serde_json::json!({"holder": holder, "ttlSeconds": 60, "op": "acquire"});

    // Replay with the same X-Request-Id: identical status and body, epoch not burned.
    let r1 = put("idem", "tok-a", 0, Some("req-1"), acquire("region-a"))
        .await
        .unwrap();
    assert_eq!(r1.status(), 200);
    let b1 = r1.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r2 = put("idem", "tok-a", 0, Some("req-1"), acquire("region-a"))
        .await
        .unwrap();
    assert_eq!(r2.status(), 200);
    assert_eq!(
        r2.headers().get("x-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(r2.text().await.unwrap(), b1, "a replay answers identically");
    let v: serde_json::Value = serde_json::from_str(&b1).unwrap();
    assert_eq!(v["epoch"], 1);
    assert!(v["witnessNow"].is_string());

    // A stale If-Match is a 412 with the current state and the reason.
    let r = put("idem", "tok-b", 0, None, acquire("region-b"))
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["holder"].as_str(), v["conflict"].as_str()),
        (Some("region-a"), Some("generation-mismatch"))
    );

    // Held by another with a fresh If-Match: 412 held-by-another.
    let r = put("idem", "tok-b", 1, None, acquire("region-b"))
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["conflict"], "held-by-another");

    // Per-token holder binding: tok-a may not act as region-b.
    let r = put("bind", "tok-a", 0, None, acquire("region-b"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "forbidden_holder"
    );

    // Per-token slot binding: tok-bound may act as region-a on slot "bound" only. Anywhere
    // else it is refused with 403 forbidden_slot and changes nothing.
    let r = put("bound-elsewhere", "tok-bound", 0, None, acquire("region-a"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "forbidden_slot", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("bound-elsewhere"),
        "{v}"
    );
    let r = http
        .get(url("bound-elsewhere"))
        .bearer_auth("tok-any")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a refused request wrote nothing");
    // Not even region-a's lease of another slot can be released with it.
    let r = http
        .delete(url("idem"))
        .bearer_auth("tok-bound")
        .header("If-Match", "1")
        .header("X-Holder", "region-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = http
        .get(url("idem"))
        .bearer_auth("tok-any")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["holder"].as_str(), v["generation"].as_u64()),
        (Some("region-a"), Some(1))
    );
    let r = put("bound", "tok-bound", 0, None, acquire("region-a"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "its own slot works");

    // Unknown token, missing If-Match, bad JSON, wrong path, wrong method.
    let r = put("x", "nope", 0, None, acquire("region-a"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .put(url("x"))
        .bearer_auth("tok-a")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_json"
    );
    let r = http
        .put(url("x"))
        .bearer_auth("tok-a")
        .json(&acquire("region-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "missing_if_match"
    );
    let r = http
        .get(format!("{base}/nope"))
        .bearer_auth("tok-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(url("x"))
        .bearer_auth("tok-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // GET of a never-written slot is 404 (upstream); DELETE of one is 204.
    let r = http
        .get(url("never"))
        .bearer_auth("tok-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .delete(url("never"))
        .bearer_auth("tok-a")
        .header("If-Match", "0")
        .header("X-Holder", "region-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The holder's report is kept by the witness and returned to every reader.
    let body = serde_json::json!({"holder": "region-a", "ttlSeconds": 60, "op": "acquire",
        "report": {"synchronous": false, "flushedLsn": "0/3000148"}});
    let r = put("report", "tok-a", 0, None, body).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = http
        .get(url("report"))
        .bearer_auth("tok-b")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["report"]["synchronous"], false);
    assert_eq!(v["report"]["flushedLsn"], "0/3000148");
    // A slot name with "/" travels URL-encoded, as upstream's client sends it.
    let r = put("app%2Fdb", "tok-a", 0, None, acquire("region-a"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Rule 11: after an opt-in DNS-quorum takeover issued epoch N elsewhere, raising the witness's
/// floor makes its next grant exceed N, on both runtimes.
async fn floor_is_honoured(base: &str) {
    let http = reqwest::Client::new();
    let url = format!("{base}/lease/floor");
    let put = |body: serde_json::Value, generation: u64| {
        http.put(&url)
            .bearer_auth("tok-any")
            .header("If-Match", generation.to_string())
            .json(&body)
            .send()
    };
    let r = put(
        serde_json::json!({"holder": "region-b", "op": "raise-floor", "epoch": 41}),
        0,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["epochFloor"],
        41
    );
    let r = put(
        serde_json::json!({"holder": "region-b", "op": "raise-floor"}),
        0,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "epoch is required");
    let r = put(
        serde_json::json!({"holder": "region-a", "ttlSeconds": 60, "op": "acquire"}),
        0,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["epoch"], 42);

    // The floor may not jump more than 2^32 above the slot's epoch (42 now), nor leave no
    // epoch to grant: such requests are refused and change nothing.
    let raise =
        |epoch: u64| serde_json::json!({"holder": "region-b", "op": "raise-floor", "epoch": epoch});
    for epoch in [u64::MAX, u64::MAX - 1, 42 + (1u64 << 32) + 1] {
        let r = put(raise(epoch), 0).await.unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert!(
            status.is_client_error(),
            "raise-floor to {epoch}: {status} {v}"
        );
        assert!(
            v["error"].as_str().unwrap_or("").starts_with("epoch"),
            "{v}"
        );
    }
    let r = put(raise(42 + (1u64 << 32)), 0).await.unwrap();
    assert_eq!(r.status(), 200, "a jump of exactly 2^32 is allowed");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["epochFloor"],
        42 + (1u64 << 32)
    );
}

#[tokio::test]
async fn epoch_floor_on_witness_server() {
    let server = Server::start().await;
    floor_is_honoured(&server.url).await;
}

#[tokio::test]
async fn epoch_floor_on_the_wasm_worker() {
    let w = start_workerd().await;
    floor_is_honoured(w.url().trim_end_matches('/')).await;
}

/// A slot whose epochs are used up (state at u64::MAX, as only a stored state can be now that
/// floors move in bounded steps) refuses a new grant with 409 and keeps its state, instead of
/// handing out u64::MAX a second time.
#[tokio::test]
async fn a_used_up_slot_refuses_grants_on_witness_server() {
    use witness_worker::server::{Witness, system_clock};
    use witness_worker::store::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let top = serde_json::json!({"top": {"state": {"holder": "", "generation": 9,
        "epoch": u64::MAX}, "epochFloor": 0}});
    std::fs::write(&path, serde_json::to_vec(&top).unwrap()).unwrap();
    let w = Witness::new(
        FileStore::open(&path).unwrap(),
        common::tokens(),
        system_clock(),
    );
    let put = witness_worker::api::Incoming {
        method: Some(witness_worker::api::Method::Put),
        path: "/lease/top".into(),
        authorization: Some("Bearer tok-a".into()),
        if_match: Some("9".into()),
        body: br#"{"holder":"region-a","ttlSeconds":30,"op":"acquire"}"#.to_vec(),
        ..Default::default()
    };
    let before = std::fs::read(&path).unwrap();
    let r = w.handle(put).await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (409, Some("epoch_exhausted"))
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
}
