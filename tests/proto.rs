//! proto/ is the contract clients code against: it must match the Rust types exactly.

use std::path::Path;

use tongbu::signal::message::{schema_json, ClientEnvelope, ServerEnvelope};

#[test]
fn published_schema_matches_the_rust_types() {
    let published =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/schema.json"))
            .expect("proto/schema.json exists");
    assert!(
        published == schema_json(),
        "proto/schema.json is stale: run `cargo run -- schema > proto/schema.json`"
    );
}

fn examples(dir: &str) -> Vec<(String, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("proto/examples")
        .join(dir);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("example readable");
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Each example parses as its direction's type and serializes back to the same JSON, so no
/// example carries a field the server would silently ignore.
#[test]
fn every_example_round_trips() {
    let client = examples("client");
    let server = examples("server");
    assert!(client.len() >= 10 && server.len() >= 10);
    for (path, value) in client {
        let msg: ClientEnvelope =
            serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(serde_json::to_value(&msg).unwrap(), value, "{path}");
    }
    for (path, value) in server {
        let msg: ServerEnvelope =
            serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(serde_json::to_value(&msg).unwrap(), value, "{path}");
    }
}
