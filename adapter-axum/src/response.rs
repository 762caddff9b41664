//! The HTTP side of an answer that both endpoints give the same way: plain-text refusals,
//! `405`, the resume point of a request, the transport it asks for, and a stream's headers.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use ssehub_core::{Ndjson, Sse, Transport};

use crate::body::SseBody;

/// A short plain-text answer (a refusal, an error).
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<SseBody> {
    let mut res = Response::new(SseBody::once(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// `405` with `Allow` for anything but `GET` and `HEAD`.
pub(crate) fn method_not_allowed(parts: &http::request::Parts) -> Option<Response<SseBody>> {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        return None;
    }
    let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(res)
}

/// The id a `GET` resumes from (`Last-Event-ID`, else `?lastEventId=`); for `HEAD`, the
/// answer itself: a stream's headers and no body.
pub(crate) fn resume_point(
    parts: &http::request::Parts,
    transport: &dyn Transport,
) -> Result<Option<String>, Box<Response<SseBody>>> {
    if parts.method == Method::HEAD {
        let mut res = Response::new(SseBody::once(Bytes::new()));
        stream_headers(&mut res, transport);
        return Err(Box::new(res));
    }
    Ok(crate::resume::last_event_id(
        parts
            .headers
            .get("last-event-id")
            .map(HeaderValue::as_bytes),
        parts.uri.query(),
    ))
}

/// NDJSON when the client asks for it and not for SSE; SSE otherwise.
pub(crate) fn choose_transport(parts: &http::request::Parts) -> Arc<dyn Transport> {
    // One shared instance of each: a stream holds a clone, not an allocation of its own.
    static SSE: std::sync::LazyLock<Arc<dyn Transport>> =
        std::sync::LazyLock::new(|| Arc::new(Sse));
    static NDJSON: std::sync::LazyLock<Arc<dyn Transport>> =
        std::sync::LazyLock::new(|| Arc::new(Ndjson));
    match parts.headers.get(header::ACCEPT) {
        Some(a)
            if a.to_str().is_ok_and(|a| {
                a.contains("application/x-ndjson") && !a.contains("text/event-stream")
            }) =>
        {
            NDJSON.clone()
        }
        _ => SSE.clone(),
    }
}

pub(crate) fn stream_headers(res: &mut Response<SseBody>, transport: &dyn Transport) {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(transport.content_type()),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}
