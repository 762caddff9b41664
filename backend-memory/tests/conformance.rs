//! The whole conformance suite against the memory backend.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ssehub_core::{Broker, Message, Topic};
use ssehub_memory::MemoryBroker;

ssehub_core::conformance_tests!(
    make = Arc::new(MemoryBroker::builder().history(256).build()),
    foreign = {
        let other = MemoryBroker::new();
        let topic = Topic::new("elsewhere").expect("topic");
        other
            .publish(&topic, Message::new("x"))
            .await
            .expect("publish")
    },
);
