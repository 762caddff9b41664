//! The whole conformance suite against NATS in core mode (no JetStream: no history).

use std::sync::Arc;

use ssehub_core::{Broker, Message, Topic};
use ssehub_nats::{Mode, NatsBroker};

async fn broker() -> Option<NatsBroker> {
    let url = ssehub_test_support::nats::nats_url().await?;
    Some(
        NatsBroker::builder(url)
            .prefix("ssehubtest.core")
            .mode(Mode::Core)
            .build()
            .await
            .expect("connect to nats"),
    )
}

macro_rules! make {
    () => {
        match broker().await {
            Some(b) => Arc::new(b) as Arc<dyn Broker>,
            None => return,
        }
    };
}

ssehub_core::conformance_tests!(
    make = make!(),
    foreign = {
        let Some(other) = broker().await else { return };
        other
            .publish(&Topic::new("elsewhere").expect("topic"), Message::new("x"))
            .await
            .expect("publish")
    },
);
