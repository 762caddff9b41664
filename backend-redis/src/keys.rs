//! Key and channel names. The topic sits in a `{hash tag}`, so all keys of one topic share a
//! slot (one script touches them together).

#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub(crate) prefix: String,
}

impl Keys {
    pub(crate) fn key(&self, topic: &str, kind: &str) -> String {
        format!("{}:{{{topic}}}:{kind}", self.prefix)
    }
    pub(crate) fn stream(&self, topic: &str) -> String {
        self.key(topic, "stream")
    }
    pub(crate) fn epoch(&self, topic: &str) -> String {
        self.key(topic, "epoch")
    }
    /// The id a publish with this idempotency key got (for the idempotency window).
    pub(crate) fn idempotency(&self, topic: &str, key: &str) -> String {
        self.key(topic, &format!("idem:{key}"))
    }
    pub(crate) fn channel(&self, topic: &str) -> String {
        self.key(topic, "events")
    }
    /// The one channel of the signals between nodes (presence).
    pub(crate) fn signal_channel(&self) -> String {
        format!("{}:signals", self.prefix)
    }
    pub(crate) fn probe_channel(&self, node: &str) -> String {
        format!("{}:health:{node}", self.prefix)
    }
}

/// The cluster slot of `key` (its hash tag's, when it has one).
pub(crate) fn slot_of(key: &str) -> u16 {
    let key = key.as_bytes();
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}
