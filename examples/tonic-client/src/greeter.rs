//! A one-method gRPC service, `greeter.Greeter/SayHello`, written out by hand: the
//! messages, the server glue and the client call that `tonic-build` would generate from
//!
//! ```protobuf
//! syntax = "proto3";
//! package greeter;
//! service Greeter { rpc SayHello(HelloRequest) returns (HelloReply); }
//! message HelloRequest { string name = 1; }
//! message HelloReply { string message = 1; string server = 2; }
//! ```
//!
//! Writing it out keeps `protoc` out of the build. The server is a plain tonic server with
//! switches to misbehave (answer `UNAVAILABLE`) and a count of the calls it handled.

// `tonic::Status` is large, and every tonic API returns it as its error, as generated
// code does.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::PathAndQuery;
use switchyard::BoxError;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::body::Body;
use tonic::codec::ProstCodec;
use tonic::server::UnaryService;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};

/// `SayHello`'s path.
pub const SAY_HELLO: &str = "/greeter.Greeter/SayHello";

/// The request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet; empty is an invalid argument.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// The reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
    /// The id of the server that answered.
    #[prost(string, tag = "2")]
    pub server: String,
}

/// A `Greeter` client over any gRPC service: a `tonic::transport::Channel`, or a
/// switchyard stack.
#[derive(Debug, Clone)]
pub struct GreeterClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> GreeterClient<T>
where
    T: tonic::client::GrpcService<Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError>,
{
    /// A client sending its calls through `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    /// Calls `SayHello`.
    pub async fn say_hello(&mut self, name: &str) -> Result<HelloReply, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let request = tonic::Request::new(HelloRequest { name: name.into() });
        let path = PathAndQuery::from_static(SAY_HELLO);
        let reply = self
            .inner
            .unary(request, path, ProstCodec::default())
            .await?;
        Ok(reply.into_inner())
    }
}

/// What a server knows about itself.
#[derive(Debug)]
struct ServerState {
    id: String,
    calls: AtomicUsize,
    unavailable: AtomicBool,
}

impl ServerState {
    fn say_hello(&self, request: HelloRequest) -> Result<HelloReply, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable(format!("{} is draining", self.id)));
        }
        if request.name.is_empty() {
            return Err(Status::invalid_argument("name must not be empty"));
        }
        Ok(HelloReply {
            message: format!("hello, {}", request.name),
            server: self.id.clone(),
        })
    }
}

/// The server's routes, as `tonic-build` would generate them for the service.
#[derive(Debug, Clone)]
struct GreeterService {
    state: Arc<ServerState>,
}

impl tower::Service<http::Request<Body>> for GreeterService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != SAY_HELLO {
            let status = Status::new(Code::Unimplemented, req.uri().path().to_owned());
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = SayHello(self.state.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
            Ok(grpc.unary(method, req).await)
        })
    }
}

struct SayHello(Arc<ServerState>);

impl UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = std::future::Ready<Result<tonic::Response<HelloReply>, Status>>;

    fn call(&mut self, request: tonic::Request<HelloRequest>) -> Self::Future {
        std::future::ready(
            self.0
                .say_hello(request.into_inner())
                .map(tonic::Response::new),
        )
    }
}

/// A greeter server on 127.0.0.1 (HTTP/2, as every gRPC server), stopped by
/// [`stop`](Self::stop) or when dropped.
#[derive(Debug)]
pub struct GreeterServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl GreeterServer {
    /// Starts a server named `id` on a free port of 127.0.0.1.
    pub async fn start(id: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState {
            id: id.to_owned(),
            calls: AtomicUsize::new(0),
            unavailable: AtomicBool::new(false),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let service = GreeterService {
            state: state.clone(),
        };
        let task = tokio::spawn(
            tonic::transport::Server::builder().serve_with_incoming_shutdown(
                service,
                TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
        );
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Its id, sent back in every reply.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Its URL, `http://127.0.0.1:port`.
    pub fn url(&self) -> http::Uri {
        format!("http://{}", self.addr)
            .parse()
            .expect("an address is a valid authority")
    }

    /// `SayHello` calls it has handled, answered or failed.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Answers every call with `UNAVAILABLE` (as a server that is shutting down or
    /// overloaded does) while `on`.
    pub fn set_unavailable(&self, on: bool) {
        self.state.unavailable.store(on, Ordering::SeqCst);
    }

    /// Stops the server: it stops accepting, tells its clients to go away (HTTP/2
    /// `GOAWAY`), and returns once every connection has closed; from then on connections
    /// are refused.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for GreeterServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
