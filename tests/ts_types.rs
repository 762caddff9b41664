//! The TypeScript types of the demo's events are generated from the Rust definitions with
//! `ts-rs`, so `CommentEvent` is defined once, in Rust.
//!
//! `SSEHUB_WRITE_TS=1 cargo test --test ts_types` writes
//! `clients/typescript/src/generated/CommentEvent.ts`; without it this test fails when the
//! committed file differs from what would be generated (so CI catches a stale file).

#![allow(clippy::unwrap_used)]

mod fixture;
use fixture::comments;

use std::path::PathBuf;

use ts_rs::{Config, TS};

fn generated_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/typescript/src/generated")
}

/// The file's text: ts-rs's declaration, named `ts_name`, with line endings normalized.
///
/// ts-rs uses a struct's serde `rename` both as the value of its internal tag and as the
/// TypeScript type's name; the tag's value is what goes on the wire, so the name is changed here.
fn generate<T: TS + 'static>(ts_name: &str) -> String {
    let cfg = Config::default();
    let text = T::export_to_string(&cfg).unwrap();
    let from = format!("export type {} =", T::ident(&cfg));
    assert!(text.contains(&from), "no `{from}` in:\n{text}");
    let text = text.replacen(&from, &format!("export type {ts_name} ="), 1);
    let mut text = text.replace("\r\n", "\n");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn check_or_write(name: &str, expected: &str) {
    let path = generated_dir().join(name);
    if std::env::var("SSEHUB_WRITE_TS").as_deref() == Ok("1") {
        std::fs::create_dir_all(generated_dir()).unwrap();
        std::fs::write(&path, expected).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "{} is stale or missing; regenerate it with \
         `SSEHUB_WRITE_TS=1 cargo test --test ts_types`.\n--- committed\n{committed}\n--- generated\n{expected}",
        path.display()
    );
}

#[test]
fn comment_event_typescript_is_up_to_date() {
    let ts = generate::<comments::CommentEvent>("CommentEvent");
    // The wire shape the seed promises, checked here so a serde change cannot slip by.
    assert!(
        ts.contains("export type CommentEvent = {") && ts.contains(r#""type": "comment-added""#),
        "unexpected declaration:\n{ts}"
    );
    for field in [
        "discussionId: string",
        "commentCount: number",
        "timestamp: number",
    ] {
        assert!(ts.contains(field), "{field} missing in:\n{ts}");
    }
    check_or_write("CommentEvent.ts", &ts);
}
