//! Workerd serves a Worker bundle with the real workerd: an ES module that instantiates a wasm
//! module, plain-text bindings, and a SQLite-backed Durable Object whose state survives a restart.

use std::path::Path;

use testkit::{Workerd, WorkerdConfig};

/// A hand-assembled wasm module exporting `answer() -> i32` that returns 42.
const ANSWER_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type section: () -> i32
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x07, 0x0a, 0x01, 0x06, b'a', b'n', b's', b'w', b'e', b'r', 0x00, 0x00, // export "answer"
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x2a, 0x0b, // code: i32.const 42; end
];

const HELLO_JS: &str = r#"
import answerModule from "./answer.wasm";

const instance = new WebAssembly.Instance(answerModule, {});

export default {
  async fetch(request, env) {
    return new Response(`${env.GREETING} ${instance.exports.answer()}`);
  },
};
"#;

const COUNTER_JS: &str = r#"
import { DurableObject } from "cloudflare:workers";

export class Counter extends DurableObject {
  async fetch(request) {
    const n = ((await this.ctx.storage.get("n")) ?? 0) + 1;
    await this.ctx.storage.put("n", n);
    return new Response(String(n));
  }
}

export default {
  async fetch(request, env) {
    return env.COUNTER.get(env.COUNTER.idFromName("one")).fetch(request);
  },
};
"#;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write bundle file");
}

async fn get(url: &str) -> String {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(url)
        .send()
        .await
        .expect("GET");
    assert!(resp.status().is_success(), "status {}", resp.status());
    resp.text().await.expect("body")
}

#[tokio::test]
async fn hello_worker_uses_its_wasm_module_and_bindings() {
    let bundle = tempfile::tempdir().expect("bundle dir");
    write(bundle.path(), "index.js", HELLO_JS.as_bytes());
    write(bundle.path(), "answer.wasm", ANSWER_WASM);
    let config = WorkerdConfig::new(bundle.path(), "index.js").binding("GREETING", "hello");

    let workerd = Workerd::start(config).await.expect("start workerd");
    assert_eq!(
        workerd.url(),
        format!("http://127.0.0.1:{}", workerd.port())
    );
    assert_eq!(get(&format!("{}/", workerd.url())).await, "hello 42");
}

#[tokio::test]
async fn durable_object_state_survives_a_restart() {
    let bundle = tempfile::tempdir().expect("bundle dir");
    let persist = tempfile::tempdir().expect("persist dir");
    write(bundle.path(), "index.js", COUNTER_JS.as_bytes());
    let config = WorkerdConfig::new(bundle.path(), "index.js")
        .durable_object("COUNTER", "Counter", true)
        .persist_dir(persist.path());

    let mut workerd = Workerd::start(config).await.expect("start workerd");
    let url = format!("{}/count", workerd.url());
    assert_eq!(get(&url).await, "1");
    assert_eq!(get(&url).await, "2");
    workerd.restart().await.expect("restart workerd");
    assert_eq!(get(&format!("{}/count", workerd.url())).await, "3");
    workerd.shutdown().await.expect("clean shutdown");
}
