//! Presence by user: who a session belongs to, what a signal says of a node's users, and what
//! [`ChannelManager::presence`](crate::ChannelManager::presence) answers.

use std::sync::Weak;

use serde::{Deserialize, Serialize};

use super::Presence;
use crate::id::Topic;

/// Who a session belongs to, for presence by user: set with
/// [`SubscribeOptions::user`](crate::SubscribeOptions::user).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PresenceUser {
    pub(crate) id: String,
    pub(crate) info: Option<serde_json::Value>,
}

/// One user of a channel, across every live node ([`ChannelPresence::users`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct UserPresence {
    /// The user's id, as given to [`SubscribeOptions::user`](crate::SubscribeOptions::user).
    pub user: String,
    /// The user's info (the most recent one a node reported), if any session gave one.
    pub info: Option<serde_json::Value>,
    /// The user's sessions of the channel, on every live node.
    pub sessions: usize,
}

/// Who is on a channel, across every live node: from
/// [`ChannelManager::presence`](crate::ChannelManager::presence).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ChannelPresence {
    /// Every session of the channel, with or without a user (the cluster count).
    pub sessions: usize,
    /// The users among them, sorted by id; sessions without a user are in
    /// [`sessions`](Self::sessions) only.
    pub users: Vec<UserPresence>,
}

/// One user's sessions of one topic on one node, as a signal carries them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct WireUser {
    /// The user's id.
    pub(super) s: String,
    /// The user's info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) i: Option<serde_json::Value>,
    /// Sessions.
    pub(super) n: usize,
}

/// A user's session on a topic, counted while it is held.
pub(crate) struct UserGuard {
    pub(super) presence: Weak<Presence>,
    pub(super) topic: Topic,
    pub(super) user: String,
}

impl Drop for UserGuard {
    fn drop(&mut self) {
        if let Some(p) = self.presence.upgrade() {
            p.leave_user(&self.topic, &self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::Signal;
    use super::*;

    #[test]
    fn signals_with_and_without_users_read_both_ways() {
        // An older node's signal (no users) reads; its sessions count as anonymous.
        let old: Signal = serde_json::from_str(r#"{"n":"a","c":[["t",2]]}"#).unwrap();
        assert!(old.u.is_empty());
        // A newer node's signal carries users; an older node's reader ignores unknown fields.
        let new = Signal {
            n: "b".into(),
            c: vec![("t".into(), 3)],
            hello: false,
            u: vec![(
                "t".into(),
                vec![WireUser {
                    s: "alice".into(),
                    i: None,
                    n: 2,
                }],
            )],
        };
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(
            text,
            r#"{"n":"b","c":[["t",3]],"u":[["t",[{"s":"alice","n":2}]]]}"#
        );
        #[derive(Deserialize)]
        struct Older {
            n: String,
            c: Vec<(String, usize)>,
        }
        let older: Older = serde_json::from_str(&text).unwrap();
        assert_eq!((older.n.as_str(), older.c.len()), ("b", 1));
    }
}
