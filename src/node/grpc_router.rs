//! Routes gRPC requests on the one port to the peer or the admin service.
//!
//! tonic's own router pulls in axum; the witness must not, so this small
//! router dispatches on the path prefix instead. A call on a plain-text
//! connection to a TLS port is refused here, whatever its path.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use super::incoming::ConnInfo;

/// Two gRPC services behind one port.
#[derive(Clone)]
pub struct Router<A, B> {
    a: A,
    b: B,
}

impl<A: NamedService, B: NamedService> Router<A, B> {
    pub fn new(a: A, b: B) -> Self {
        Router { a, b }
    }
}

fn under(path: &str, service: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(service))
        .is_some_and(|rest| rest.starts_with('/'))
}

impl<A, B> Service<Request<Body>> for Router<A, B>
where
    A: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + 'static,
    A::Future: Send + 'static,
    B: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + 'static,
    B::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let plain_on_tls = req
            .extensions()
            .get::<ConnInfo>()
            .is_some_and(|c| c.plain_on_tls);
        if plain_on_tls {
            let status = ConnInfo::refusal();
            Box::pin(async move { Ok(status.into_http()) })
        } else if under(&path, A::NAME) {
            let mut svc = self.a.clone();
            Box::pin(async move { svc.call(req).await })
        } else if under(&path, B::NAME) {
            let mut svc = self.b.clone();
            Box::pin(async move { svc.call(req).await })
        } else {
            let status = tonic::Status::unimplemented(format!("no gRPC service at {path}"));
            Box::pin(async move { Ok(status.into_http()) })
        }
    }
}
