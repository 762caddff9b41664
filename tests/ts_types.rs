//! TypeScript types generated from the Rust definitions with `ts-rs`, so each is defined once,
//! in Rust:
//!
//! - the library's wire types, `ResetReason` and `ResetPayload` (ssehub-core's `ts` feature), in
//!   `clients/typescript/src/generated/`;
//! - the demo's events, `CommentEvent`, `VoteEvent` and `PresenceEvent`
//!   (`examples/comments/events.rs`), in `clients/typescript/demo/generated/`.
//!
//! `SSEHUB_WRITE_TS=1 cargo test --test ts_types` writes them; without it this test fails when a
//! committed file differs from what would be generated (so CI catches a stale file).

#![allow(clippy::unwrap_used)]

mod fixture;
use fixture::comments;

use std::path::PathBuf;

use ssehub::{ResetPayload, ResetReason};
use ts_rs::{Config, TS};

/// Where the library's generated types go (relative to the repository).
const LIBRARY_DIR: &str = "clients/typescript/src/generated";
/// Where the demo's generated types go.
const DEMO_DIR: &str = "clients/typescript/demo/generated";

/// The package is ESM resolved as `NodeNext`: relative imports need their `.js` extension.
fn config() -> Config {
    Config::default().with_import_extension(Some("js"))
}

/// The file's text: ts-rs's declaration, named `ts_name`, with line endings normalized.
///
/// ts-rs uses a struct's serde `rename` both as the value of its internal tag and as the
/// TypeScript type's name; the tag's value is what goes on the wire, so the name is changed here.
fn generate<T: TS + 'static>(ts_name: &str) -> String {
    let cfg = config();
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

fn check_or_write(dir: &str, name: &str, expected: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let path = dir.join(name);
    if std::env::var("SSEHUB_WRITE_TS").as_deref() == Ok("1") {
        std::fs::create_dir_all(&dir).unwrap();
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
    check_or_write(DEMO_DIR, "CommentEvent.ts", &ts);
}

#[test]
fn vote_event_typescript_is_up_to_date() {
    let ts = generate::<comments::VoteEvent>("VoteEvent");
    assert!(
        ts.contains("export type VoteEvent = {") && ts.contains(r#""type": "vote-cast""#),
        "unexpected declaration:\n{ts}"
    );
    for field in [
        "discussionId: string",
        "up: number",
        "down: number",
        "timestamp: number",
    ] {
        assert!(ts.contains(field), "{field} missing in:\n{ts}");
    }
    check_or_write(DEMO_DIR, "VoteEvent.ts", &ts);
}

#[test]
fn reset_reason_typescript_is_up_to_date() {
    let ts = generate::<ResetReason>("ResetReason");
    for reason in [
        ResetReason::MalformedId,
        ResetReason::OutOfWindow,
        ResetReason::NoHistory,
        ResetReason::BrokerGap,
    ] {
        let literal = format!("\"{}\"", reason.as_str());
        assert!(ts.contains(&literal), "{literal} missing in:\n{ts}");
    }
    check_or_write(LIBRARY_DIR, "ResetReason.ts", &ts);
}

#[test]
fn reset_payload_typescript_is_up_to_date() {
    let ts = generate::<ResetPayload>("ResetPayload");
    // The declaration matches the JSON the transports send.
    let json = serde_json::to_string(&ResetPayload::new(ResetReason::OutOfWindow)).unwrap();
    assert_eq!(json, r#"{"reason":"out-of-window"}"#);
    for part in [
        r#"import type { ResetReason } from "./ResetReason.js";"#,
        "export type ResetPayload = {",
        "reason: ResetReason",
    ] {
        assert!(ts.contains(part), "{part} missing in:\n{ts}");
    }
    check_or_write(LIBRARY_DIR, "ResetPayload.ts", &ts);
}

#[test]
fn presence_event_typescript_is_up_to_date() {
    let ts = generate::<comments::PresenceEvent>("PresenceEvent");
    assert!(
        ts.contains("export type PresenceEvent = {") && ts.contains(r#""type": "presence""#),
        "unexpected declaration:\n{ts}"
    );
    for field in [
        "discussionId: string",
        "sessions: number",
        "timestamp: number",
    ] {
        assert!(ts.contains(field), "{field} missing in:\n{ts}");
    }
    check_or_write(DEMO_DIR, "PresenceEvent.ts", &ts);
}
