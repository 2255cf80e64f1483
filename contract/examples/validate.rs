//! Validates FlowMessage files (or stdin) against the contract and prints one line per input.
//!
//! Run with `cargo run -p contract --example validate -- contract/tests/fixtures/*.json`
//! or `echo '{"type":"delete-nodes","ids":[]}' | cargo run -p contract --example validate`.
//! Add `--flow <id>` to also check that the messages belong to that flow. Exits 1 if any
//! input is invalid.

use contract::FlowMessage;
use std::io::Read;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flow = None;
    if let Some(i) = args.iter().position(|a| a == "--flow") {
        if i + 1 >= args.len() {
            eprintln!("usage: validate [--flow <flow-id>] [FILE ...]   (no FILE: read stdin)");
            std::process::exit(64);
        }
        flow = Some(args.remove(i + 1));
        args.remove(i);
    }
    let inputs: Vec<(String, Result<Vec<u8>, std::io::Error>)> = if args.is_empty() {
        let mut buf = Vec::new();
        let r = std::io::stdin().read_to_end(&mut buf).map(|_| buf);
        vec![("<stdin>".into(), r)]
    } else {
        args.iter().map(|p| (p.clone(), std::fs::read(p))).collect()
    };
    let mut bad = 0;
    for (name, body) in inputs {
        let verdict = body.map_err(|e| e.to_string()).and_then(|b| {
            let msg = FlowMessage::decode(&b).map_err(|e| e.to_string())?;
            if let Some(f) = &flow {
                msg.check_flow_id(f).map_err(|e| e.to_string())?;
            }
            Ok(msg)
        });
        match verdict {
            Ok(msg) => println!("ok       {name}: {}", msg.kind().as_str()),
            Err(e) => {
                bad += 1;
                println!("INVALID  {name}: {e}");
            }
        }
    }
    if bad > 0 {
        std::process::exit(1);
    }
}
