//! Decode + validate of a 500-node snapshot (with 499 `contains` and 499 `finish-to-start`
//! relationships): the hot path of every flow-server ingest and SSE client.

use contract::{FlowInstance, FlowMessage, FlowNode, Relationship, RelationshipType};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn snapshot(nodes: usize) -> Vec<u8> {
    let mut meta = serde_json::Map::new();
    meta.insert("namespace".into(), "flux-system".into());
    let node = |i: usize| FlowNode {
        id: format!("eu-central-1/bp-component-{i}"),
        flow_id: "sovereign-omantel".into(),
        label: format!("bp-component-{i}"),
        status: "running".into(),
        family: Some("platform".into()),
        region: Some("eu-central-1".into()),
        started_at: Some(1_778_493_600_000 + i as i64),
        ended_at: None,
        meta: meta.clone(),
    };
    let rel = |i: usize, kind| Relationship {
        from_id: format!("eu-central-1/bp-component-{i}"),
        to_id: format!("eu-central-1/bp-component-{}", i - 1),
        from_flow_id: None,
        to_flow_id: None,
        kind,
        condition: None,
        lag: 0,
    };
    let msg = FlowMessage::Snapshot {
        flow: FlowInstance {
            id: "sovereign-omantel".into(),
            definition_id: None,
            parent_flow_id: None,
            triggered_by: vec![],
            status: "running".into(),
            started_at: 1_778_493_600_000,
            ended_at: None,
            meta: serde_json::Map::new(),
        },
        nodes: (0..nodes).map(node).collect(),
        relationships: (1..nodes)
            .flat_map(|i| {
                [
                    rel(i, RelationshipType::Contains),
                    rel(i, RelationshipType::FinishToStart),
                ]
            })
            .collect(),
    };
    msg.encode()
}

fn bench(c: &mut Criterion) {
    let body = snapshot(500);
    let mut g = c.benchmark_group("flowmessage");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_validate_snapshot_500_nodes", |b| {
        b.iter(|| FlowMessage::decode(black_box(&body)).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
