//! A backend that follows a script: [`ScriptedBackend`].

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use switchyard_core::{ConnectError, ConnectErrorKind};
use tokio::sync::Notify;
use tokio::time::{sleep, Instant};
use tower::Service;

use crate::body::ScriptBody;
use crate::journal::{describe, gaps, Journal, Seen, Tunnelled};
use crate::loopback::{Handshake, Live};
use crate::script::{Answer, Cursor, Plan, Script, Step, Tunnel};
use crate::BoxError;

/// The response header every scripted answer carries, with the backend's name: which
/// backend answered is in the response.
pub const BACKEND_HEADER: &str = "x-backend";

/// The health path a backend answers from its health script unless told otherwise.
pub const HEALTH_PATH: &str = "/health";

/// A backend that answers from a [`Script`] and records what it receives in a
/// [`Journal`].
///
/// In process it is a `tower::Service<Request<B>>` for any body `B`: put it under the
/// layers under test (clones share the script and journal). With
/// [`ScriptedBackend::bind`] it also serves HTTP/1.1 on a port of 127.0.0.1, for stacks
/// that connect to backends themselves (a connection pool, a whole proxy); it stops when
/// the last clone is dropped.
///
/// Every answer carries [`BACKEND_HEADER`] with the backend's name. Requests for the
/// health path ([`HEALTH_PATH`] unless set) are answered from a health script of their
/// own (200 at once unless set) and kept apart in the journal, so that health checks do
/// not use up the script or show in request counts.
///
/// Each request's body is read whole before the step's delay and answer.
#[derive(Clone)]
pub struct ScriptedBackend {
    pub(crate) shared: Arc<Shared>,
    live: Option<Arc<Live>>,
}

/// What every clone of a backend, and its loopback server, share.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    health_path: String,
    // Test bookkeeping locked briefly, never across an `.await` (see `Journal`).
    #[allow(clippy::disallowed_types)]
    script: std::sync::Mutex<Cursor>,
    #[allow(clippy::disallowed_types)]
    health: std::sync::Mutex<Cursor>,
    pub(crate) journal: Journal,
    /// The script moved on: the loopback server looks whether it must refuse.
    pub(crate) changed: Notify,
    pub(crate) accepted: AtomicU64,
    pub(crate) closed: AtomicU64,
}

/// How a step ended a request.
pub(crate) enum Outcome {
    Respond(Response<ScriptBody>),
    /// A `101`: on loopback, `tunnel` then runs on the connection, recording into the
    /// journal at `index`.
    Upgrade {
        res: Response<ScriptBody>,
        tunnel: Tunnel,
        index: usize,
    },
    Reset,
    Refuse,
}

impl Shared {
    /// The current step of the main script, and when it ends if it is timed.
    pub(crate) fn peek(&self, now: Instant) -> (Step, Option<Instant>) {
        let mut cursor = lock(&self.script);
        let (step, ends) = cursor.peek(now);
        (step.clone(), ends)
    }

    /// Answers `req` as the script says, recording it.
    pub(crate) async fn handle<B>(&self, req: Request<B>, connection: Option<u64>) -> Outcome
    where
        B: Body,
    {
        let now = Instant::now();
        let health = req.uri().path() == self.health_path;
        let loopback = connection.is_some();
        let (step, _) = if health {
            lock(&self.health).take(now, loopback)
        } else {
            let taken = lock(&self.script).take(now, loopback);
            self.changed.notify_one();
            taken
        };
        let (parts, body) = req.into_parts();
        let protocol = parts.headers.get(UPGRADE).cloned();
        let index = self.journal.record(Seen {
            backend: self.name.clone(),
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            at: now - self.journal.epoch(),
            connection,
            attempt: 1,
            body_len: None,
            health,
            tunnel: None,
        });
        if let Ok(body) = body.collect().await {
            self.journal.set_body_len(index, body.to_bytes().len());
        }
        if !step.after.is_zero() {
            sleep(step.after).await;
        }
        match step.answer {
            Answer::Respond { status, body } => {
                let declared = match body {
                    Plan::Truncated { declared, .. } => Some(declared),
                    _ => None,
                };
                let mut res = self.response(status, body, step.headers);
                if let Some(declared) = declared {
                    res.headers_mut()
                        .insert(CONTENT_LENGTH, HeaderValue::from(declared));
                }
                Outcome::Respond(res)
            }
            Answer::Upgrade(tunnel) => {
                let empty = || Plan::Full(Bytes::new());
                let Some(protocol) = protocol else {
                    let status = StatusCode::UPGRADE_REQUIRED;
                    return Outcome::Respond(self.response(status, empty(), step.headers));
                };
                let status = StatusCode::SWITCHING_PROTOCOLS;
                let mut res = self.response(status, empty(), step.headers);
                res.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("upgrade"));
                res.headers_mut().insert(UPGRADE, protocol.clone());
                self.journal.update(index, |seen| {
                    seen.tunnel = Some(Tunnelled {
                        protocol: String::from_utf8_lossy(protocol.as_bytes()).into_owned(),
                        ..Tunnelled::default()
                    });
                });
                Outcome::Upgrade { res, tunnel, index }
            }
            Answer::Reset => Outcome::Reset,
            Answer::Refuse => Outcome::Refuse,
            Answer::Hang => std::future::pending().await,
        }
    }
}

impl Shared {
    /// A response with `status`, `body` and `headers`, and the backend's name.
    fn response(&self, status: StatusCode, body: Plan, headers: HeaderMap) -> Response<ScriptBody> {
        let mut res = Response::new(ScriptBody::new(body));
        *res.status_mut() = status;
        *res.headers_mut() = headers;
        res.headers_mut().insert(
            BACKEND_HEADER,
            HeaderValue::from_str(&self.name).unwrap_or(HeaderValue::from_static("?")),
        );
        res
    }
}

#[allow(clippy::disallowed_types)]
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings of a [`ScriptedBackend`] before it starts, from [`ScriptedBackend::builder`].
#[derive(Debug)]
pub struct Builder {
    name: Arc<str>,
    script: Script,
    health: Script,
    health_path: String,
    journal: Option<Journal>,
    handshake: Handshake,
}

impl Builder {
    /// Answers health checks from `script` (200 at once unless set).
    pub fn health(mut self, script: impl Into<Script>) -> Self {
        self.health = script.into();
        self
    }

    /// The path of health checks ([`HEALTH_PATH`] unless set).
    pub fn health_path(mut self, path: &str) -> Self {
        self.health_path = path.to_owned();
        self
    }

    /// Records into `journal`, shared with other backends (as a [`Fleet`](crate::Fleet)
    /// does), instead of a journal of its own.
    pub fn journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Serves HTTPS on loopback, with the certificate `ca` signed for `127.0.0.1` and
    /// `localhost` (HTTP/1.1 in ALPN): its URL starts `https://`, and the client or proxy
    /// under test trusts [`Ca::pem`](crate::Ca::pem). In process it changes nothing.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, ca: &crate::Ca) -> Self {
        self.handshake = Handshake::Tls(ca.clone());
        self
    }

    /// The backend, in process. Its script's clock starts now.
    pub fn build(self) -> ScriptedBackend {
        let now = Instant::now();
        ScriptedBackend {
            shared: Arc::new(Shared {
                name: self.name,
                health_path: self.health_path,
                script: Cursor::new(self.script, now).into(),
                health: Cursor::new(self.health, now).into(),
                journal: self.journal.unwrap_or_default(),
                changed: Notify::new(),
                accepted: AtomicU64::new(0),
                closed: AtomicU64::new(0),
            }),
            live: None,
        }
    }

    /// The backend, also serving on a fresh port of 127.0.0.1.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub async fn bind(self) -> ScriptedBackend {
        let handshake = self.handshake.clone();
        let mut backend = self.build();
        let live = Live::start(backend.shared.clone(), handshake).await;
        backend.live = Some(Arc::new(live));
        backend
    }
}

impl ScriptedBackend {
    /// Settings for a backend called `name` answering from `script`.
    pub fn builder(name: &str, script: impl Into<Script>) -> Builder {
        Builder {
            name: name.into(),
            script: script.into(),
            health: Script::always(Step::ok()),
            health_path: HEALTH_PATH.to_owned(),
            journal: None,
            handshake: Handshake::Plain,
        }
    }

    /// A backend called `name` answering from `script`, in process.
    pub fn new(name: &str, script: impl Into<Script>) -> Self {
        Self::builder(name, script).build()
    }

    /// A backend called `name` answering from `script`, serving on a fresh port of
    /// 127.0.0.1 (and usable in process too).
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub async fn bind(name: &str, script: impl Into<Script>) -> Self {
        Self::builder(name, script).bind().await
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    fn live(&self) -> &Live {
        match &self.live {
            Some(live) => live,
            None => panic!("backend {} is not bound to a port", self.name()),
        }
    }

    /// Where it serves on loopback (or served, while killed).
    ///
    /// # Panics
    ///
    /// If it serves in process only.
    pub fn addr(&self) -> SocketAddr {
        self.live().addr
    }

    /// Its URL on loopback, `http://127.0.0.1:<port>` (`https://` for a backend bound
    /// with `Builder::tls`).
    ///
    /// # Panics
    ///
    /// If it serves in process only.
    pub fn url(&self) -> Uri {
        format!("{}://{}", self.live().handshake().scheme(), self.addr())
            .parse()
            .expect("a socket address is a valid authority")
    }

    /// The CA whose certificate it serves HTTPS with, if it was bound with
    /// [`Builder::tls`].
    #[cfg(feature = "tls")]
    pub fn ca(&self) -> Option<&crate::Ca> {
        self.live.as_ref().and_then(|live| live.handshake().ca())
    }

    /// Crashes it on loopback: the listener closes (connections are refused) and every
    /// open connection is reset, requests in flight and tunnels included, as when a
    /// backend's process is killed. Returns once all that is done. Its script, journal
    /// and counts stay as they are; the script's clock goes on.
    ///
    /// # Panics
    ///
    /// If it serves in process only.
    pub async fn kill(&self) {
        self.live().kill().await;
    }

    /// Serves again on the same port after [`ScriptedBackend::kill`] (killing it first
    /// if it runs), going on with the same script and journal: a restarted process.
    ///
    /// # Panics
    ///
    /// If it serves in process only, or the port cannot be bound again.
    pub async fn restart(&self) {
        self.live().restart().await;
    }

    /// Whether it serves on loopback: bound, and not killed since it last started.
    pub fn is_running(&self) -> bool {
        self.live.as_ref().is_some_and(|live| live.is_running())
    }

    /// The journal it records into (shared with its fleet, if it has one).
    pub fn journal(&self) -> &Journal {
        &self.shared.journal
    }

    /// The requests it received, health checks aside.
    pub fn requests(&self) -> Vec<Seen> {
        self.journal().of(self.name())
    }

    /// How many requests it received, health checks aside.
    pub fn request_count(&self) -> usize {
        self.requests().len()
    }

    /// The health checks it received.
    pub fn health_checks(&self) -> Vec<Seen> {
        self.journal().health_checks(self.name())
    }

    /// When each request (health checks aside) arrived, since the journal started.
    pub fn times(&self) -> Vec<Duration> {
        self.requests().iter().map(|s| s.at).collect()
    }

    /// The time between each request it received (health checks aside) and the next.
    pub fn gaps(&self) -> Vec<Duration> {
        gaps(&self.times())
    }

    /// Connections accepted on loopback so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Loopback connections that have ended so far.
    pub fn closed_connections(&self) -> u64 {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Asserts that it received `n` requests (health checks aside); the message lists
    /// them.
    #[track_caller]
    pub fn assert_requests(&self, n: usize) {
        let seen = self.requests();
        assert!(
            seen.len() == n,
            "backend {} received {} requests, expected {n}:\n{}",
            self.name(),
            seen.len(),
            describe(&seen)
        );
    }

    /// Asserts that its requests (health checks aside) arrived at `times` since the
    /// journal started; the message lists them.
    #[track_caller]
    pub fn assert_times(&self, times: &[Duration]) {
        let seen = self.requests();
        let got: Vec<Duration> = seen.iter().map(|s| s.at).collect();
        assert!(
            got == times,
            "backend {} received requests at {got:?}, expected {times:?}:\n{}",
            self.name(),
            describe(&seen)
        );
    }

    /// Asserts that it accepted `n` loopback connections.
    #[track_caller]
    pub fn assert_connections(&self, n: u64) {
        let got = self.connections();
        assert!(
            got == n,
            "backend {} accepted {got} connections, expected {n}:\n{}",
            self.name(),
            describe(&self.requests())
        );
    }
}

impl fmt::Debug for ScriptedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedBackend")
            .field("name", &self.shared.name)
            .field("addr", &self.live.as_ref().map(|l| l.addr))
            .finish()
    }
}

/// The future of an in-process call. Boxed: a test double's future need not be named,
/// and the box keeps the service's type simple to write in a test.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ScriptBody>, BoxError>> + Send + 'static>>;

impl<B> Service<Request<B>> for ScriptedBackend
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    type Response = Response<ScriptBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: a backend's own limits are a step's business.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        let shared = self.shared.clone();
        Box::pin(async move {
            match shared.handle(req, None).await {
                Outcome::Respond(res) | Outcome::Upgrade { res, .. } => Ok(res),
                Outcome::Reset => Err(crate::error::Reset::new().into()),
                Outcome::Refuse => {
                    Err(
                        ConnectError::new(ConnectErrorKind::Refused, shared.name.to_string(), None)
                            .into(),
                    )
                }
            }
        })
    }
}
