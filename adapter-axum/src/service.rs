//! What makes both endpoints ([`SseEndpoint`], [`MultiplexEndpoint`]) tower services: the
//! [`SseRoutes`] they implement, and one `Service` implementation over it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use serde::Serialize;

use crate::body::SseBody;
use crate::endpoint::SseEndpoint;
use crate::multiplex::MultiplexEndpoint;

/// An endpoint's answer to one request.
pub(crate) type SseFuture = Pin<Box<dyn Future<Output = Response<SseBody>> + Send + 'static>>;

/// The future of an endpoint's `Service::call`: its answer, which is never an error.
type CallFuture = Pin<Box<dyn Future<Output = Result<Response<SseBody>, Infallible>> + Send>>;

/// What an [`SseLayer`](crate::SseLayer) serves: the paths it answers itself, and its answer to one of them.
/// Implemented by [`SseEndpoint`] and [`MultiplexEndpoint`].
pub trait SseRoutes: Clone + Send + Sync + 'static {
    /// Whether this answers `path`.
    fn matches(&self, path: &str) -> bool;

    /// The answer to a request for one of its paths (the body is ignored).
    fn respond(&self, parts: http::request::Parts) -> SseFuture;
}

impl<E: Serialize + Send + Sync + 'static> SseRoutes for SseEndpoint<E> {
    fn matches(&self, path: &str) -> bool {
        SseEndpoint::matches(self, path)
    }

    fn respond(&self, parts: http::request::Parts) -> SseFuture {
        SseEndpoint::respond(self, parts)
    }
}

impl SseRoutes for MultiplexEndpoint {
    fn matches(&self, path: &str) -> bool {
        MultiplexEndpoint::matches(self, path)
    }

    fn respond(&self, parts: http::request::Parts) -> SseFuture {
        MultiplexEndpoint::respond(self, parts)
    }
}

/// The one `Service::call` of both endpoints: the body is ignored, the head is answered.
fn call<T: SseRoutes, B>(routes: &T, req: Request<B>) -> CallFuture {
    let (parts, _body) = req.into_parts();
    let answer = routes.respond(parts);
    Box::pin(async move { Ok(answer.await) })
}

/// `tower_service::Service` for an [`SseRoutes`] type, through [`call`]. (A blanket
/// `impl<T: SseRoutes> Service for T` is not allowed for a foreign trait.)
macro_rules! routes_service {
    ([$($generics:tt)*] $ty:ty) => {
        impl<$($generics)* B> tower_service::Service<Request<B>> for $ty {
            type Response = Response<SseBody>;
            type Error = Infallible;
            type Future = CallFuture;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, req: Request<B>) -> CallFuture {
                call(self, req)
            }
        }
    };
}

routes_service!([E: Serialize + Send + Sync + 'static,] SseEndpoint<E>);
routes_service!([] MultiplexEndpoint);
