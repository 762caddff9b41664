//! The smallest useful ssehub app: a typed event, a `ChannelManager` on the in-memory broker, a
//! Server-Sent Events route, and a POST route that publishes to it. Run it with:
//!
//! ```text
//! cargo run --example memory
//! ```
//!
//! Then watch a room in one terminal and post to it from another:
//!
//! ```text
//! curl -N http://127.0.0.1:3000/api/sse/rooms/lobby
//! curl -d 'hello' http://127.0.0.1:3000/api/rooms/lobby
//! ```
//!
//! The stream shows `data: {"type":"message","room":"lobby","text":"hello"}` under an `id:`; a
//! client that reconnects with that id in `Last-Event-ID` (as `EventSource` does) gets what it
//! missed. `SSEHUB_ADDR` changes the address (default `127.0.0.1:3000`). Everything lives in this
//! one process; `examples/redis.rs` and `examples/nats.rs` are the same app over several.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Serialize;
use ssehub::{ChannelManager, MemoryBroker, PathParams, SseEndpoint};

/// The event every stream open on a room receives, as
/// `{"type":"message","room":"lobby","text":"hello"}`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename = "message")]
pub struct ChatMessage {
    /// The room it was posted to.
    pub room: String,
    /// What was posted.
    pub text: String,
}

/// The app: `GET /api/sse/rooms/{room}` streams a room's messages; `POST /api/rooms/{room}`, its
/// body the text, publishes one and answers its event id.
pub fn app() -> ssehub::Result<Router> {
    // 1. Typed channels, one per room, named `room:{room}:messages`.
    let rooms = ChannelManager::<ChatMessage>::builder(MemoryBroker::new())
        .key_prefix("room")
        .key_suffix("messages")
        .build()?;

    // 2. The SSE route: the path's `{room}` names the channel, which is dropped with its last
    //    stream.
    let cleanup = rooms.clone();
    let stream = SseEndpoint::new(rooms.clone(), "/api/sse/rooms/{room}")?
        .resource(|p: &PathParams| p.get("room").unwrap_or_default().to_owned())
        .on_disconnect(move |p: &PathParams| {
            cleanup.cleanup_if_empty(p.get("room").unwrap_or_default());
        });

    // 3. Publish: every stream open on the room gets the message.
    let publish = post(move |Path(room): Path<String>, text: String| async move {
        let message = ChatMessage {
            room: room.clone(),
            text,
        };
        match rooms.publish(&room, &message).await {
            Ok(id) => (StatusCode::OK, format!("{id}\n")),
            // An invalid room name is the client's mistake; a broker error may pass.
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
    let addr = std::env::var("SSEHUB_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "listening on http://{}: curl -N http://{0}/api/sse/rooms/lobby",
        listener.local_addr()?
    );
    // Serve with the routes turned into services once, not once per connection (see the README).
    axum::serve(listener, app()?.with_state::<()>(()).into_make_service()).await?;
    Ok(())
}
