//! FlowMessage wire tests: golden fixtures written from the spec tables
//! (`shared/spec/upstream-flow.md` §1) round-trip byte for byte, and every validation rule
//! rejects a failing example with an error that names the field.

use contract::{ContractError, FlowMessage, MessageKind};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let mut b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    while b.last() == Some(&b'\n') {
        b.pop();
    }
    b
}

#[test]
fn every_variant_round_trips_byte_for_byte() {
    let cases = [
        ("snapshot.json", MessageKind::Snapshot),
        ("snapshot-empty.json", MessageKind::Snapshot),
        ("upsert-flow.json", MessageKind::UpsertFlow),
        ("upsert-nodes.json", MessageKind::UpsertNodes),
        ("upsert-rels.json", MessageKind::UpsertRels),
        ("delete-nodes.json", MessageKind::DeleteNodes),
        ("delete-rels.json", MessageKind::DeleteRels),
    ];
    for (name, kind) in cases {
        let bytes = fixture(name);
        let msg = FlowMessage::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(msg.kind(), kind, "{name}");
        let out = msg.encode();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&bytes),
            "{name}: encode(decode(x)) must equal x"
        );
        let again = FlowMessage::decode(&out).unwrap();
        assert_eq!(again, msg, "{name}: decode is stable");
        // The serde impls agree with decode/encode.
        let via_serde: FlowMessage = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(via_serde, msg);
        assert_eq!(serde_json::to_vec(&msg).unwrap(), out);
    }
}

#[test]
fn empty_snapshot_omits_payload_keys_like_go_omitempty() {
    let msg = FlowMessage::decode(&fixture("snapshot-empty.json")).unwrap();
    let FlowMessage::Snapshot {
        nodes,
        relationships,
        ..
    } = &msg
    else {
        panic!("not a snapshot")
    };
    assert!(nodes.is_empty() && relationships.is_empty());
    let s = String::from_utf8(msg.encode()).unwrap();
    assert!(!s.contains("nodes") && !s.contains("relationships"), "{s}");
    assert!(
        s.contains(r#""startedAt":0"#),
        "startedAt is always serialized: {s}"
    );
}

#[test]
fn upstream_producers_are_accepted_unchanged() {
    // Shapes upstream's Go adapter and JS clients send: nulls, zero lag, unknown extra keys.
    let bodies = [
        r#"{"type":"upsert-nodes","nodes":[{"id":"r/x","flowId":"f","label":"x","status":"pending","meta":null}]}"#,
        r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"finish-to-start","condition":"on-success","lag":0}]}"#,
        r#"{"type":"snapshot","flow":{"id":"f","status":"running","startedAt":1,"triggeredBy":null},"nodes":null,"relationships":[]}"#,
        r#"{"type":"upsert-flow","flow":{"id":"f","status":"running","startedAt":1,"futureField":{"x":1}}}"#,
    ];
    for b in bodies {
        FlowMessage::decode(b.as_bytes()).unwrap_or_else(|e| panic!("{b}: {e}"));
    }
}

/// (body, expected error text, expected field). Every rule of `validate` and decode has a row.
const REJECTED: &[(&str, &str, &str)] = &[
    // Upstream's own rules, with upstream's exact texts.
    (
        r#"{"type":"snapshot"}"#,
        "snapshot: flow is required",
        "flow",
    ),
    (
        r#"{"type":"upsert-flow"}"#,
        "upsert-flow: flow is required",
        "flow",
    ),
    (
        r#"{"type":"upsert-nodes","nodes":[]}"#,
        "upsert-nodes: nodes must be non-empty",
        "nodes",
    ),
    (
        r#"{"type":"upsert-rels"}"#,
        "upsert-rels: relationships must be non-empty",
        "relationships",
    ),
    (
        r#"{"type":"delete-nodes","ids":[]}"#,
        "delete-nodes: ids must be non-empty",
        "ids",
    ),
    (
        r#"{"type":"delete-rels","pairs":[]}"#,
        "delete-rels: pairs must be non-empty",
        "pairs",
    ),
    (
        r#"{"type":"upsert-everything"}"#,
        r#"unknown message type "upsert-everything""#,
        "type",
    ),
    // Decode errors name the path.
    (
        r#"{"nodes":[]}"#,
        "decode FlowMessage: type: missing field `type`",
        "type",
    ),
    (r#"not json"#, "decode FlowMessage: .: expected ident", "."),
    (
        r#"{"type":"upsert-nodes","nodes":{}}"#,
        "decode FlowMessage: nodes: invalid type",
        "nodes",
    ),
    (
        r#"{"type":"upsert-nodes","nodes":[{"id":"a","flowId":"f","status":"x"}]}"#,
        "missing field `label`",
        "nodes[0]",
    ),
    (
        r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"blocks"}]}"#,
        "unknown variant `blocks`",
        "relationships[0].type",
    ),
    (
        r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"contains","condition":"sometimes"}]}"#,
        "unknown variant `sometimes`",
        "relationships[0].condition",
    ),
    (
        r#"{"type":"upsert-flow","flow":{"id":"f","status":"s","triggeredBy":[{"flowId":"g","when":"later"}]}}"#,
        "unknown variant `later`",
        "flow.triggeredBy[0].when",
    ),
    (
        r#"{"type":"upsert-flow","flow":{"id":"f","status":"s","startedAt":"yesterday"}}"#,
        "invalid type",
        "flow.startedAt",
    ),
    (
        r#"{"type":"delete-nodes","ids":["a"]} trailing"#,
        "decode FlowMessage",
        ".",
    ),
    // Required strings.
    (
        r#"{"type":"upsert-flow","flow":{"id":"","status":"s"}}"#,
        "upsert-flow: flow.id must be non-empty",
        "flow.id",
    ),
    (
        r#"{"type":"upsert-flow","flow":{"id":"f","status":""}}"#,
        "upsert-flow: flow.status must be non-empty",
        "flow.status",
    ),
    (
        r#"{"type":"upsert-flow","flow":{"id":"f","status":"s","triggeredBy":[{"flowId":"","when":"always"}]}}"#,
        "flow.triggeredBy[0].flowId must be non-empty",
        "flow.triggeredBy[0].flowId",
    ),
    (
        r#"{"type":"upsert-nodes","nodes":[{"id":"","flowId":"f","label":"l","status":"s"}]}"#,
        "nodes[0].id must be non-empty",
        "nodes[0].id",
    ),
    (
        r#"{"type":"upsert-nodes","nodes":[{"id":"a","flowId":"","label":"l","status":"s"}]}"#,
        "nodes[0].flowId must be non-empty",
        "nodes[0].flowId",
    ),
    (
        r#"{"type":"upsert-nodes","nodes":[{"id":"a","flowId":"f","label":"","status":"s"}]}"#,
        "nodes[0].label must be non-empty",
        "nodes[0].label",
    ),
    (
        r#"{"type":"upsert-nodes","nodes":[{"id":"a","flowId":"f","label":"l","status":""}]}"#,
        "nodes[0].status must be non-empty",
        "nodes[0].status",
    ),
    (
        r#"{"type":"upsert-rels","relationships":[{"fromId":"","toId":"b","type":"contains"}]}"#,
        "relationships[0].fromId must be non-empty",
        "relationships[0].fromId",
    ),
    (
        r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"","type":"contains"}]}"#,
        "relationships[0].toId must be non-empty",
        "relationships[0].toId",
    ),
    (
        r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"contains","toFlowId":""}]}"#,
        "relationships[0].toFlowId must be non-empty",
        "relationships[0].toFlowId",
    ),
    (
        r#"{"type":"delete-nodes","ids":["a",""]}"#,
        "ids[1] must be non-empty",
        "ids[1]",
    ),
    (
        r#"{"type":"delete-rels","pairs":[{"fromId":"a","toId":"","type":"contains"}]}"#,
        "pairs[0].toId must be non-empty",
        "pairs[0].toId",
    ),
    // Numbers.
    (
        r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"finish-to-start","lag":-5}]}"#,
        "upsert-rels: relationships[0].lag must be >= 0, got -5",
        "relationships[0].lag",
    ),
    (
        r#"{"type":"upsert-flow","flow":{"id":"f","status":"s","startedAt":-1}}"#,
        "flow.startedAt must be >= 0",
        "flow.startedAt",
    ),
    (
        r#"{"type":"upsert-nodes","nodes":[{"id":"a","flowId":"f","label":"l","status":"s","endedAt":-2}]}"#,
        "nodes[0].endedAt must be >= 0",
        "nodes[0].endedAt",
    ),
    // Fields of another variant.
    (
        r#"{"type":"upsert-flow","flow":{"id":"f","status":"s"},"nodes":[]}"#,
        "upsert-flow: field nodes does not belong to this message type",
        "nodes",
    ),
    (
        r#"{"type":"snapshot","flow":{"id":"f","status":"s"},"ids":["a"]}"#,
        "snapshot: field ids does not belong",
        "ids",
    ),
    (
        r#"{"type":"delete-nodes","ids":["a"],"pairs":[]}"#,
        "delete-nodes: field pairs does not belong",
        "pairs",
    ),
    (
        r#"{"type":"delete-rels","pairs":[{"fromId":"a","toId":"b","type":"contains"}],"flow":{"id":"f","status":"s"}}"#,
        "delete-rels: field flow does not belong",
        "flow",
    ),
    (
        r#"{"type":"upsert-nodes","nodes":[{"id":"a","flowId":"f","label":"l","status":"s"}],"relationships":[]}"#,
        "field relationships does not belong",
        "relationships",
    ),
    // Duplicates inside one envelope.
    (
        r#"{"type":"upsert-nodes","nodes":[{"id":"a","flowId":"f","label":"l","status":"s"},{"id":"a","flowId":"f","label":"m","status":"s"}]}"#,
        "upsert-nodes: nodes[1] repeats a (first at nodes[0])",
        "nodes[1]",
    ),
    (
        r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"contains"},{"fromId":"a","toId":"b","type":"contains","lag":3}]}"#,
        "relationships[1] repeats (a, b, contains)",
        "relationships[1]",
    ),
    (
        r#"{"type":"delete-nodes","ids":["a","b","a"]}"#,
        "ids[2] repeats a (first at ids[0])",
        "ids[2]",
    ),
    (
        r#"{"type":"delete-rels","pairs":[{"fromId":"a","toId":"b","type":"contains"},{"fromId":"a","toId":"b","type":"contains"}]}"#,
        "pairs[1] repeats",
        "pairs[1]",
    ),
    (
        r#"{"type":"snapshot","flow":{"id":"f","status":"s"},"nodes":[{"id":"a","flowId":"f","label":"l","status":"s"},{"id":"a","flowId":"f","label":"l","status":"s"}]}"#,
        "snapshot: nodes[1] repeats a",
        "nodes[1]",
    ),
];

#[test]
fn every_rule_rejects_with_an_error_naming_the_field() {
    for (body, text, field) in REJECTED {
        let err = match FlowMessage::decode(body.as_bytes()) {
            Ok(m) => panic!("accepted {body}: {m:?}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(msg.contains(text), "{body}\n  got:  {msg}\n  want: {text}");
        assert_eq!(err.field(), Some(*field), "{body}: {msg}");
        // serde's Deserialize refuses the same bodies.
        assert!(serde_json::from_str::<FlowMessage>(body).is_err(), "{body}");
    }
}

#[test]
fn same_relationship_pair_with_different_types_is_not_a_duplicate() {
    let body = r#"{"type":"upsert-rels","relationships":[{"fromId":"a","toId":"b","type":"contains"},{"fromId":"a","toId":"b","type":"finish-to-start"}]}"#;
    FlowMessage::decode(body.as_bytes()).unwrap();
}

#[test]
fn flow_id_must_match_the_url() {
    let snap = FlowMessage::decode(&fixture("snapshot.json")).unwrap();
    snap.check_flow_id("sovereign-omantel").unwrap();
    let err = snap.check_flow_id("other").unwrap_err();
    assert_eq!(err.field(), Some("flow.id"));
    assert!(matches!(err, ContractError::FlowMismatch { .. }));

    let nodes = FlowMessage::decode(
        br#"{"type":"upsert-nodes","nodes":[{"id":"a","flowId":"f","label":"l","status":"s"},{"id":"b","flowId":"g","label":"l","status":"s"}]}"#,
    )
    .unwrap();
    let err = nodes.check_flow_id("f").unwrap_err();
    assert_eq!(err.field(), Some("nodes[1].flowId"));
    assert_eq!(
        err.to_string(),
        r#"upsert-nodes: nodes[1].flowId is "g" but the message was posted to flow "f""#
    );
    // Messages without flow ids always match.
    FlowMessage::decode(&fixture("delete-nodes.json"))
        .unwrap()
        .check_flow_id("anything")
        .unwrap();
}

#[test]
fn error_codes_are_stable() {
    let codes: Vec<_> = REJECTED
        .iter()
        .map(|(b, _, _)| FlowMessage::decode(b.as_bytes()).unwrap_err().code())
        .collect();
    for c in [
        "required",
        "empty",
        "unknown_type",
        "invalid_json",
        "negative",
        "misplaced_field",
        "duplicate",
    ] {
        assert!(codes.contains(&c), "no example for {c}");
    }
}
