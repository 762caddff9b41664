//! ssehub without axum's router: an `SseLayer` in front of a plain tower service, served by hyper
//! over a `TcpListener` accept loop. Run it with:
//!
//! ```text
//! cargo run --example tower
//! ```
//!
//! The routes are those of `examples/memory.rs`; watch a room in one terminal and post to it
//! from another:
//!
//! ```text
//! curl -N http://127.0.0.1:3000/api/sse/rooms/lobby
//! curl -d 'hello' http://127.0.0.1:3000/api/rooms/lobby
//! ```
//!
//! `SseLayer` answers the requests for the endpoint's paths (`/api/sse/rooms/{room}`) and passes
//! every other one, untouched, to the service it wraps: here a `tower::service_fn` that publishes
//! on `POST /api/rooms/{room}` and answers 404 to the rest. `SSEHUB_ADDR` changes the address
//! (default `127.0.0.1:3000`).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use ssehub::{BoxError, ChannelManager, MemoryBroker, PathParams, SseEndpoint, SseLayer};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

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

/// The largest message body accepted, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// Serve the app on `listener`, one task per connection, until accepting fails for good.
pub async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    // 1. Typed channels, one per room, named `room:{room}:messages`.
    let rooms = ChannelManager::<ChatMessage>::builder(MemoryBroker::new())
        .key_prefix("room")
        .key_suffix("messages")
        .build()?;

    // 2. The SSE endpoint: the path's `{room}` names the channel, which is dropped with its last
    //    stream.
    let cleanup = rooms.clone();
    let endpoint = SseEndpoint::new(rooms.clone(), "/api/sse/rooms/{room}")?
        .resource(|p: &PathParams| p.get("room").unwrap_or_default().to_owned())
        .on_disconnect(move |p: &PathParams| {
            cleanup.cleanup_if_empty(p.get("room").unwrap_or_default());
        });

    // 3. Everything else: a plain tower service, with the SSE layer in front of it.
    let fallback = tower::service_fn(move |req: Request<Incoming>| handle(rooms.clone(), req));
    let service = ServiceBuilder::new()
        .layer(SseLayer::new(endpoint))
        .service(fallback);

    // 4. hyper: HTTP/1.1 or HTTP/2 on each accepted connection.
    let http = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors, for example: wait a little rather than spin.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(service.clone());
        let http = http.clone();
        tokio::spawn(async move {
            // A client that goes away mid-response, for example: its connection's business.
            if let Err(e) = http.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

/// The fallback service: `POST /api/rooms/{room}`, its body the text, publishes a message and
/// answers its event id; anything else is 404.
async fn handle(
    rooms: ChannelManager<ChatMessage>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let room = req
        .uri()
        .path()
        .strip_prefix("/api/rooms/")
        .filter(|room| !room.is_empty() && !room.contains('/'))
        .map(str::to_owned);
    let Some(room) = room else {
        return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
    };
    if req.method() != Method::POST {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        res.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return Ok(res);
    }
    // No router decodes the path here: keep to room names that need no escaping.
    if room.contains('%') {
        return Ok(text(StatusCode::BAD_REQUEST, "room names are plain\n"));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("{e}\n"))),
    };
    let Ok(text_posted) = String::from_utf8(body.to_vec()) else {
        return Ok(text(StatusCode::BAD_REQUEST, "the body is not UTF-8\n"));
    };
    let message = ChatMessage {
        room: room.clone(),
        text: text_posted,
    };
    Ok(match rooms.publish(&room, &message).await {
        Ok(id) => text(StatusCode::OK, format!("{id}\n")),
        // An invalid room name is the client's mistake; a broker error may pass.
        Err(e) if e.is_temporary() => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    })
}

/// A plain-text answer.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = std::env::var("SSEHUB_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!(
        "listening on http://{}: curl -N http://{0}/api/sse/rooms/lobby",
        listener.local_addr()?
    );
    serve(listener).await
}
