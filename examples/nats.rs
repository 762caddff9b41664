//! The app of `examples/memory.rs` on NATS: several processes share every room, so a message
//! posted to any of them reaches the streams open on all of them, and a client that reconnects to
//! another one resumes where it was (from the JetStream stream that keeps each room's recent
//! events). Run it (a nats-server with JetStream, `nats-server -js`, on 127.0.0.1:4222) with:
//!
//! ```text
//! cargo run --example nats --features nats -- nats://127.0.0.1:4222
//! ```
//!
//! Two processes on different ports sharing events:
//!
//! ```text
//! SSEHUB_ADDR=127.0.0.1:3001 cargo run --example nats --features nats -- nats://127.0.0.1:4222
//! SSEHUB_ADDR=127.0.0.1:3002 cargo run --example nats --features nats -- nats://127.0.0.1:4222
//! curl -N http://127.0.0.1:3001/api/sse/rooms/lobby       # a stream on the first
//! curl -d 'hello' http://127.0.0.1:3002/api/rooms/lobby    # a message posted to the second
//! ```
//!
//! The stream on 3001 shows
//! `data: {"type":"message","room":"lobby","text":"hello","server":"127.0.0.1:3002"}`. The URL may
//! also come from `SSEHUB_NATS_URL`. `SSEHUB_ADDR` defaults to `127.0.0.1:3000`.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Serialize;
use ssehub::{ChannelManager, NatsBroker, PathParams, SseEndpoint, WriteTimeoutListener};

/// The event every stream open on a room receives, on every process, as
/// `{"type":"message","room":"lobby","text":"hello","server":"127.0.0.1:3002"}`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename = "message")]
pub struct ChatMessage {
    /// The room it was posted to.
    pub room: String,
    /// What was posted.
    pub text: String,
    /// The address of the process it was posted to.
    pub server: String,
}

/// The app over `broker`: `GET /api/sse/rooms/{room}` streams a room's messages;
/// `POST /api/rooms/{room}`, its body the text, publishes one (naming `server`, this process) and
/// answers its event id.
pub fn app(broker: NatsBroker, server: String) -> ssehub::Result<Router> {
    // 1. Typed channels, one per room, named `room:{room}:messages`, on NATS: the processes
    //    with the same URL (and subject prefix, `ssehub` by default) share them.
    let rooms = ChannelManager::<ChatMessage>::builder(broker)
        .key_prefix("room")
        .key_suffix("messages")
        .build()?;

    // 2. The SSE route: the path's `{room}` names the channel, which is dropped (here, not on the
    //    other processes) with its last stream here.
    let cleanup = rooms.clone();
    let stream = SseEndpoint::new(rooms.clone(), "/api/sse/rooms/{room}")?
        .resource(|p: &PathParams| p.get("room").unwrap_or_default().to_owned())
        .on_disconnect(move |p: &PathParams| {
            cleanup.cleanup_if_empty(p.get("room").unwrap_or_default());
        });

    // 3. Publish: every stream open on the room, on any process, gets the message.
    let publish = post(move |Path(room): Path<String>, text: String| async move {
        let message = ChatMessage {
            room: room.clone(),
            text,
            server: server.clone(),
        };
        match rooms.publish(&room, &message).await {
            Ok(id) => (StatusCode::OK, format!("{id}\n")),
            // An invalid room name is the client's mistake; NATS being away may pass.
            Err(e) if e.is_temporary() => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        }
    });

    Ok(Router::new()
        .merge(stream.into_router())
        .route("/api/rooms/{room}", publish))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SSEHUB_NATS_URL").ok())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let addr = std::env::var("SSEHUB_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let broker = NatsBroker::connect(url).await?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let server = listener.local_addr()?.to_string();
    // (The URL is not printed: it may hold a password.)
    eprintln!("listening on http://{server}, sharing rooms through NATS");
    let app = app(broker, server)?;
    // Close the connections of clients that stop reading (hyper has no write timeout).
    let listener = WriteTimeoutListener::new(listener, Duration::from_secs(30));
    // Serve with the routes turned into services once, not once per connection (see the README).
    axum::serve(listener, app.with_state::<()>(()).into_make_service()).await?;
    Ok(())
}
