//! Response bodies: a session's stream of frames, and the union with an inner service's body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use ssehub_core::Session;
use ssehub_core::multiplex::MultiplexedSession;

use std::sync::Arc;

use crate::params::PathParams;

/// An endpoint's `on_disconnect` hook.
pub(crate) type DisconnectFn = dyn Fn(&PathParams) + Send + Sync;

/// What runs when a response body is dropped: an endpoint's `on_disconnect` with the params it
/// was opened with, or several (a multiplexed stream's channels). No closure is boxed per
/// stream: the hook is shared, the params are an `Arc`.
pub(crate) enum OnDrop {
    Call(Arc<DisconnectFn>, PathParams),
    Each(Vec<OnDrop>),
}

impl OnDrop {
    pub(crate) fn run(self) {
        match self {
            OnDrop::Call(f, params) => f(&params),
            OnDrop::Each(all) => all.into_iter().for_each(OnDrop::run),
        }
    }
}

/// The body of an SSE response: the session's frames (one channel's, or several channels'
/// multiplexed), then the end. Runs the endpoint's
/// `on_disconnect` exactly once when dropped, whatever ended the stream.
pub struct SseBody {
    kind: Kind,
    on_drop: Option<OnDrop>,
}

enum Kind {
    // Not boxed: hyper boxes the whole body already, and a box here would be one more
    // allocation per stream.
    Session(Session),
    Multiplexed(Box<MultiplexedSession>),
    Once(Option<Bytes>),
}

impl SseBody {
    pub(crate) fn session(session: Session, on_drop: Option<OnDrop>) -> Self {
        SseBody {
            kind: Kind::Session(session),
            on_drop,
        }
    }

    pub(crate) fn multiplexed(session: MultiplexedSession, on_drop: Option<OnDrop>) -> Self {
        SseBody {
            kind: Kind::Multiplexed(Box::new(session)),
            on_drop,
        }
    }

    pub(crate) fn once(bytes: Bytes) -> Self {
        SseBody {
            kind: Kind::Once((!bytes.is_empty()).then_some(bytes)),
            on_drop: None,
        }
    }
}

impl std::fmt::Debug for SseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseBody").finish_non_exhaustive()
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        // Leave the channel before the hook runs, so a count taken in the hook is current.
        self.kind = Kind::Once(None);
        if let Some(f) = self.on_drop.take() {
            f.run();
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.kind {
            Kind::Session(s) => Pin::new(s)
                .poll_next(cx)
                .map(|c| c.map(|b| Ok(Frame::data(b)))),
            Kind::Multiplexed(s) => Pin::new(s.as_mut())
                .poll_next(cx)
                .map(|c| c.map(|b| Ok(Frame::data(b)))),
            Kind::Once(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.kind, Kind::Once(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Once(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Once(None) => SizeHint::with_exact(0),
            Kind::Session(_) | Kind::Multiplexed(_) => SizeHint::default(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The body of a response from [`SseService`](crate::SseService): an SSE stream it answered
    /// itself, or the inner service's body untouched.
    // Fields are described by their variants (pin-project-lite takes no field docs).
    #[allow(missing_docs)]
    #[project = ResponseBodyProj]
    pub enum ResponseBody<B> {
        /// Answered by the SSE endpoint.
        Sse {
            #[pin]
            body: SseBody,
        },
        /// Passed through from the inner service.
        Inner {
            #[pin]
            body: B,
        },
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ResponseBodyProj::Sse { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ResponseBodyProj::Inner { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Sse { body } => body.is_end_stream(),
            ResponseBody::Inner { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Sse { body } => body.size_hint(),
            ResponseBody::Inner { body } => body.size_hint(),
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Sse { .. } => f.write_str("ResponseBody::Sse"),
            ResponseBody::Inner { .. } => f.write_str("ResponseBody::Inner"),
        }
    }
}
