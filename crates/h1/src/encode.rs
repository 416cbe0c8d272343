//! Head encoders: a request or response head written into one reused `BytesMut`, so that
//! it goes out in one vectored write together with the body's first chunk.

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

/// Room reserved for a head before it is written: its first line, and this much for each
/// field (most are shorter). A longer head grows the buffer as it is written; a head is
/// not walked twice, once to measure it and once to write it.
const FIELD_ROOM: usize = 64;

/// Room for a head whose first line takes `line` bytes, the empty line that ends it
/// included.
fn head_room(line: usize, headers: &HeaderMap) -> usize {
    line + headers.len() * FIELD_ROOM + 2
}

/// Writes `name: value\r\n` for every field.
pub fn encode_headers(headers: &HeaderMap, dst: &mut BytesMut) {
    dst.reserve(head_room(0, headers));
    put_fields(headers, dst);
}

fn put_fields(headers: &HeaderMap, dst: &mut BytesMut) {
    for (name, value) in headers {
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
}

/// Writes a response head: `HTTP/1.1 <status> <reason>\r\n`, the fields, and the empty
/// line. The version is always HTTP/1.1 (RFC 9110 §6.2: a server sends its own version).
pub fn encode_response_head(status: StatusCode, headers: &HeaderMap, dst: &mut BytesMut) {
    let reason = status.canonical_reason().unwrap_or("");
    dst.reserve(head_room(15 + reason.len(), headers));
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(reason.as_bytes());
    dst.put_slice(b"\r\n");
    put_fields(headers, dst);
    dst.put_slice(b"\r\n");
}

/// Writes a request head. The target is origin-form (path and query) unless the method
/// is CONNECT (authority-form) or the URI has no path (`*` for OPTIONS stays as is).
pub fn encode_request_head(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    dst: &mut BytesMut,
) {
    let target = if *method == Method::CONNECT {
        uri.authority().map_or("", |a| a.as_str())
    } else {
        match uri.path_and_query() {
            Some(pq) if !pq.as_str().is_empty() => pq.as_str(),
            _ => "/",
        }
    };
    dst.reserve(head_room(
        method.as_str().len() + target.len() + 11,
        headers,
    ));
    dst.put_slice(method.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(target.as_bytes());
    dst.put_slice(if version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    put_fields(headers, dst);
    dst.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let mut h = HeaderMap::new();
        h.insert("host", "a.example".parse().unwrap());
        let mut dst = BytesMut::new();
        encode_request_head(
            &Method::GET,
            &"http://a.example/x?y".parse().unwrap(),
            Version::HTTP_11,
            &h,
            &mut dst,
        );
        assert_eq!(&dst[..], b"GET /x?y HTTP/1.1\r\nhost: a.example\r\n\r\n");
        dst.clear();
        encode_response_head(StatusCode::NOT_FOUND, &HeaderMap::new(), &mut dst);
        assert_eq!(&dst[..], b"HTTP/1.1 404 Not Found\r\n\r\n");
        // A field longer than the room reserved for it grows the buffer.
        let long = "v".repeat(1000);
        h.insert("x-long", long.parse().unwrap());
        dst.clear();
        encode_response_head(StatusCode::OK, &h, &mut dst);
        let want = format!("HTTP/1.1 200 OK\r\nhost: a.example\r\nx-long: {long}\r\n\r\n");
        assert_eq!(&dst[..], want.as_bytes());
    }
}
