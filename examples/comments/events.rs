//! The demo's events — what goes on the wire, each with a TypeScript twin — and the votes.

use serde::{Deserialize, Serialize};

// Its TypeScript twin, `clients/typescript/demo/generated/CommentEvent.ts`, is generated from
// this definition by `tests/ts_types.rs` (`SSEHUB_WRITE_TS=1 cargo test --test ts_types`). ts-rs
// names the type after serde's `rename` (it is also the tag's value); the test renames it.
/// 1. The event type — serialized as `{type, discussionId, commentCount, timestamp}`.
#[derive(Clone, Debug, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename = "comment-added", rename_all = "camelCase")]
pub struct CommentEvent {
    /// The discussion the comment was added to.
    pub discussion_id: String,
    /// The discussion's comment count after the addition.
    #[ts(type = "number")]
    pub comment_count: u64,
    /// When, in milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub timestamp: u64,
}

// Generated like `CommentEvent`, into `clients/typescript/demo/generated/VoteEvent.ts`.
/// The votes stream's event — serialized as `{type: "vote-cast", discussionId, up, down,
/// timestamp}`.
#[derive(Clone, Debug, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename = "vote-cast", rename_all = "camelCase")]
pub struct VoteEvent {
    /// The discussion voted on.
    pub discussion_id: String,
    /// Up votes so far.
    #[ts(type = "number")]
    pub up: u64,
    /// Down votes so far.
    #[ts(type = "number")]
    pub down: u64,
    /// When, in milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub timestamp: u64,
}

// Generated like `CommentEvent`, into `clients/typescript/demo/generated/PresenceEvent.ts`.
/// The viewers stream's event — serialized as `{type: "presence", discussionId, sessions,
/// timestamp}`: how many streams are open on the discussion's comments, on every node.
#[derive(Clone, Debug, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename = "presence", rename_all = "camelCase")]
pub struct PresenceEvent {
    /// The discussion watched.
    pub discussion_id: String,
    /// Streams open on its comments, cluster-wide.
    #[ts(type = "number")]
    pub sessions: u64,
    /// When, in milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub timestamp: u64,
}

/// One vote: the body of `POST /api/votes/{discussionId}` is `{"vote":"up"}` or
/// `{"vote":"down"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vote {
    /// `"up"`.
    Up,
    /// `"down"`.
    Down,
}

impl Vote {
    /// The vote a request body holds: exactly `{"vote":"up"}` or `{"vote":"down"}`, nothing
    /// else (no other field, no array standing for the object).
    pub fn from_body(body: &serde_json::Value) -> Option<Vote> {
        let fields = body.as_object().filter(|o| o.len() == 1)?;
        match fields.get("vote")?.as_str()? {
            "up" => Some(Vote::Up),
            "down" => Some(Vote::Down),
            _ => None,
        }
    }
}

/// A discussion's running vote totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Votes {
    /// Up votes.
    pub up: u64,
    /// Down votes.
    pub down: u64,
}

impl Votes {
    pub(super) fn add(&mut self, vote: Vote) {
        match vote {
            Vote::Up => self.up += 1,
            Vote::Down => self.down += 1,
        }
    }
}
