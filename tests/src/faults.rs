//! A fault-injecting HTTP proxy between an S3 client and moto_server.
//!
//! The fault tests check that the worker never loses a file when S3 misbehaves: an error
//! answer, a connection cut while the request is sent or while the answer comes back, an
//! operation S3 performed whose answer was lost, a slow or a silent server. moto_server always
//! answers correctly, so [`FaultProxy`] sits in front of it, forwards every request unchanged,
//! and spoils the ones a test asked for, chosen by S3 operation ([`Op`]) and optionally by key.
//!
//! It is an HTTP/1.1 proxy (hyper's server towards the client, hyper-util's pooled client
//! towards moto): request and answer bodies stream through without being held in memory, in
//! whatever framing the client chose (`Content-Length`, `Transfer-Encoding: chunked`, the SDK's
//! `aws-chunked` content encoding, which is body bytes to a proxy). Nothing is re-signed: the
//! `Host` header and every signed header reach moto as the client sent them (moto does not
//! check signatures, and an upstream that did would still accept them).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

type BoxError = Box<dyn StdError + Send + Sync>;
type ProxyBody = BoxBody<Bytes, hyper::Error>;
type Upstream = Client<HttpConnector, ProxyBody>;

/// The S3 operations a fault can be aimed at, as told from method, path and query of a
/// path-style request (`/bucket/key`). Everything else — bucket-level calls, tagging, ACLs,
/// listings — is [`Op::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    GetObject,
    HeadObject,
    PutObject,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    DeleteObject,
    /// A server-side copy of a whole object (a PUT with `x-amz-copy-source`).
    CopyObject,
    /// A server-side copy of a byte range as a part of a multipart upload.
    UploadPartCopy,
    Other,
}

impl Op {
    /// Every operation, in the order of the counters.
    pub const ALL: [Op; 11] = [
        Op::GetObject,
        Op::HeadObject,
        Op::PutObject,
        Op::CreateMultipartUpload,
        Op::UploadPart,
        Op::CompleteMultipartUpload,
        Op::AbortMultipartUpload,
        Op::DeleteObject,
        Op::CopyObject,
        Op::UploadPartCopy,
        Op::Other,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The operation of a path-style request: `method`, the URI's `path` (`/bucket/key`), its
    /// `query` (without `?`, empty if none), and whether it has an `x-amz-copy-source` header
    /// (a copy reads another object: a CopyObject or UploadPartCopy, neither a PutObject nor
    /// an UploadPart).
    ///
    /// Only the query parameters an object operation itself takes leave a request what it is
    /// (`versionId`, `partNumber`, `response-*`, the SDK's `x-id` and a presigned URL's
    /// `X-Amz-*`); any other names a subresource (`tagging`, `acl`, `attributes`, ...), which
    /// is another operation and so [`Op::Other`].
    pub fn classify(method: &str, path: &str, query: &str, copy_source: bool) -> Op {
        if key_of(path).is_none() {
            return Op::Other;
        }
        let names: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
            .collect();
        let has = |name: &str| names.contains(&name);
        let only = |allowed: &[&str]| {
            names.iter().all(|name| {
                allowed.contains(name)
                    || *name == "x-id"
                    || name.starts_with("response-")
                    || name.starts_with("X-Amz-")
                    || name.starts_with("x-amz-")
            })
        };
        match method {
            "GET" if only(&["versionId", "partNumber"]) => Op::GetObject,
            "HEAD" if only(&["versionId", "partNumber"]) => Op::HeadObject,
            "PUT" if has("partNumber") && has("uploadId") && only(&["partNumber", "uploadId"]) => {
                if copy_source {
                    Op::UploadPartCopy
                } else {
                    Op::UploadPart
                }
            }
            "PUT" if only(&[]) && copy_source => Op::CopyObject,
            "PUT" if only(&[]) => Op::PutObject,
            "POST" if has("uploads") && only(&["uploads"]) => Op::CreateMultipartUpload,
            "POST" if has("uploadId") && only(&["uploadId"]) => Op::CompleteMultipartUpload,
            "DELETE" if has("uploadId") && only(&["uploadId"]) => Op::AbortMultipartUpload,
            "DELETE" if only(&["versionId"]) => Op::DeleteObject,
            _ => Op::Other,
        }
    }
}

/// The object key of a path-style `path` (`/bucket/key`), percent-decoded; `None` for a
/// bucket-level path (`/`, `/bucket`, `/bucket/`).
pub fn key_of(path: &str) -> Option<String> {
    let (_bucket, key) = path.strip_prefix('/')?.split_once('/')?;
    if key.is_empty() {
        return None;
    }
    Some(
        percent_encoding::percent_decode_str(key)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// What happens to a request a rule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500 with S3's XML error body, code `InternalError`; moto never sees the request.
    InternalError,
    /// HTTP 503 with S3's XML error body, code `SlowDown`; moto never sees the request.
    SlowDown,
    /// HTTP 409 with S3's XML error body, code `ConditionalRequestConflict`: what S3 answers a
    /// conditional write or delete while another operation on the key is in progress. Moto
    /// never sees the request.
    Conflict,
    /// Reads about half the request body (nothing if it has none), then closes the connection
    /// without an answer: the request broke on its way, moto never sees it.
    CutRequest,
    /// Moto performs the request; the client gets the answer's head and the first half of its
    /// body (the first byte of a chunked one, whose length is unknown), then the connection
    /// closes. An answer without a body (to a HEAD, an empty 200) is cut after its status line.
    /// Either way the client cannot tell whether the operation happened.
    CutResponse,
    /// Moto performs the request; the connection then closes without a byte of the answer:
    /// the operation happened and the client cannot know.
    DropResponse,
    /// Waits this long, then forwards the request as usual.
    Latency(Duration),
    /// Reads the request, never answers, and holds the connection open until the client gives
    /// up or the proxy stops; moto never sees the request.
    Stall,
    /// Flips the lowest bit of the byte in the middle of a body on its way: of the answer to a
    /// GET (the client reads other bytes than moto keeps), of the request otherwise (moto keeps
    /// other bytes than the client sent, unless a checksum header it checks covers them: see
    /// [`FaultProxy::strip_checksums`]).
    DamageBody,
}

/// How many of the matching requests a rule spoils.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The first n matching requests after the rule is added; later ones pass through.
    First(usize),
    /// Every matching request, until [`FaultProxy::clear`].
    Always,
}

impl From<usize> for Times {
    fn from(n: usize) -> Self {
        Times::First(n)
    }
}

#[derive(Debug)]
struct Rule {
    op: Op,
    key_contains: Option<String>,
    fault: Fault,
    left: Times,
}

impl Rule {
    fn matches(&self, op: Op, key: Option<&str>) -> bool {
        self.op == op
            && self.left != Times::First(0)
            && match &self.key_contains {
                None => true,
                Some(part) => key.is_some_and(|key| key.contains(part.as_str())),
            }
    }
}

/// The rules and counters, shared by the test's thread and the proxy's.
#[derive(Debug, Default)]
struct State {
    /// Whether DeleteObject loses its conditions on the way: [`FaultProxy::ignore_delete_conditions`].
    unconditional_deletes: AtomicBool,
    rules: Mutex<Vec<Rule>>,
    /// Set by [`FaultProxy::strip_checksums`].
    strip_checksums: AtomicBool,
    /// Set by [`FaultProxy::ignore_ranges`].
    ignore_ranges: AtomicBool,
    seen: [AtomicUsize; Op::ALL.len()],
    applied: [AtomicUsize; Op::ALL.len()],
    /// Body bytes of the GetObject answers passed through unspoiled.
    got_bytes: AtomicU64,
}

impl State {
    /// A test that panicked while holding the lock must not turn every later request of the
    /// proxy into a panic too: the rules are still consistent (each change is one statement).
    fn rules(&self) -> MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the request, and picks the fault of the first rule that matches it, if any.
    fn fault_for(&self, op: Op, key: Option<&str>) -> Option<Fault> {
        self.seen[op.index()].fetch_add(1, Ordering::SeqCst);
        let mut rules = self.rules();
        let rule = rules.iter_mut().find(|rule| rule.matches(op, key))?;
        if let Times::First(left) = &mut rule.left {
            *left -= 1;
        }
        self.applied[op.index()].fetch_add(1, Ordering::SeqCst);
        Some(rule.fault)
    }
}

/// A proxy on a free port of 127.0.0.1 in front of an S3 endpoint, injecting the faults a test
/// asked for. It runs on a thread of its own, so the synchronous tests need no runtime for it;
/// dropping it stops that thread and closes every socket it had open.
#[derive(Debug)]
pub struct FaultProxy {
    endpoint: String,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream_endpoint` (`http://127.0.0.1:PORT`, as
    /// [`crate::Moto::endpoint`] gives). It accepts connections once this returns.
    pub fn start(upstream_endpoint: &str) -> Self {
        let upstream = upstream_endpoint.trim_end_matches('/').to_owned();
        assert!(
            upstream
                .parse::<Uri>()
                .is_ok_and(|uri| uri.scheme_str() == Some("http")),
            "the proxy forwards plain HTTP: {upstream_endpoint:?} is not an http:// endpoint"
        );
        // Bound here rather than on the proxy's thread, so that the port is known and taking
        // connections before start returns: a client may connect at once.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .expect("a free port on 127.0.0.1 for the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener for the fault proxy");
        let address = listener
            .local_addr()
            .expect("the fault proxy's listening address");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the fault proxy");
        let state = Arc::new(State::default());
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", address.port()))
            .spawn(move || {
                runtime.block_on(serve(listener, upstream, shared, stopped));
                // Dropping the runtime here drops every connection task and the upstream
                // client's pooled connections: no socket outlives the thread.
                drop(runtime);
            })
            .expect("a thread for the fault proxy");
        Self {
            endpoint: format!("http://{address}"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for the client's endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Spoils the next `times` requests of `op` (a number, or [`Times::Always`]) with `fault`.
    /// Rules apply in the order they were added: a request gets the fault of the first rule
    /// that matches it and has requests left.
    pub fn inject(&self, op: Op, fault: Fault, times: impl Into<Times>) {
        self.add(op, None, fault, times.into());
    }

    /// As [`FaultProxy::inject`], for the requests whose (decoded) key contains `key_contains`
    /// only: so that a test can spoil the upload of one object and not the others.
    pub fn inject_for_key(
        &self,
        op: Op,
        key_contains: &str,
        fault: Fault,
        times: impl Into<Times>,
    ) {
        self.add(op, Some(key_contains.to_owned()), fault, times.into());
    }

    fn add(&self, op: Op, key_contains: Option<String>, fault: Fault, left: Times) {
        self.state.rules().push(Rule {
            op,
            key_contains,
            fault,
            left,
        });
    }

    /// From now on, stands for a store that keeps no checksums: removes every
    /// `x-amz-checksum-*` header from requests (so moto neither checks nor keeps one) and from
    /// answers (so the client sees none, as from a store that ignores them). Not undone by
    /// [`FaultProxy::clear`]: it is what the store is, not a fault.
    pub fn strip_checksums(&self) {
        self.state.strip_checksums.store(true, Ordering::SeqCst);
    }

    /// From now on, stands for a store that ignores Range: a GET asking for part of an object
    /// gets all of it (200, no Content-Range). Not undone by [`FaultProxy::clear`].
    pub fn ignore_ranges(&self) {
        self.state.ignore_ranges.store(true, Ordering::SeqCst);
    }

    /// Makes the store behind the proxy one that ignores conditions on DeleteObject, as several
    /// S3-compatible stores and older versions do: `If-Match`, `If-None-Match` and the
    /// `x-amz-if-match-*` headers are removed from every DeleteObject from now on (until
    /// called with `false`), so moto deletes whatever is current. Independent of the rules.
    pub fn ignore_delete_conditions(&self, ignore: bool) {
        self.state
            .unconditional_deletes
            .store(ignore, Ordering::SeqCst);
    }

    /// Removes every rule: from now on, requests pass through.
    pub fn clear(&self) {
        self.state.rules().clear();
    }

    /// How many requests of `op` reached the proxy, spoiled or not.
    pub fn count(&self, op: Op) -> usize {
        self.state.seen[op.index()].load(Ordering::SeqCst)
    }

    /// The body bytes of every GetObject answer passed through without a fault: what a
    /// client read, counted on the wire rather than taken from its word.
    pub fn bytes_got(&self) -> u64 {
        self.state.got_bytes.load(Ordering::SeqCst)
    }

    /// How many requests got a fault, of any operation: a fault test where none fired proves
    /// nothing.
    pub fn faults_applied(&self) -> usize {
        self.state
            .applied
            .iter()
            .map(|applied| applied.load(Ordering::SeqCst))
            .sum()
    }

    /// How many requests of `op` got a fault.
    pub fn faults_applied_to(&self, op: Op) -> usize {
        self.state.applied[op.index()].load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the accept loop is gone already.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the proxy's thread has been printed already; a second one while
            // dropping (maybe while unwinding) would only abort the test process.
            let _ = thread.join();
        }
    }
}

/// Accepts connections until `stopped`, each served on a task of this thread's runtime.
async fn serve(
    listener: std::net::TcpListener,
    upstream: String,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("fault proxy: cannot listen: {error}");
            return;
        }
    };
    let proxy = Arc::new(Proxy {
        upstream,
        state,
        client: Client::builder(TokioExecutor::new()).build_http(),
    });
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(Arc::clone(&proxy), stream));
                }
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // try again shortly rather than spin.
                    eprintln!("fault proxy: accept: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Serves one client connection, with keep-alive, until the client closes it or a fault does.
async fn connection(proxy: Arc<Proxy>, stream: TcpStream) {
    // The head and body of small answers go out at once rather than wait for an ACK.
    let _ = stream.set_nodelay(true);
    let armed = Arc::new(Mutex::new(None));
    let io = TokioIo::new(CuttableStream {
        stream,
        armed: Arc::clone(&armed),
        progress: None,
    });
    let service = hyper::service::service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        let armed = Arc::clone(&armed);
        async move { proxy.handle(request, &armed).await }
    });
    // An error is the client going away or a fault closing the connection: the end either way.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

#[derive(Debug)]
struct Proxy {
    upstream: String,
    state: Arc<State>,
    client: Upstream,
}

/// An error that ends the client's connection without an answer (hyper writes nothing for a
/// request whose service failed, and closes). A type of its own rather than a boxed error:
/// with `Box<dyn Error>` as the service's error, rustc cannot prove the connection's future
/// Send ("implementation of From is not general enough").
#[derive(Debug)]
struct Closed(String);

impl Closed {
    fn because(why: &str) -> Self {
        Self(why.to_owned())
    }

    fn upstream(error: BoxError) -> Self {
        Self(format!("moto could not be reached: {error}"))
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault proxy closed the connection: {}", self.0)
    }
}

impl StdError for Closed {}

impl Proxy {
    async fn handle(
        &self,
        mut request: Request<Incoming>,
        armed: &Mutex<Option<Cut>>,
    ) -> Result<Response<ProxyBody>, Closed> {
        let op = Op::classify(
            request.method().as_str(),
            request.uri().path(),
            request.uri().query().unwrap_or_default(),
            request.headers().contains_key("x-amz-copy-source"),
        );
        if op == Op::DeleteObject && self.state.unconditional_deletes.load(Ordering::SeqCst) {
            drop_conditions(request.headers_mut());
        }
        let key = key_of(request.uri().path());
        let Some(fault) = self.state.fault_for(op, key.as_deref()) else {
            let response = self.pass(request).await;
            return Ok(if op == Op::GetObject {
                let state = Arc::clone(&self.state);
                response.map(|body| counted(body, state))
            } else {
                response
            });
        };
        match fault {
            Fault::Latency(delay) => {
                tokio::time::sleep(delay).await;
                Ok(self.pass(request).await)
            }
            Fault::InternalError | Fault::SlowDown | Fault::Conflict => {
                let resource = request.uri().path().to_owned();
                // Read before answering: an answer while the client still sends would close a
                // socket with unread bytes, a reset that may reach the client before the
                // answer does. (With Expect: 100-continue the body is asked for here too.)
                drain(request.into_body()).await;
                Ok(s3_error(fault, &resource))
            }
            Fault::CutRequest => {
                read_part(request.into_body()).await;
                Err(Closed::because("request cut"))
            }
            Fault::CutResponse => {
                let head_only = request.method() == Method::HEAD;
                let response = self.forward(request).await.map_err(Closed::upstream)?;
                let cut = Cut::of(head_only, &response);
                *armed.lock().unwrap_or_else(PoisonError::into_inner) = Some(cut);
                Ok(response.map(boxed))
            }
            Fault::DropResponse => {
                let response = self.forward(request).await.map_err(Closed::upstream)?;
                // The whole answer is read, so that moto has finished with the request when the
                // client learns it failed.
                drain(response.into_body()).await;
                Err(Closed::because("response dropped"))
            }
            Fault::Stall => {
                drain(request.into_body()).await;
                std::future::pending::<()>().await;
                Err(Closed::because("stalled"))
            }
            Fault::DamageBody if request.method() == Method::GET => {
                let response = self.forward(request).await.map_err(Closed::upstream)?;
                let middle = middle_of(response.headers());
                Ok(response.map(|body| damaged(body, middle)))
            }
            Fault::DamageBody => {
                let middle = middle_of(request.headers());
                let (parts, body) = request.into_parts();
                let response = self
                    .send(parts, damaged(body, middle))
                    .await
                    .map_err(Closed::upstream)?;
                Ok(response.map(boxed))
            }
        }
    }

    /// Forwards the request and its answer unchanged; a 502 if moto cannot be reached.
    async fn pass(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        match self.forward(request).await {
            Ok(response) => response.map(boxed),
            Err(error) => xml_error(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                &format!("the fault proxy could not reach {}: {error}", self.upstream),
                "",
            ),
        }
    }

    /// Sends the request to moto, the body streaming as it arrives, and returns moto's answer
    /// with its body still to stream.
    async fn forward(&self, request: Request<Incoming>) -> Result<Response<Incoming>, BoxError> {
        let (parts, body) = request.into_parts();
        self.send(parts, boxed(body)).await
    }

    /// [`Proxy::forward`] of a request's head and a body to send in its place.
    async fn send(
        &self,
        mut parts: hyper::http::request::Parts,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, BoxError> {
        let strip_checksums = self.state.strip_checksums.load(Ordering::SeqCst);
        if strip_checksums {
            remove_checksums(&mut parts.headers);
        }
        if parts.method == Method::GET && self.state.ignore_ranges.load(Ordering::SeqCst) {
            parts.headers.remove(header::RANGE);
        }
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str());
        parts.uri = format!("{}{path_and_query}", self.upstream).parse()?;
        parts.version = hyper::Version::HTTP_11;
        // This proxy answered Expect: 100-continue itself (hyper's server does, when the body
        // is first read); the body goes upstream as it comes.
        parts.headers.remove(header::EXPECT);
        remove_hop_by_hop(&mut parts.headers);
        let mut response = self
            .client
            .request(Request::from_parts(parts, body))
            .await?;
        remove_hop_by_hop(response.headers_mut());
        if strip_checksums {
            remove_checksums(response.headers_mut());
        }
        Ok(response)
    }
}

/// Removes the `x-amz-checksum-*` headers (the values, the algorithm, the type).
fn remove_checksums(headers: &mut HeaderMap) {
    let checksums: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-amz-checksum-"))
        .cloned()
        .collect();
    for name in checksums {
        headers.remove(name);
    }
}

/// What a store that knows no conditional deletes never reads.
fn drop_conditions(headers: &mut HeaderMap) {
    let conditional: Vec<_> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name == "if-match" || name == "if-none-match" || name.starts_with("x-amz-if-match-")
        })
        .cloned()
        .collect();
    for name in conditional {
        headers.remove(name);
    }
}

/// The offset of the middle byte of a body whose length is declared; the first otherwise.
fn middle_of(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(0, |len| len / 2)
}

/// `body`, its bytes added to [`FaultProxy::bytes_got`] as they pass.
fn counted(body: ProxyBody, state: Arc<State>) -> ProxyBody {
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            state
                .got_bytes
                .fetch_add(data.len() as u64, Ordering::SeqCst);
        }
        frame
    })
    .boxed()
}

/// `body` with the lowest bit of its byte at offset `at` flipped.
fn damaged(body: Incoming, at: u64) -> ProxyBody {
    let mut offset = 0u64;
    body.map_frame(move |frame| {
        frame.map_data(|data: Bytes| {
            let start = offset;
            offset += data.len() as u64;
            let Some(index) = at
                .checked_sub(start)
                .and_then(|index| usize::try_from(index).ok())
                .filter(|index| *index < data.len())
            else {
                return data;
            };
            let mut bytes = data.to_vec();
            bytes[index] ^= 1;
            Bytes::from(bytes)
        })
    })
    .boxed()
}

/// The headers that describe one connection rather than the message: the client's connection
/// with the proxy is not the proxy's with moto. (`Transfer-Encoding` stays: it is how the body
/// is framed, and hyper frames it again the same way on the other side.)
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// An answer's body from moto, as this proxy's answers carry it.
fn boxed(body: Incoming) -> ProxyBody {
    body.boxed()
}

/// Reads and discards a body to its end (or its first error).
async fn drain<B: Body + Unpin>(mut body: B) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// Reads about half of a body whose length is declared, or its first piece if not.
async fn read_part(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let target = body.size_hint().exact().map_or(1, |len| (len / 2).max(1));
    let mut read = 0;
    while read < target {
        match body.frame().await {
            Some(Ok(frame)) => {
                read += frame
                    .data_ref()
                    .map_or(0, |data| u64::try_from(data.len()).unwrap_or(u64::MAX));
            }
            Some(Err(_)) | None => return,
        }
    }
}

/// The answer S3 gives for `fault` (500 InternalError, 503 SlowDown or 409
/// ConditionalRequestConflict).
fn s3_error(fault: Fault, resource: &str) -> Response<ProxyBody> {
    let (status, code, message) = match fault {
        Fault::SlowDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ),
        Fault::Conflict => (
            StatusCode::CONFLICT,
            "ConditionalRequestConflict",
            "A conflicting operation occurred. If using PutObject you can retry the request. \
             If using multipart upload you should initiate another CreateMultipartUpload \
             request and re-upload each part.",
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
    };
    xml_error(status, code, message, resource)
}

fn xml_error(status: StatusCode, code: &str, message: &str, resource: &str) -> Response<ProxyBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}\
         </Message><Resource>{}</Resource><RequestId>fault-proxy</RequestId></Error>",
        xml_escape(message),
        xml_escape(resource)
    );
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    headers.insert("x-amz-request-id", HeaderValue::from_static("fault-proxy"));
    response
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Where the connection's next answer is cut. hyper cannot send half an answer on purpose (a
/// failing body may leave what it buffered unsent, and a head always goes out whole), so the
/// cut happens below it, in the socket it writes to ([`CuttableStream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// After the status line: for an answer without a body, where there is nothing to cut
    /// half of.
    AfterStatusLine,
    /// After the head and this many bytes of the body as sent (chunk framing included).
    AfterBody(u64),
}

impl Cut {
    fn of(head_only: bool, response: &Response<Incoming>) -> Cut {
        let status = response.status();
        if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Cut::AfterStatusLine;
        }
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        match declared {
            Some(0) => Cut::AfterStatusLine,
            Some(len) => Cut::AfterBody(len / 2),
            // Chunked: its shortest body (the last chunk, "0\r\n\r\n") is longer than a byte.
            None => Cut::AfterBody(1),
        }
    }
}

/// How far a cut answer has gone out.
#[derive(Debug, Clone, Copy)]
struct CutProgress {
    cut: Cut,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// In an answer's head: bytes of it so far, whether it is an interim 1xx answer (a
    /// `100 Continue`, which is not the answer to cut), and how much of the `\r\n\r\n` ending
    /// it was just seen.
    Head { len: usize, interim: bool, end: u8 },
    /// In the body: how many more bytes may go.
    Body { left: u64 },
    /// Nothing more may go.
    Done,
}

const HEAD_END: &[u8; 4] = b"\r\n\r\n";
/// The offset of the status code's first digit in `HTTP/1.1 200 OK`.
const STATUS_DIGIT: usize = 9;

impl CutProgress {
    fn new(cut: Cut) -> Self {
        Self {
            cut,
            phase: Phase::Head {
                len: 0,
                interim: false,
                end: 0,
            },
        }
    }

    /// Goes over `bytes` as if they were sent, and says how many of them may be.
    fn pass(&mut self, bytes: &[u8]) -> usize {
        let mut sent = 0;
        while sent < bytes.len() {
            match &mut self.phase {
                Phase::Done => break,
                Phase::Body { left } => {
                    let room = usize::try_from(*left).unwrap_or(usize::MAX);
                    let n = room.min(bytes.len() - sent);
                    sent += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.phase = Phase::Done;
                    }
                }
                Phase::Head { len, interim, end } => {
                    let byte = bytes[sent];
                    sent += 1;
                    if *len == STATUS_DIGIT {
                        *interim = byte == b'1';
                    }
                    *len += 1;
                    if byte == b'\n' && !*interim && self.cut == Cut::AfterStatusLine {
                        self.phase = Phase::Done;
                        continue;
                    }
                    *end = if byte == HEAD_END[usize::from(*end)] {
                        *end + 1
                    } else {
                        u8::from(byte == b'\r')
                    };
                    if usize::from(*end) == HEAD_END.len() {
                        self.phase = match (*interim, self.cut) {
                            (true, _) => Phase::Head {
                                len: 0,
                                interim: false,
                                end: 0,
                            },
                            (false, Cut::AfterBody(0)) | (false, Cut::AfterStatusLine) => {
                                Phase::Done
                            }
                            (false, Cut::AfterBody(left)) => Phase::Body { left },
                        };
                    }
                }
            }
        }
        sent
    }
}

/// The client's socket, which can cut the answer the service armed it for: it lets the bytes
/// up to the cut through to the kernel, then fails every write, so that hyper gives up and
/// the connection closes with exactly those bytes sent.
#[derive(Debug)]
struct CuttableStream {
    stream: TcpStream,
    armed: Arc<Mutex<Option<Cut>>>,
    progress: Option<CutProgress>,
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(cut) = this
            .armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            this.progress = Some(CutProgress::new(cut));
        }
        let Some(progress) = &mut this.progress else {
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        };
        let mut probe = *progress;
        let allowed = probe.pass(buf);
        if allowed == 0 && !buf.is_empty() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fault proxy: answer cut",
            )));
        }
        let written =
            std::task::ready!(Pin::new(&mut this.stream).poll_write(cx, &buf[..allowed]))?;
        progress.pass(&buf[..written]);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
