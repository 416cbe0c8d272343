//! The bodies of the fuzz targets in `fuzz/fuzz_targets/` (at the repository root), one function per target.
//!
//! The libFuzzer binaries (`cargo fuzz run <target>`) and the test that replays the
//! committed corpora (`tests/corpus.rs`, part of `cargo test --workspace`) call the same
//! functions, so what was found once stays fixed without a fuzzer. Each function takes
//! arbitrary bytes, returns nothing, and panics when a property is broken: more than "does
//! not panic" wherever a cheap property exists (a parsed head written out again parses
//! to the same head, a body encoded in chunks decodes to itself, a parser fed in pieces
//! agrees with itself fed at once).
//!
//! Where a target needs a setting besides its input (limits, a request method, the size
//! of the pieces), the input's first byte, the *control* byte, chooses it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use switchyard::host;
use switchyard_h1::chunked::{encode_chunk_size, encode_last_chunk, ChunkedDecoder, Decoded};
use switchyard_h1::encode::{encode_request_head, encode_response_head};
use switchyard_h1::parse::{BodyFraming, HeadParser, Limits, ParsedRequest, ParsedResponse};
use switchyard_h1::ParseError;

/// A target: arbitrary bytes in, a panic when a property is broken.
pub type Target = fn(&[u8]);

/// Every target, by the name of its libFuzzer binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("request_head", request_head),
    ("response_head", response_head),
    ("chunked", chunked),
    ("host", host),
    ("cache_headers", cache_headers),
    ("proxy_protocol", proxy_protocol),
    ("config", config),
    ("request_path", request_path),
];

/// The control byte and the input after it.
fn control(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&c, rest)) => (c, rest),
        None => (0, data),
    }
}

/// The size of the pieces an input is fed in: 1 to 16 bytes.
fn piece(control: u8) -> usize {
    usize::from(control >> 4) + 1
}

/// The head limits: the defaults, or (odd control byte) small ones that inputs of a few
/// hundred bytes reach.
fn limits(control: u8) -> Limits {
    if control & 1 == 0 {
        Limits::default()
    } else {
        Limits::default()
            .max_request_line(64)
            .max_head(256)
            .max_headers(8)
    }
}

/// What a parse of a buffer came to, and how many bytes of it were used.
type Outcome<T> = (Result<Option<T>, ParseError>, usize);

/// Runs `parse` over `input` fed `size` bytes at a time, until it returns a head or an
/// error or the input runs out.
fn fed<T>(
    input: &[u8],
    size: usize,
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<T>, ParseError>,
) -> Outcome<T> {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for chunk in input.chunks(size) {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        match parse(&mut buf) {
            Ok(None) => {}
            done => return (done, fed - buf.len()),
        }
    }
    if input.is_empty() {
        return (parse(&mut buf), 0);
    }
    (Ok(None), fed - buf.len())
}

/// A parser made by `parser` fed all of `input` at once, and another fed it in pieces of
/// `size` bytes: they must agree.
fn whole_and_pieces<T, P>(input: &[u8], size: usize, parser: impl Fn() -> P) -> Outcome<T>
where
    T: PartialEq + std::fmt::Debug,
    P: FnMut(&mut BytesMut) -> Result<Option<T>, ParseError>,
{
    let whole = fed(input, input.len().max(1), parser());
    let pieces = fed(input, size, parser());
    match (&whole, &pieces) {
        ((Ok(a), n), (Ok(b), m)) => {
            assert_eq!(a, b, "fed at once and in pieces of {size}");
            assert_eq!(n, m, "bytes used at once and in pieces of {size}");
        }
        ((Err(_), _), (Err(_), _)) => {}
        _ => panic!("fed at once: {whole:?}; in pieces of {size}: {pieces:?}"),
    }
    whole
}

/// A request head's meaning, to compare two parses.
#[derive(Debug, PartialEq)]
struct RequestHead {
    method: Method,
    target: String,
    version: Version,
    headers: HeaderMap,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
}

impl RequestHead {
    fn of(r: ParsedRequest) -> Self {
        Self {
            method: r.parts.method,
            target: r.parts.uri.to_string(),
            version: r.parts.version,
            headers: r.parts.headers,
            framing: r.framing,
            keep_alive: r.keep_alive,
            expect_continue: r.expect_continue,
        }
    }
}

/// The request-head parser of the HTTP/1.1 server. Fed at once and in pieces, it agrees
/// with itself; a head it accepts, written out by the request encoder, parses to the same
/// head (the target in origin-form: the encoder sends what a backend is sent).
pub fn request_head(data: &[u8]) {
    let (control, input) = control(data);
    let (parsed, _) = whole_and_pieces(input, piece(control), || {
        let mut parser = HeadParser::new(limits(control));
        move |buf: &mut BytesMut| parser.parse_request(buf).map(|r| r.map(RequestHead::of))
    });
    let Ok(Some(head)) = parsed else { return };
    let uri: http::Uri = head.target.parse().expect("a parsed target parses again");
    let mut out = BytesMut::new();
    encode_request_head(&head.method, &uri, head.version, &head.headers, &mut out);
    let again = HeadParser::default()
        .parse_request(&mut out)
        .unwrap_or_else(|e| panic!("re-encoded head refused ({e}): {head:?}"))
        .expect("a re-encoded head is complete");
    assert!(out.is_empty(), "bytes left after a re-encoded head");
    let again = RequestHead::of(again);
    let target = if head.method == Method::CONNECT {
        uri.authority().map(|a| a.to_string()).unwrap_or_default()
    } else {
        match uri.path_and_query().map(|pq| pq.as_str()) {
            Some(pq) if !pq.is_empty() => pq.to_owned(),
            _ => "/".to_owned(),
        }
    };
    assert_eq!(again.target, target);
    assert_eq!(
        RequestHead { target, ..head },
        again,
        "a re-encoded head parses to another"
    );
}

/// A response head's meaning, to compare two parses.
#[derive(Debug, PartialEq)]
struct ResponseHead {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: BodyFraming,
    keep_alive: bool,
}

impl ResponseHead {
    fn of(r: ParsedResponse) -> Self {
        Self {
            status: r.parts.status,
            version: r.parts.version,
            headers: r.parts.headers,
            framing: r.framing,
            keep_alive: r.keep_alive,
        }
    }
}

/// The response-head parser of the HTTP/1.1 client, for a request method the control
/// byte chooses. Fed at once and in pieces, it agrees with itself; a parser that has
/// parsed other heads first (and remembers their field names) gives the same verdict and
/// head as a fresh one; the framing follows RFC 9112 §6.3; a head it accepts, written out
/// by the response encoder, parses to the same status, fields and framing.
pub fn response_head(data: &[u8]) {
    let (control, input) = control(data);
    let method = match (control >> 1) & 3 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::CONNECT,
        _ => Method::POST,
    };
    let verdict = |parser: &mut HeadParser, bytes: &[u8]| {
        let parsed = parser.parse_response(&mut BytesMut::from(bytes), &method);
        parsed.map(|r| r.map(ResponseHead::of))
    };
    let fresh = verdict(&mut HeadParser::new(limits(control)), input);
    // After a complete head whose names differ; then, when the input is a complete head
    // itself (a parser is used again only then), after the input (its own names
    // remembered at their positions).
    let mut primed = HeadParser::new(limits(control));
    let primer = b"HTTP/1.1 200 OK\r\nX-Backend: a\r\nContent-Length: 0\r\nX-T: 1\r\n\r\n";
    assert!(matches!(verdict(&mut primed, primer), Ok(Some(_))));
    assert_eq!(verdict(&mut primed, input), fresh, "after another head");
    if matches!(fresh, Ok(Some(_))) {
        assert_eq!(verdict(&mut primed, input), fresh, "after the same head");
    }
    let (parsed, _) = whole_and_pieces(input, piece(control), || {
        let mut parser = HeadParser::new(limits(control));
        let method = method.clone();
        move |buf: &mut BytesMut| {
            parser
                .parse_response(buf, &method)
                .map(|r| r.map(ResponseHead::of))
        }
    });
    let Ok(Some(head)) = parsed else { return };
    let no_body = method == Method::HEAD
        || head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
        || (method == Method::CONNECT && head.status.is_success());
    if no_body {
        assert_eq!(head.framing, BodyFraming::Empty);
    }
    if head.framing == BodyFraming::CloseDelimited {
        assert!(
            !head.keep_alive,
            "a close-delimited body on a kept connection"
        );
    }
    let mut out = BytesMut::new();
    encode_response_head(head.status, &head.headers, &mut out);
    let again = HeadParser::default()
        .parse_response(&mut out, &method)
        .unwrap_or_else(|e| panic!("re-encoded head refused ({e}): {head:?}"))
        .expect("a re-encoded head is complete");
    assert!(out.is_empty(), "bytes left after a re-encoded head");
    let again = ResponseHead::of(again);
    assert_eq!(again.status, head.status);
    assert_eq!(again.headers, head.headers);
    assert_eq!(again.framing, head.framing);
    if head.version == Version::HTTP_11 {
        assert_eq!(again.keep_alive, head.keep_alive);
    }
}

/// A decoded chunked body: its bytes and its trailers.
#[derive(Debug, Clone, PartialEq)]
struct Body {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
}

/// Decodes a chunked body off `buf` as far as it goes.
fn decode(
    dec: &mut ChunkedDecoder,
    buf: &mut BytesMut,
    body: &mut Body,
) -> Result<bool, ParseError> {
    loop {
        match dec.decode(buf)? {
            Decoded::Data(d) => {
                assert!(!d.is_empty(), "an empty data frame");
                body.data.extend_from_slice(&d);
            }
            Decoded::Trailers(t) => body.trailers = Some(t),
            Decoded::Done => {
                assert!(dec.is_done());
                return Ok(true);
            }
            Decoded::NeedMore => return Ok(false),
        }
    }
}

/// Decodes `input` as a chunked body, fed `size` bytes at a time.
fn decode_chunked(input: &[u8], size: usize, small: bool) -> Outcome<Body> {
    let mut dec = if small {
        ChunkedDecoder::new(16, 64)
    } else {
        ChunkedDecoder::default()
    };
    let mut body = Body {
        data: Vec::new(),
        trailers: None,
    };
    let outcome = fed(input, size, |buf| {
        decode(&mut dec, buf, &mut body).map(|done| done.then_some(()))
    });
    let (result, used) = outcome;
    (result.map(|done| done.map(|()| body)), used)
}

/// The chunked-body decoder. Fed at once and in pieces, it agrees with itself (the same
/// bytes, trailers, end and error); and the input taken as a body, encoded in chunks of
/// a size the control byte chooses with a trailer, decodes to itself.
pub fn chunked(data: &[u8]) {
    let (control, input) = control(data);
    let small = control & 1 == 1;
    let whole = decode_chunked(input, input.len().max(1), small);
    let pieces = decode_chunked(input, piece(control), small);
    match (&whole, &pieces) {
        ((Ok(a), n), (Ok(b), m)) => {
            assert_eq!(a, b);
            assert_eq!(n, m);
        }
        ((Err(a), _), (Err(b), _)) => assert_eq!(a, b),
        _ => panic!("fed at once: {whole:?}; in pieces: {pieces:?}"),
    }

    let mut encoded = BytesMut::new();
    for chunk in input.chunks(usize::from(control) + 1) {
        encode_chunk_size(chunk.len(), &mut encoded);
        encoded.put_slice(chunk);
        encoded.put_slice(switchyard_h1::chunked::CHUNK_END);
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-length", HeaderValue::from(input.len()));
    encode_last_chunk(Some(&trailers), &mut encoded);
    let expected = Body {
        data: input.to_vec(),
        trailers: Some(trailers),
    };
    for size in [encoded.len(), piece(control)] {
        let (decoded, used) = decode_chunked(&encoded, size, false);
        assert_eq!(
            decoded.expect("an encoded body decodes"),
            Some(expected.clone())
        );
        assert_eq!(used, encoded.len());
    }
}

/// The bytes no valid `host[:port]` holds: they would let parsers disagree on the host.
fn never_in_host(b: u8) -> bool {
    b.is_ascii_control() || b" \"#/<>?@\\^`{|},".contains(&b) || !b.is_ascii()
}

/// The Host checks: the proxy's [`host::is_valid_host`] on the input, then the HTTP/1.1
/// server's checks (header names and values, request target, `Host`) and the proxy's
/// [`host::check`] on the input as a request head. A valid host holds none of the bytes
/// that make parsers disagree and, percent-encoding aside, is an `http` authority; a request that passes
/// `check` names one host, valid, the same as its target's authority.
pub fn host(data: &[u8]) {
    if host::is_valid_host(data) {
        assert!(!data.is_empty());
        assert!(
            !data.iter().any(|&b| never_in_host(b)),
            "valid host {:?}",
            String::from_utf8_lossy(data)
        );
        // `http` refuses percent-encoded reg-names (`%41.example`) that RFC 3986 allows;
        // the HTTP/1.1 server answers those 400 before `check` sees them.
        if !data.contains(&b'%') {
            http::uri::Authority::try_from(data).expect("a valid host is an authority");
        }
    }
    let mut buf = BytesMut::from(data);
    let Ok(Some(req)) = HeadParser::default().parse_request(&mut buf) else {
        return;
    };
    let parts = req.parts;
    if host::check(parts.version, &parts.uri, &parts.headers).is_err() {
        return;
    }
    let hosts: Vec<&HeaderValue> = parts.headers.get_all(http::header::HOST).iter().collect();
    assert!(hosts.len() <= 1);
    if let Some(host) = hosts.first() {
        assert!(host::is_valid_host(host.as_bytes()));
        if let Some(authority) = parts.uri.authority() {
            assert!(host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()));
        }
    }
    if let Some(authority) = parts.uri.authority() {
        assert!(host::is_valid_host(authority.as_str().as_bytes()));
    } else if parts.version == Version::HTTP_11 {
        assert_eq!(hosts.len(), 1);
    }
}

/// The cache's header parsing (`Cache-Control`, `Pragma`, the targeted fields, `Age`,
/// `Expires`, `Date`, `Last-Modified`, `Vary`) with its properties, on a response and a
/// request written as text: a status line of three digits, the response's fields one
/// per line (`name: value`), an empty line, the request's fields.
pub fn cache_headers(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let status = lines
        .next()
        .and_then(|l| StatusCode::from_bytes(l.trim_ascii()).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = HeaderMap::new();
    let mut request = HeaderMap::new();
    let mut fields = &mut response;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            fields = &mut request;
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            fields.append(name, value);
        }
    }
    switchyard_cache::fuzzing::response(status, &response, &request);
}

/// The PROXY protocol parser (versions 1 and 2). The client of a header it accepts,
/// written in a header of either version, parses back to itself.
pub fn proxy_protocol(data: &[u8]) {
    use switchyard_server::proxy_protocol::parse_header;
    let Ok(Some(client)) = parse_header(data) else {
        return;
    };
    let (family, len) = match client.ip() {
        IpAddr::V4(_) => ("TCP4", 12u16),
        IpAddr::V6(_) => ("TCP6", 36),
    };
    let v1 = format!(
        "PROXY {family} {ip} {ip} {port} {port}\r\n",
        ip = client.ip(),
        port = client.port()
    );
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21".to_vec();
    v2.push(if client.is_ipv4() { 0x11 } else { 0x21 });
    v2.extend_from_slice(&len.to_be_bytes());
    for _ in 0..2 {
        match client.ip() {
            IpAddr::V4(ip) => v2.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => v2.extend_from_slice(&ip.octets()),
        }
    }
    for _ in 0..2 {
        v2.extend_from_slice(&client.port().to_be_bytes());
    }
    for header in [v1.as_bytes(), &v2] {
        let again: Option<SocketAddr> =
            parse_header(header).unwrap_or_else(|e| panic!("{client} written again refused: {e}"));
        assert_eq!(again, Some(client));
    }
}

/// Whether a TOML table names a file anywhere (`tls_cert_file`, `backend_ca_file`,
/// `tls_certs`…): checking such a configuration reads the file, which a fuzzer must not
/// be let to do (`/dev/zero`).
fn names_a_file(table: &toml::Table) -> bool {
    fn value(v: &toml::Value) -> bool {
        match v {
            toml::Value::Table(t) => names_a_file(t),
            toml::Value::Array(a) => a.iter().any(value),
            _ => false,
        }
    }
    table
        .iter()
        .any(|(k, v)| k.contains("file") || k.contains("cert") || value(v))
}

/// The configuration file loader, as `switchyard check` runs it (files that name other
/// files aside). A refused file has problems, each on a line of the file; an accepted
/// one written out again as TOML loads to the same configuration.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if toml::from_str::<toml::Table>(text).is_ok_and(|t| names_a_file(&t)) {
        return;
    }
    match switchyard_cli::FileConfig::parse(text) {
        Ok(config) => {
            let written = toml::to_string(&config).expect("a loaded configuration serializes");
            let again = switchyard_cli::FileConfig::parse(&written)
                .unwrap_or_else(|p| panic!("written again, refused: {p:?}\n{written}"));
            assert_eq!(again, config, "written again:\n{written}");
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
            for p in problems {
                assert!(p.line.is_none_or(|l| (1..=lines).contains(&l)), "{p:?}");
            }
        }
    }
}

/// The whole request path: the proxy's own server (native HTTP/1.1 engine) and its full
/// stack, listening on loopback, over a backend on loopback that answers every request it
/// reads in full with its sequence number in `x-backend-seq`, made once per process.
struct RequestPath {
    runtime: tokio::runtime::Runtime,
    proxy: SocketAddr,
    /// The stack, for its pool's state when an exchange hangs.
    stack: switchyard::Proxy,
    /// Requests the backend has read.
    seen: Arc<AtomicU64>,
}

/// The longest one input's exchange may take before it counts as a hang: time the
/// process was not waiting for a CPU (see [`cpu_wait`]).
const EXCHANGE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A bound on the wall-clock time of one exchange, however starved the process is.
const EXCHANGE_WALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Time this thread spent runnable but waiting for a CPU (Linux's
/// `/proc/thread-self/schedstat`, second field; zero elsewhere). A fuzzer at a low
/// priority on a busy machine waits seconds for a CPU: that is not the proxy hanging, so
/// the exchange's limit leaves it out.
fn cpu_wait() -> std::time::Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .map_or(std::time::Duration::ZERO, std::time::Duration::from_nanos)
}

fn request_path_harness() -> &'static RequestPath {
    static HARNESS: OnceLock<RequestPath> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let seen = Arc::new(AtomicU64::new(0));
        let (proxy, stack) = runtime.block_on(start_request_path(seen.clone()));
        RequestPath {
            runtime,
            proxy,
            stack,
            seen,
        }
    })
}

async fn start_request_path(seen: Arc<AtomicU64>) -> (SocketAddr, switchyard::Proxy) {
    use http_body_util::BodyExt;

    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = backend.accept().await {
            let seen = seen.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        // A request counts once its whole body is read: one whose body the
                        // proxy cut off (the client's was short or malformed) was not sent.
                        req.into_body().collect().await?;
                        let seq = seen.fetch_add(1, Ordering::SeqCst) + 1;
                        http::Response::builder()
                            .header("x-backend-seq", seq)
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
                            .map_err(Into::<Box<dyn std::error::Error + Send + Sync>>::into)
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    let mut config = switchyard::ProxyConfig::default();
    config.health.enabled = false;
    config.cache = None;
    let proxy = switchyard::Proxy::new(config);
    let backend = format!("http://{backend_addr}").parse().unwrap();
    proxy.add_backend(backend).unwrap();
    proxy.settled().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = switchyard_server::ServerConfig::default();
    tokio::spawn(switchyard_server::serve(
        listener,
        proxy.clone(),
        server,
        std::future::pending(),
    ));
    (addr, proxy)
}

/// Arbitrary bytes from a client, written on one connection to the proxy (then its
/// write side closed), into the full stack: the proxy must answer and close within
/// [`EXCHANGE_LIMIT`], and the backend must have read exactly the requests whose
/// responses the client got: a request the client did not frame as one (smuggled in a
/// body, split off a header) would be read by the backend without a response of its
/// own reaching the client.
pub fn request_path(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let harness = request_path_harness();
    harness.runtime.block_on(async {
        let before = harness.seen.load(Ordering::SeqCst);
        let mut conn = tokio::net::TcpStream::connect(harness.proxy).await.unwrap();
        let (mut read, mut write) = conn.split();
        let send = async {
            // The proxy may close first (it refused the head): the rest is not sent.
            if write.write_all(data).await.is_ok() {
                let _ = write.shutdown().await;
            }
        };
        let receive = async {
            let mut out = Vec::new();
            let _ = read.read_to_end(&mut out).await;
            out
        };
        let exchange = async { tokio::join!(send, receive).1 };
        let mut exchange = std::pin::pin!(exchange);
        let (start, waited) = (tokio::time::Instant::now(), cpu_wait());
        let out = loop {
            if let Ok(out) = tokio::time::timeout(EXCHANGE_LIMIT / 10, exchange.as_mut()).await {
                break out;
            }
            let wall = start.elapsed();
            let busy_or_idle = wall.saturating_sub(cpu_wait() - waited);
            assert!(
                busy_or_idle < EXCHANGE_LIMIT && wall < EXCHANGE_WALL_LIMIT,
                "the proxy did not answer and close the connection in time: {wall:?} \
                 ({busy_or_idle:?} of it not waiting for a CPU); pools: {:?}; tunnels: {:?}",
                harness.stack.pool_stats(),
                harness.stack.tunnel_stats(),
            );
        };
        let answered = count(&out, b"x-backend-seq:") as u64;
        let seen = harness.seen.load(Ordering::SeqCst) - before;
        assert_eq!(
            seen,
            answered,
            "requests the backend read against responses of its own the client got; \
             the client got:\n{}",
            String::from_utf8_lossy(&out)
        );
    });
}

/// How many times `needle` occurs in `haystack`, ASCII case ignored.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| w.eq_ignore_ascii_case(needle))
        .count()
}
