//! The framing corpus: malformed and adversarial requests, each with its verdict, run
//! through `serve_connection` over `tokio::io::duplex` with a service that records what
//! it was handed (target and complete body). No case may smuggle a request, none may
//! panic, and every case also runs through hyper's HTTP/1 server: what this engine hands
//! to the service must be a prefix of what hyper hands over (at least as strict as hyper,
//! and the same framing where both accept).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioIo, TokioTimer};
use switchyard_h1::{serve_connection, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

type Handed = Vec<(String, Vec<u8>)>;

struct Case {
    name: String,
    input: Vec<u8>,
    /// What the service is handed: (target, body), in order.
    handed: Vec<(&'static str, &'static [u8])>,
    /// The status of the error response the engine writes itself, if any.
    status: Option<u16>,
}

fn case(name: impl Into<String>, input: impl Into<Vec<u8>>) -> Case {
    Case {
        name: name.into(),
        input: input.into(),
        handed: Vec::new(),
        status: None,
    }
}

impl Case {
    fn ok(mut self, target: &'static str, body: &'static [u8]) -> Self {
        self.handed.push((target, body));
        self
    }

    fn rej(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

/// A POST with these extra header lines and this body.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}").into_bytes()
}

/// A GET with these extra header lines.
fn get(headers: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes()
}

const SMUGGLE: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

fn corpus() -> Vec<Case> {
    let mut c = vec![
        // Baselines.
        case("plain get", get("")).ok("/", b""),
        case("leading empty lines", [&b"\r\n\r\n"[..], &get("")].concat()).ok("/", b""),
        case("cl body", post("Content-Length: 5\r\n", "hello")).ok("/", b"hello"),
        case(
            "chunked body",
            post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .ok("/", b"hello"),
        case(
            "get with cl body",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .ok("/", b"hello"),
        case("http/1.0 without host", "GET /a HTTP/1.0\r\n\r\n").ok("/a", b""),
        case(
            "absolute form",
            "GET http://example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n",
        )
        .ok("http://example.com/a", b""),
        case("options asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").ok("*", b""),
        case(
            "connect authority",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        )
        .ok("example.com:443", b""),
        case(
            "obs-text in value",
            [&b"GET / HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\xff\r\n\r\n"[..]].concat(),
        )
        .ok("/", b""),
        case(
            "expect continue",
            post("Expect: 100-continue\r\nContent-Length: 2\r\n", "ok"),
        )
        .ok("/", b"ok"),
        // CL.TE and TE.CL.
        case(
            "cl.te",
            [
                post(
                    "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                    "0\r\n\r\n",
                ),
                SMUGGLE.into(),
            ]
            .concat(),
        )
        .rej(400),
        case(
            "te.cl",
            [
                post(
                    "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                    "0\r\n\r\n",
                ),
                SMUGGLE.into(),
            ]
            .concat(),
        )
        .rej(400),
        case(
            "cl 0 and te",
            post(
                "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
        )
        .rej(400),
        case(
            "te.cl smuggle classic",
            post(
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                "5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
            ),
        )
        .rej(400),
        // Transfer-Encoding spellings.
        case(
            "te chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te xchunked",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te chunkedx",
            post("Transfer-Encoding: chunkedx\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te Chunked",
            post("Transfer-Encoding: Chunked\r\n", "0\r\n\r\n"),
        )
        .ok("/", b""),
        case(
            "te CHUNKED",
            post("Transfer-Encoding: CHUNKED\r\n", "1\r\na\r\n0\r\n\r\n"),
        )
        .ok("/", b"a"),
        case(
            "te tab before",
            post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n"),
        )
        .ok("/", b""),
        case(
            "te tab after",
            post("Transfer-Encoding: chunked\t\r\n", "0\r\n\r\n"),
        )
        .ok("/", b""),
        case(
            "te space before colon",
            post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te tab before colon",
            post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
        )
        .rej(400),
        case(
            "te chunked, chunked",
            post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te identity then chunked",
            post(
                "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
        )
        .rej(501),
        case(
            "te gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
        )
        .rej(501),
        case(
            "te x-gzip, chunked",
            post("Transfer-Encoding: x-gzip, chunked\r\n", "0\r\n\r\n"),
        )
        .rej(501),
        case("te gzip", post("Transfer-Encoding: gzip\r\n", "0\r\n\r\n")).rej(400),
        case("te identity", post("Transfer-Encoding: identity\r\n", "")).rej(400),
        case(
            "te trailing comma",
            post("Transfer-Encoding: chunked,\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te leading comma",
            post("Transfer-Encoding: ,chunked\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te quoted",
            post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te with parameter",
            post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case("te empty", post("Transfer-Encoding:\r\n", "")).rej(400),
        case(
            "te vertical tab",
            post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te in http/1.0",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .rej(400),
        case(
            "te obs-fold",
            post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
        )
        .rej(400),
        case(
            "te header first with leading space",
            "POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\n\r\n0\r\n\r\n",
        )
        .rej(400),
        case(
            "te underscore is another header",
            [
                post("Transfer_Encoding: chunked\r\nContent-Length: 0\r\n", ""),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
        )
        .ok("/", b"")
        .rej(400),
        // Content-Length.
        case(
            "cl repeated same",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        )
        .ok("/", b"hello"),
        case(
            "cl repeated differing",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        )
        .rej(400),
        case("cl list same", post("Content-Length: 5, 5\r\n", "hello")).rej(400),
        case(
            "cl list differing",
            post("Content-Length: 5, 6\r\n", "hello"),
        )
        .rej(400),
        case("cl plus", post("Content-Length: +5\r\n", "hello")).rej(400),
        case("cl minus", post("Content-Length: -5\r\n", "hello")).rej(400),
        case("cl suffix", post("Content-Length: 5a\r\n", "hello")).rej(400),
        case("cl hex", post("Content-Length: 0x5\r\n", "hello")).rej(400),
        case("cl decimal point", post("Content-Length: 5.0\r\n", "hello")).rej(400),
        case("cl exponent", post("Content-Length: 1e3\r\n", "hello")).rej(400),
        case("cl empty", post("Content-Length:\r\n", "")).rej(400),
        case(
            "cl inner space",
            post("Content-Length: 1 0\r\n", "0123456789"),
        )
        .rej(400),
        case(
            "cl overflow",
            post("Content-Length: 18446744073709551616\r\n", ""),
        )
        .rej(400),
        case(
            "cl huge overflow",
            post("Content-Length: 99999999999999999999999\r\n", ""),
        )
        .rej(400),
        case("cl leading zero", post("Content-Length: 05\r\n", "hello")).ok("/", b"hello"),
        case("cl leading space", post("Content-Length:  5\r\n", "hello")).ok("/", b"hello"),
        case("cl zero", post("Content-Length: 0\r\n", "")).ok("/", b""),
        case(
            "cl short body then eof",
            post("Content-Length: 3\r\n", "ab"),
        ),
        case(
            "cl then pipelined",
            [post("Content-Length: 2\r\n", "ab"), get("")].concat(),
        )
        .ok("/", b"ab")
        .ok("/", b""),
        case(
            "cl vertical tab",
            post("Content-Length: \x0b5\r\n", "hello"),
        )
        .rej(400),
        // Chunked bodies.
        case(
            "chunk ext",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5;a=b;c=\"d e\"\r\nhello\r\n0;x\r\n\r\n",
            ),
        )
        .ok("/", b"hello"),
        case(
            "chunk trailers",
            post(
                "Transfer-Encoding: chunked\r\n",
                "1\r\na\r\n0\r\nX-T: 1\r\n\r\n",
            ),
        )
        .ok("/", b"a"),
        case(
            "chunk leading zeros",
            post(
                "Transfer-Encoding: chunked\r\n",
                "0005\r\nhello\r\n0\r\n\r\n",
            ),
        )
        .ok("/", b"hello"),
        case(
            "chunk upper hex",
            post(
                "Transfer-Encoding: chunked\r\n",
                "A\r\n0123456789\r\n0\r\n\r\n",
            ),
        )
        .ok("/", b"0123456789"),
        case(
            "chunk then pipelined",
            [
                post("Transfer-Encoding: chunked\r\n", "1\r\na\r\n0\r\n\r\n"),
                get(""),
            ]
            .concat(),
        )
        .ok("/", b"a")
        .ok("/", b""),
    ];
    let bad_chunks: &[(&str, &str)] = &[
        ("chunk size negative", "-5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size plus", "+5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size 0x", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size leading space", " 5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size trailing space", "5 \r\nhello\r\n0\r\n\r\n"),
        ("chunk size not hex", "g\r\nhello\r\n0\r\n\r\n"),
        ("chunk size empty", "\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size overflow",
            "10000000000000000\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk size 2^64-1 then smuggle",
            "ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("chunk data too long", "5\r\nhelloX\r\n0\r\n\r\n"),
        ("chunk data too short", "5\r\nhell\r\n0\r\n\r\n"),
        ("chunk size bare lf", "5\nhello\r\n0\r\n\r\n"),
        ("chunk size bare cr", "5\rhello\r\n0\r\n\r\n"),
        ("chunk data bare lf", "5\r\nhello\n0\r\n\r\n"),
        ("chunk data bare cr", "5\r\nhello\r0\r\n\r\n"),
        ("last chunk bare lf", "0\n\n"),
        ("last chunk end bare lf", "0\r\n\n"),
        ("chunk ext bare lf", "5;a\nhello\r\n0\r\n\r\n"),
        ("chunk ext bare cr", "5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("chunk ext nul", "5;a\0\r\nhello\r\n0\r\n\r\n"),
        ("chunk ext empty", "5;\r\nhello\r\n0\r\n\r\n"),
        ("chunk ext empty value", "5;a=\r\nhello\r\n0\r\n\r\n"),
        ("chunk ext open quote", "5;a=\"b\r\nhello\r\n0\r\n\r\n"),
        ("chunk ext space in token", "5;a=b c\r\nhello\r\n0\r\n\r\n"),
        ("trailer bare lf", "0\r\nX: y\n\r\n"),
        ("trailer obs-fold", "0\r\nX: y\r\n z\r\n\r\n"),
        ("trailer no colon", "0\r\nX y\r\n\r\n"),
        ("trailer nul", "0\r\nX: \0\r\n\r\n"),
        ("chunked eof mid data", "5\r\nhel"),
        ("chunked eof before last", "5\r\nhello\r\n"),
    ];
    for (name, body) in bad_chunks {
        let input = [post("Transfer-Encoding: chunked\r\n", body), SMUGGLE.into()].concat();
        c.push(case(*name, input));
    }
    let big_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "a".repeat(20 * 1024));
    c.push(case(
        "chunk ext too large",
        [
            post("Transfer-Encoding: chunked\r\n", &big_ext),
            SMUGGLE.into(),
        ]
        .concat(),
    ));

    // Request lines and versions.
    let bad_lines: &[(&str, &[u8], u16)] = &[
        ("http/0.9", b"GET /\r\n\r\n", 400),
        ("http/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
        ("http/1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 400),
        (
            "http/0.9 versioned",
            b"GET / HTTP/0.9\r\nHost: x\r\n\r\n",
            400,
        ),
        ("http/1.10", b"GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400),
        ("http/11", b"GET / HTTP/11\r\nHost: x\r\n\r\n", 400),
        ("lowercase http", b"GET / http/1.1\r\nHost: x\r\n\r\n", 400),
        (
            "version trailing space",
            b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
            400,
        ),
        (
            "version inner space",
            b"GET / HTTP/ 1.1\r\nHost: x\r\n\r\n",
            400,
        ),
        ("http/9.9", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        ("http/1", b"GET / HTTP/1\r\nHost: x\r\n\r\n", 400),
        ("no version", b"GET / \r\nHost: x\r\n\r\n", 400),
        ("double space", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("tab separator", b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("leading space", b" GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("bad method char", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("nul in method", b"G\0T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("relative target", b"GET x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("asterisk on get", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (
            "authority on get",
            b"GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
        ("bare lf everywhere", b"GET / HTTP/1.1\nHost: x\n\n", 400),
        ("bare lf at end", b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400),
        ("bare lf final", b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
        ("bare cr in head", b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
        (
            "bare cr in value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
            400,
        ),
        (
            "leading bare lf",
            b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
        ("missing host", b"GET / HTTP/1.1\r\n\r\n", 400),
        (
            "two hosts",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        (
            "host with userinfo",
            b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            400,
        ),
        (
            "host with space",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            400,
        ),
        (
            "obs-fold tab",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n",
            400,
        ),
        (
            "header without colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nX\r\n\r\n",
            400,
        ),
        (
            "empty header name",
            b"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n",
            400,
        ),
        (
            "space before colon",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            400,
        ),
        ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ];
    for (name, input, status) in bad_lines {
        c.push(case(*name, *input).rej(*status));
    }

    // Control characters and separators, one case each.
    for b in (0u8..0x20).chain([0x7f]) {
        if b == b'\t' || b == b'\r' || b == b'\n' {
            continue;
        }
        let input = [
            &b"GET / HTTP/1.1\r\nHost: x\r\nX: a"[..],
            &[b],
            b"b\r\n\r\n",
        ]
        .concat();
        c.push(case(format!("value ctl {b:#04x}"), input).rej(400));
    }
    for b in (0u8..=0x20).chain([0x7f]).chain(*b"(),/;<=>?@[\\]{}\"") {
        if b == b'\r' || b == b'\n' {
            continue;
        }
        let input = [
            &b"GET / HTTP/1.1\r\nHost: x\r\nX"[..],
            &[b],
            b"Y: v\r\n\r\n",
        ]
        .concat();
        c.push(case(format!("name byte {b:#04x}"), input).rej(400));
    }
    for b in (0u8..0x20).chain([0x7f, b'<', b'>', b'`']) {
        let input = [&b"GET /a"[..], &[b], b"b HTTP/1.1\r\nHost: x\r\n\r\n"].concat();
        c.push(case(format!("target byte {b:#04x}"), input).rej(400));
    }

    // Bytes RFC 3986 does not allow in a target but hyper (and `http::Uri`) accept.
    c.push(case("target braces", "GET /a{b}|c^d HTTP/1.1\r\nHost: x\r\n\r\n").ok("/a{b}|c^d", b""));
    // A TLS hello on the plain port: no line ever ends, EOF closes without an answer.
    c.push(case(
        "tls hello",
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
    ));

    // Limits.
    c.push(
        case(
            "target too long",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000)),
        )
        .rej(414),
    );
    c.push(
        case(
            "head too large",
            get(&format!("X: {}\r\n", "a".repeat(70_000))),
        )
        .rej(431),
    );
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    c.push(case("too many headers", get(&many)).rej(431));
    let hundred: String = (0..99).map(|i| format!("X-{i}: v\r\n")).collect();
    c.push(case("100 headers", get(&hundred)).ok("/", b""));

    // Pipelining.
    c.push(
        case("three pipelined", [get(""), get(""), get("")].concat())
            .ok("/", b"")
            .ok("/", b"")
            .ok("/", b""),
    );
    c.push(
        case(
            "pipelined then malformed",
            [
                get(""),
                b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n".to_vec(),
            ]
            .concat(),
        )
        .ok("/", b"")
        .rej(400),
    );
    c.push(
        case(
            "connection close stops pipeline",
            [get("Connection: close\r\n"), get("")].concat(),
        )
        .ok("/", b""),
    );
    c.push(
        case(
            "http/1.0 stops pipeline",
            [b"GET /a HTTP/1.0\r\n\r\n".to_vec(), get("")].concat(),
        )
        .ok("/a", b""),
    );
    c.push(
        case(
            "get cl 0 then request",
            [get("Content-Length: 0\r\n"), get("")].concat(),
        )
        .ok("/", b"")
        .ok("/", b""),
    );
    c.push(
        case(
            "truncated second head",
            [get(""), b"GET / HTTP/1.1\r\nHo".to_vec()].concat(),
        )
        .ok("/", b""),
    );
    c.push(
        case(
            "crlf between requests",
            [get(""), b"\r\n".to_vec(), get("")].concat(),
        )
        .ok("/", b"")
        .ok("/", b""),
    );
    c
}

/// Records (target, body) of every request whose body arrived whole; answers "ok".
async fn record<B>(
    req: Request<B>,
    tx: mpsc::UnboundedSender<(String, Vec<u8>)>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body,
{
    let (parts, body) = req.into_parts();
    if let Ok(body) = body.collect().await {
        let _ = tx.send((parts.uri.to_string(), body.to_bytes().to_vec()));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Writes the input, half-closes, and reads everything back.
async fn drive(mut client: DuplexStream, input: &[u8]) -> Vec<u8> {
    let _ = client.write_all(input).await;
    let _ = client.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(300), client.read_to_end(&mut out)).await;
    out
}

fn collect(mut rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>) -> Handed {
    let mut v = Vec::new();
    while let Ok(x) = rx.try_recv() {
        v.push(x);
    }
    v
}

async fn native(input: &[u8]) -> (Handed, Vec<u16>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = tower::service_fn(move |req| record(req, tx.clone()));
    let conn = tokio::spawn(serve_connection(server, svc, Config::default()));
    let out = drive(client, input).await;
    let _ = conn.await.expect("no panic");
    (collect(rx), statuses(&out))
}

async fn hyper(input: &[u8]) -> Handed {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = hyper::service::service_fn(move |req| record(req, tx.clone()));
    let conn = tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .half_close(true)
            .serve_connection(TokioIo::new(server), svc)
            .await;
    });
    drive(client, input).await;
    let _ = conn.await;
    collect(rx)
}

/// The statuses of the responses on the wire, `100 Continue` left out.
fn statuses(out: &[u8]) -> Vec<u16> {
    let mut v = Vec::new();
    let mut i = 0;
    while let Some(at) = out[i..].windows(9).position(|w| w == b"HTTP/1.1 ") {
        let s = i + at + 9;
        if let Some(code) = out
            .get(s..s + 3)
            .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
        {
            if code != 100 {
                v.push(code);
            }
        }
        i = s;
    }
    v
}

#[tokio::test(start_paused = true)]
async fn corpus_verdicts_and_hyper_differential() {
    let corpus = corpus();
    assert!(corpus.len() >= 150, "corpus has {} cases", corpus.len());
    let mut failures = Vec::new();
    let mut stricter = Vec::new();
    for case in &corpus {
        let (handed, statuses) = native(&case.input).await;
        let expected: Handed = case
            .handed
            .iter()
            .map(|(t, b)| (t.to_string(), b.to_vec()))
            .collect();
        let errors: Vec<u16> = statuses.into_iter().filter(|s| *s != 200).collect();
        let expected_errors: Vec<u16> = case.status.into_iter().collect();
        if handed != expected || errors != expected_errors {
            failures.push(format!(
                "{}: handed {handed:?} errors {errors:?}, expected {expected:?} {expected_errors:?}",
                case.name
            ));
        }
        if handed.iter().any(|(t, _)| t.contains("smuggled")) {
            failures.push(format!("{}: smuggled a request", case.name));
        }
        let theirs = hyper(&case.input).await;
        if handed.len() > theirs.len() || handed[..] != theirs[..handed.len()] {
            failures.push(format!(
                "{}: looser than hyper: ours {handed:?}, hyper {theirs:?}",
                case.name
            ));
        } else if handed.len() < theirs.len() {
            stricter.push(case.name.as_str());
        }
    }
    println!(
        "{} cases; stricter than hyper on {}: {stricter:?}",
        corpus.len(),
        stricter.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
