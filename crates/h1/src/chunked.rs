//! The chunked transfer coding (RFC 9112 §7.1): a decoder that resumes wherever its input
//! stopped, even between two bytes of a CRLF, and the encoder's framing pieces.
//!
//! The decoder is strict: hex sizes without sign or spaces (whitespace only before a `;`),
//! checked for overflow; extensions parsed by their grammar (`;name`, `;name=token`,
//! `;name="quoted"`) and ignored, their total size across the body limited (hyper allows
//! 16 KiB); CRLF exactly after the size line and after each chunk's data; the trailer
//! section parsed like a head (strict CRLF, size limit) into a `HeaderMap`, without the
//! fields a trailer must not carry.

use std::fmt::Write as _;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;

use crate::encode::encode_headers;
use crate::error::{ParseError, ParseKind};
use crate::parse::{build_trailers, LineScan, MAX_HEADERS};

/// What [`ChunkedDecoder::decode`] found.
#[derive(Debug)]
pub enum Decoded {
    /// Body bytes (never empty).
    Data(Bytes),
    /// The trailer section; the body is complete.
    Trailers(HeaderMap),
    /// The body is complete (and had no trailers, or they were returned already).
    Done,
    /// Nothing more can be decoded from the buffer until more bytes arrive.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// After `;`, before the name.
    BeforeName,
    Name,
    /// After the name: whitespace, `=`, `;` or CR.
    AfterName,
    /// After `=`.
    BeforeValue,
    Token,
    Quoted,
    QuotedEscape,
    /// After a value: whitespace, `;` or CR.
    AfterValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    /// Whitespace after the size; only `;` may follow.
    SizeWs,
    Ext(Ext),
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailers,
    End,
}

/// Decodes a chunked body out of a read buffer, one call per batch of new bytes.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    extensions: usize,
    max_extensions: usize,
    max_trailers: usize,
    max_trailer_fields: usize,
    trailers: LineScan,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new(16 * 1024, 16 * 1024)
    }
}

fn is_tchar(b: u8) -> bool {
    crate::parse::TCHAR[usize::from(b)]
}

fn is_qdtext(b: u8) -> bool {
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
        || b >= 0x80
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

impl ChunkedDecoder {
    /// A decoder allowing `max_extensions` bytes of chunk extensions over the whole body
    /// and a trailer section of `max_trailers` bytes.
    pub fn new(max_extensions: usize, max_trailers: usize) -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            extensions: 0,
            max_extensions,
            max_trailers,
            max_trailer_fields: MAX_HEADERS,
            trailers: LineScan::default(),
        }
    }

    /// At most `count` fields (at most 128, the default) in the trailer section. The
    /// engine gives it the head's field limit: a trailer section is a header section that
    /// comes late, and one the proxy would refuse as a head is refused here too, as the
    /// client's error, rather than forwarded for the backend to refuse (which would count
    /// against the backend).
    pub fn max_trailer_fields(mut self, count: usize) -> Self {
        self.max_trailer_fields = count.min(MAX_HEADERS);
        self
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::End
    }

    /// Decodes what it can from the front of `buf`, consuming the bytes it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        loop {
            match self.state {
                State::Data => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = self.size.min(buf.len() as u64) as usize;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::Trailers => return self.decode_trailers(buf),
                State::End => return Ok(Decoded::Done),
                _ => {}
            }
            let Some(&b) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.step(b)?;
        }
    }

    fn step(&mut self, b: u8) -> Result<(), ParseError> {
        let size_err = ParseError::new(ParseKind::ChunkSize);
        let ext_err = ParseError::new(ParseKind::ChunkExtension);
        let line_err = ParseError::new(ParseKind::ChunkLine);
        if matches!(self.state, State::SizeWs | State::Ext(_)) {
            self.extensions += 1;
            if self.extensions > self.max_extensions {
                return Err(ext_err);
            }
        }
        self.state = match (self.state, b) {
            (State::Size, _) if hex(b).is_some() => {
                // Leading zeros are allowed, but not forever.
                self.digits = self.digits.saturating_add(1);
                if self.digits > 32 {
                    return Err(size_err);
                }
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(hex(b).unwrap_or(0)))
                    .ok_or(size_err)?;
                State::Size
            }
            (State::Size, _) if self.digits == 0 => return Err(size_err),
            (State::Size, b'\r') => State::SizeLf,
            (State::Size | State::SizeWs, b' ' | b'\t') => State::SizeWs,
            (State::Size | State::SizeWs, b';') => State::Ext(Ext::BeforeName),
            (State::Size | State::SizeWs, _) => return Err(size_err),
            (State::Ext(ext), _) => State::Ext(match (ext, b) {
                (Ext::BeforeName, b' ' | b'\t') => Ext::BeforeName,
                (Ext::BeforeName | Ext::Name, _) if is_tchar(b) => Ext::Name,
                (Ext::Name | Ext::AfterName, b' ' | b'\t') => Ext::AfterName,
                (Ext::Name | Ext::AfterName | Ext::Token | Ext::AfterValue, b';') => {
                    Ext::BeforeName
                }
                (Ext::Name | Ext::AfterName, b'=') => Ext::BeforeValue,
                (Ext::BeforeValue, b' ' | b'\t') => Ext::BeforeValue,
                (Ext::BeforeValue, b'"') => Ext::Quoted,
                (Ext::BeforeValue | Ext::Token, _) if is_tchar(b) => Ext::Token,
                (Ext::Token | Ext::AfterValue, b' ' | b'\t') => Ext::AfterValue,
                (Ext::Quoted, b'"') => Ext::AfterValue,
                (Ext::Quoted, b'\\') => Ext::QuotedEscape,
                (Ext::Quoted, _) if is_qdtext(b) => Ext::Quoted,
                (Ext::QuotedEscape, _)
                    if b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80 =>
                {
                    Ext::Quoted
                }
                (Ext::Name | Ext::AfterName | Ext::Token | Ext::AfterValue, b'\r') => {
                    self.state = State::SizeLf;
                    return Ok(());
                }
                _ => return Err(ext_err),
            }),
            (State::SizeLf, b'\n') => {
                self.digits = 0;
                if self.size == 0 {
                    State::Trailers
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size,
            (State::SizeLf | State::DataCr | State::DataLf, _) => return Err(line_err),
            (State::Data | State::Trailers | State::End, _) => unreachable!("handled by decode"),
        };
        Ok(())
    }

    fn decode_trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        let err = ParseError::new(ParseKind::Trailers);
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::End;
            return Ok(Decoded::Done);
        }
        if buf.first().is_some_and(|&b| b != b'\r') || buf.len() >= 2 {
            let len = self.trailers.scan(buf).map_err(|_| err)?;
            match len {
                Some(len) if len <= self.max_trailers => {
                    let section = buf.split_to(len).freeze();
                    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let raw = &mut raw[..self.max_trailer_fields];
                    match httparse::parse_headers(&section, raw) {
                        Ok(httparse::Status::Complete((_, fields))) => {
                            let map = build_trailers(&section, fields)?;
                            self.state = State::End;
                            return Ok(Decoded::Trailers(map));
                        }
                        _ => return Err(err),
                    }
                }
                Some(_) => return Err(err),
                None if buf.len() > self.max_trailers => return Err(err),
                None => {}
            }
        }
        Ok(Decoded::NeedMore)
    }
}

/// Writes a chunk's size line (`{len:x}\r\n`); the data and a CRLF follow it.
pub fn encode_chunk_size(len: usize, dst: &mut BytesMut) {
    // Writing to a BytesMut cannot fail.
    let _ = write!(dst, "{len:x}\r\n");
}

/// The CRLF that ends a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// Writes the last chunk (`0\r\n`), the trailer fields if any, and the final CRLF.
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, dst: &mut BytesMut) {
    dst.put_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        encode_headers(trailers, dst);
    }
    dst.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` one byte at a time; returns the body and trailers, or the error.
    fn byte_by_byte(input: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, usize), ParseError> {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        for (i, &b) in input.iter().enumerate() {
            buf.put_u8(b);
            loop {
                match dec.decode(&mut buf)? {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::Done => return Ok((body, trailers, input.len() - i - 1)),
                    Decoded::NeedMore => break,
                }
            }
        }
        Err(ParseError::new(ParseKind::ChunkLine))
    }

    fn whole(input: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), ParseError> {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::from(input);
        let mut body = Vec::new();
        let mut trailers = None;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::Done => return Ok((body, trailers)),
                Decoded::NeedMore => return Err(ParseError::new(ParseKind::ChunkLine)),
            }
        }
    }

    #[test]
    fn decodes_byte_by_byte_and_whole() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (
                b"5;a=b\r\nhello\r\n6 ; x = \"q\\\"y\" ;z\r\n world\r\n0\r\n\r\n",
                b"hello world",
            ),
            (b"00000A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"a\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n", b"0123456789!"),
            (b"0\r\n\r\n", b""),
        ];
        for (input, body) in cases {
            let (got, trailers, rest) = byte_by_byte(input).unwrap();
            assert_eq!(&got, body, "{:?}", String::from_utf8_lossy(input));
            assert!(trailers.is_none());
            assert_eq!(rest, 0);
            assert_eq!(&whole(input).unwrap().0, body);
        }
    }

    #[test]
    fn trailers_are_parsed_and_filtered() {
        let input = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nContent-Length: 9\r\nX-Two: a\r\n\r\nNEXT";
        let (body, trailers, rest) = byte_by_byte(input).unwrap();
        assert_eq!(body, b"abc");
        let t = trailers.unwrap();
        assert_eq!(t["x-sum"], "1");
        assert_eq!(t["x-two"], "a");
        assert!(t.get("content-length").is_none());
        assert_eq!(rest, 4);
    }

    #[test]
    fn rejects_malformed_framing() {
        let bad: &[&[u8]] = &[
            b"\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\rhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r0\r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
            b"5;a\nhello\r\n0\r\n\r\n",
            b"5;a\x00\r\nhello\r\n0\r\n\r\n",
            b"5;a=b c\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"ffffffffffffffff0\r\n",
            b"0000000000000000000000000000000005\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\nX: y\r\n\n",
            b"0\r\n\n",
            b"0\r\n : y\r\n\r\n",
            b"0\r\nX: y\r\n z\r\n\r\n",
            b"0\r\nX y\r\n\r\n",
        ];
        for input in bad {
            assert!(
                byte_by_byte(input).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(input)
            );
            assert!(
                whole(input).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_extensions_and_trailers() {
        let mut dec = ChunkedDecoder::new(8, 32);
        let mut buf = BytesMut::from(&b"1;aaaaaaaaaa\r\n"[..]);
        assert!(dec.decode(&mut buf).is_err());
        let mut dec = ChunkedDecoder::new(8, 32);
        let mut buf = BytesMut::from(&b"0\r\nX-Long: 0123456789012345678901234567890\r\n\r\n"[..]);
        assert!(dec.decode(&mut buf).is_err());

        // The field count, as for a head: three fields pass a limit of three, four do not.
        let section = |n: usize| {
            let mut s = b"0\r\n".to_vec();
            for i in 0..n {
                s.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            s.extend_from_slice(b"\r\n");
            BytesMut::from(&s[..])
        };
        let three = ChunkedDecoder::default()
            .max_trailer_fields(3)
            .decode(&mut section(3));
        assert!(matches!(three, Ok(Decoded::Trailers(t)) if t.len() == 3));
        let four = ChunkedDecoder::default()
            .max_trailer_fields(3)
            .decode(&mut section(4));
        assert_eq!(four.unwrap_err(), ParseError::new(ParseKind::Trailers));
    }

    #[test]
    fn encoder_round_trips() {
        let mut out = BytesMut::new();
        encode_chunk_size(11, &mut out);
        out.put_slice(b"hello world");
        out.put_slice(CHUNK_END);
        let mut t = HeaderMap::new();
        t.insert("x-done", "yes".parse().unwrap());
        encode_last_chunk(Some(&t), &mut out);
        assert_eq!(&out[..], b"b\r\nhello world\r\n0\r\nx-done: yes\r\n\r\n");
        let (body, trailers) = whole(&out).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(trailers.unwrap()["x-done"], "yes");
    }
}
