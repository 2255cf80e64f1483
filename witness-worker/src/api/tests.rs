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
