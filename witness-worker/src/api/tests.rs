//! Protocol parsing: every malformed input gets upstream's error code and no route.

use super::*;

fn tokens() -> Tokens {
    Tokens::new([("tok-a", vec!["region-a"]), ("tok-any", vec!["*"])])
}

fn put(body: &str) -> Incoming {
    Incoming {
        method: Some(Method::Put),
        path: "/lease/app%2Fdb".into(),
        authorization: Some("Bearer tok-a".into()),
        if_match: Some("W/\"0\"".into()),
        x_holder: None,
        request_id: Some("r-1".into()),
        body: body.as_bytes().to_vec(),
    }
}

const GOOD: &str = r#"{"holder":"region-a","ttlSeconds":30,"op":"acquire"}"#;

#[test]
fn a_valid_put_becomes_a_lease_request_for_the_decoded_slot() {
    let r = parse(&put(GOOD), &tokens()).unwrap();
    let Route::Change { slot, req } = r else {
        panic!()
    };
    assert_eq!(slot, "app/db");
    assert_eq!(req.op, LeaseOp::Acquire);
    assert_eq!(req.ttl_ms, 30_000);
    assert_eq!(req.if_match, Some(0));
    assert_eq!(req.request_id.as_deref(), Some("r-1"));
}

#[test]
fn malformed_requests_get_upstream_codes() {
    let mut no_if_match = put(GOOD);
    no_if_match.if_match = None;
    let mut bad_if_match = put(GOOD);
    bad_if_match.if_match = Some("abc".into());
    let mut no_auth = put(GOOD);
    no_auth.authorization = None;
    let mut wrong_token = put(GOOD);
    wrong_token.authorization = Some("Bearer nope".into());
    let mut other_path = put(GOOD);
    other_path.path = "/leases".into();
    let mut empty_slot = put(GOOD);
    empty_slot.path = "/lease/".into();
    let mut ctl_slot = put(GOOD);
    ctl_slot.path = "/lease/a%0Ab".into();
    let mut post = put(GOOD);
    post.method = Some(Method::Other);
    let mut big = put(GOOD);
    big.body = vec![b' '; MAX_BODY + 1];
    let cases: Vec<(Incoming, u16, &str)> = vec![
        (put("{"), 400, "invalid_json"),
        (put("[1]"), 400, "invalid_body"),
        (
            put(r#"{"ttlSeconds":30,"op":"acquire"}"#),
            400,
            "invalid_holder",
        ),
        (
            put(r#"{"holder":"","ttlSeconds":30,"op":"acquire"}"#),
            400,
            "invalid_holder",
        ),
        (
            put(r#"{"holder":7,"ttlSeconds":30,"op":"acquire"}"#),
            400,
            "invalid_holder",
        ),
        (
            put(r#"{"holder":"region-a","ttlSeconds":0,"op":"acquire"}"#),
            400,
            "invalid_ttl",
        ),
        (
            put(r#"{"holder":"region-a","ttlSeconds":"30","op":"acquire"}"#),
            400,
            "invalid_ttl",
        ),
        (
            put(r#"{"holder":"region-a","ttlSeconds":1e12,"op":"acquire"}"#),
            400,
            "invalid_ttl",
        ),
        (
            put(r#"{"holder":"region-a","ttlSeconds":30,"op":"release"}"#),
            400,
            "invalid_op",
        ),
        (
            put(r#"{"holder":"region-a","ttlSeconds":30}"#),
            400,
            "invalid_op",
        ),
        (
            put(r#"{"holder":"region-b","ttlSeconds":30,"op":"acquire"}"#),
            403,
            "forbidden_holder",
        ),
        (no_if_match, 400, "missing_if_match"),
        (bad_if_match, 400, "invalid_if_match"),
        (no_auth, 401, "unauthorized"),
        (wrong_token, 401, "unauthorized"),
        (other_path, 404, "not_found"),
        (empty_slot, 404, "not_found"),
        (ctl_slot, 400, "invalid_slot"),
        (post, 405, "method_not_allowed"),
        (big, 413, "body_too_large"),
    ];
    for (inc, status, code) in cases {
        let resp = parse(&inc, &tokens()).unwrap_err();
        assert_eq!(
            (resp.status, resp.error_code().as_deref()),
            (status, Some(code)),
            "{inc:?}"
        );
    }
}

#[test]
fn a_put_may_carry_the_holders_report() {
    let body = r#"{"holder":"region-a","ttlSeconds":30,"op":"renew","report":{"synchronous":false,"flushedLsn":"0/3000148"}}"#;
    let Route::Change { req, .. } = parse(&put(body), &tokens()).unwrap() else {
        panic!()
    };
    let r = req.report.unwrap();
    assert!(!r.synchronous);
    assert_eq!(r.flushed_lsn.as_deref(), Some("0/3000148"));
}

#[test]
fn delete_needs_if_match_and_an_allowed_holder() {
    let del = |holder: Option<&str>, tok: &str| Incoming {
        method: Some(Method::Delete),
        path: "/lease/s".into(),
        authorization: Some(format!("Bearer {tok}")),
        if_match: Some("3".into()),
        x_holder: holder.map(str::to_owned),
        request_id: None,
        body: vec![],
    };
    let ok = parse(&del(Some("region-a"), "tok-a"), &tokens()).unwrap();
    assert_eq!(
        ok,
        Route::Change {
            slot: "s".into(),
            req: LeaseRequest::release("region-a").if_match(3)
        }
    );
    assert_eq!(
        parse(&del(None, "tok-a"), &tokens()).unwrap_err().status,
        400
    );
    assert_eq!(
        parse(&del(Some("region-b"), "tok-a"), &tokens())
            .unwrap_err()
            .status,
        403
    );
    assert!(parse(&del(Some("region-b"), "tok-any"), &tokens()).is_ok());
}

#[test]
fn options_answers_allow_without_auth() {
    let inc = Incoming {
        method: Some(Method::Options),
        path: "/lease/s".into(),
        ..Incoming::default()
    };
    let r = parse(&inc, &tokens()).unwrap_err();
    assert_eq!(r.status, 204);
    assert!(r.headers.iter().any(|(k, _)| *k == "Allow"));
}

/// The object form binds a token to slots; the list form (`tok-a`) keeps meaning every slot.
fn slot_bound_tokens() -> Tokens {
    Tokens::from_json(
        r#"{"tok-app1":{"holders":["region-a"],"slots":["app-1","team/app-2"]},
            "tok-a":["region-a"]}"#,
    )
    .expect("a token map with a slot-bound token")
}

fn on(method: Method, path: &str, tok: &str) -> Incoming {
    Incoming {
        method: Some(method),
        path: path.into(),
        authorization: Some(format!("Bearer {tok}")),
        if_match: Some("0".into()),
        x_holder: Some("region-a".into()),
        request_id: None,
        body: GOOD.as_bytes().to_vec(),
    }
}

#[test]
fn a_slot_bound_token_is_refused_on_every_other_slot_for_every_method() {
    let t = slot_bound_tokens();
    for method in [Method::Get, Method::Put, Method::Delete] {
        for path in ["/lease/app-3", "/lease/app-1x", "/lease/team%2Fapp-3"] {
            let r = parse(&on(method, path, "tok-app1"), &t).unwrap_err();
            assert_eq!(
                (r.status, r.error_code().as_deref()),
                (403, Some("forbidden_slot")),
                "{method:?} {path}"
            );
            let text = String::from_utf8_lossy(&r.body);
            assert!(text.contains("slot"), "{text}");
        }
        for path in ["/lease/app-1", "/lease/team%2Fapp-2"] {
            assert!(parse(&on(method, path, "tok-app1"), &t).is_ok(), "{path}");
        }
        // The old list form is bound to holders only: every slot.
        assert!(parse(&on(method, "/lease/app-3", "tok-a"), &t).is_ok());
    }
    // raise-floor is a PUT like any other: the slot binding applies.
    let mut raise = on(Method::Put, "/lease/app-3", "tok-app1");
    raise.body = br#"{"holder":"region-a","op":"raise-floor","epoch":3}"#.to_vec();
    assert_eq!(parse(&raise, &t).unwrap_err().status, 403);
    // The holder binding still applies on a bound slot.
    let mut other_holder = on(Method::Put, "/lease/app-1", "tok-app1");
    other_holder.body = br#"{"holder":"region-b","ttlSeconds":30,"op":"acquire"}"#.to_vec();
    assert_eq!(
        parse(&other_holder, &t)
            .unwrap_err()
            .error_code()
            .as_deref(),
        Some("forbidden_holder")
    );
}

#[test]
fn used_up_counters_answer_409_and_malformed_requests_400() {
    let req = LeaseRequest::acquire("region-a", 30_000);
    let r = respond(
        &req,
        &Err(LeaseRequestError::EpochExhausted { highest: u64::MAX }),
        true,
    );
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (409, Some("epoch_exhausted"))
    );
    let r = respond(&req, &Err(LeaseRequestError::GenerationExhausted), true);
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (409, Some("generation_exhausted"))
    );
    let r = respond(&req, &Err(LeaseRequestError::InvalidTtl(0)), true);
    assert_eq!(r.status, 400);
}
