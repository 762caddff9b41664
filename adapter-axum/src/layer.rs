//! The tower layer: answer an SSE endpoint's paths, pass every other request on untouched.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};

use crate::body::ResponseBody;
use crate::service::{SseFuture, SseRoutes};

/// Layer that serves an [`SseEndpoint`](crate::SseEndpoint) (or a
/// [`MultiplexEndpoint`](crate::MultiplexEndpoint)) in front of any service.
/// Layer it twice to serve both.
#[derive(Clone, Debug)]
#[must_use]
pub struct SseLayer<T> {
    endpoint: T,
}

impl<T: SseRoutes> SseLayer<T> {
    /// Serve `endpoint`'s paths; everything else reaches the inner service.
    pub fn new(endpoint: T) -> Self {
        SseLayer { endpoint }
    }
}

impl<S, T: Clone> tower_layer::Layer<S> for SseLayer<T> {
    type Service = SseService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        SseService {
            inner,
            endpoint: self.endpoint.clone(),
        }
    }
}

/// The service made by [`SseLayer`].
#[derive(Clone, Debug)]
pub struct SseService<S, T> {
    inner: S,
    endpoint: T,
}

impl<S, T: SseRoutes> SseService<S, T> {
    /// Wrap `inner`.
    pub fn new(inner: S, endpoint: T) -> Self {
        SseService { inner, endpoint }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, T, ReqB, ResB> tower_service::Service<Request<ReqB>> for SseService<S, T>
where
    S: tower_service::Service<Request<ReqB>, Response = Response<ResB>>,
    T: SseRoutes,
    ResB: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if self.endpoint.matches(req.uri().path()) {
            let (parts, _body) = req.into_parts();
            ResponseFuture::Sse {
                future: self.endpoint.respond(parts),
            }
        } else {
            ResponseFuture::Inner {
                future: self.inner.call(req),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`SseService`]: answered here, or by the inner service.
    // Fields are described by their variants (pin-project-lite takes no field docs).
    #[allow(missing_docs)]
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<F> {
        /// The SSE endpoint answers.
        Sse {
            future: SseFuture,
        },
        /// The inner service answers.
        Inner {
            #[pin]
            future: F,
        },
    }
}

impl<F, B, Err> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, Err>>,
{
    type Output = Result<Response<ResponseBody<B>>, Err>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Sse { future } => future
                .as_mut()
                .poll(cx)
                .map(|res| Ok(res.map(|body| ResponseBody::Sse { body }))),
            ResponseFutureProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(|body| ResponseBody::Inner { body }))),
        }
    }
}
