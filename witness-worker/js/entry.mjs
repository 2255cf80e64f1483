// Module entry for workerd/Cloudflare: wraps the wasm-bindgen output of the Rust crate.
// The Rust side exports `fetch` (#[event(fetch)]) and the `LeaseObject` class
// (#[durable_object]); the runtime needs them as a WorkerEntrypoint and a DurableObject class.
import { WorkerEntrypoint, DurableObject } from "cloudflare:workers";
import * as rs from "./index.js";

export default class Main extends WorkerEntrypoint {
  fetch(request) {
    return rs.fetch(request, this.env, this.ctx);
  }
}

export class LeaseObject extends DurableObject {
  constructor(state, env) {
    super(state, env);
    this.inner = new rs.LeaseObject(state, env);
  }
  fetch(request) {
    return this.inner.fetch(request);
  }
}
