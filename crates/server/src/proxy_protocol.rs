//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in front of the
//! proxy (AWS NLB, HAProxy, Envoy…) opens each connection with a header naming the client
//! it carries, so that `X-Forwarded-For` names the client and not the load balancer.
//! The header is parsed by the `ppp` crate; this module reads exactly its bytes off the
//! connection, so that what follows (HTTP, or a TLS handshake) is left in place.

use std::io;
use std::net::SocketAddr;

use ppp::{v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The twelve bytes every version 2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, its `\r\n` included.
const V1_MAX: usize = 107;
/// The longest version 2 address block accepted (addresses and TLVs): larger than any
/// load balancer sends, small enough that a bogus length cannot make a connection
/// allocate much.
const V2_MAX_BLOCK: usize = 4096;

/// Reads the PROXY protocol header at the start of `stream`, and not a byte more.
/// Returns the client's address as the header gives it, or `None` when the header names
/// no client (`LOCAL`, as in a load balancer's own health check, `UNKNOWN`, or a Unix
/// socket): the connection's own peer is the client then. A connection that does not
/// start with a valid header is an `InvalidData` error.
pub async fn read_header(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    // Every header is at least 15 bytes ("PROXY UNKNOWN\r\n"): 12 can be read blindly.
    let mut head = vec![0u8; 12];
    stream.read_exact(&mut head).await?;
    if head == V2_SIGNATURE {
        head.resize(16, 0);
        stream.read_exact(&mut head[12..]).await?;
        let block = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if block > V2_MAX_BLOCK {
            return Err(invalid(format!(
                "PROXY v2 header of {block} bytes (at most {V2_MAX_BLOCK})"
            )));
        }
        head.resize(16 + block, 0);
        stream.read_exact(&mut head[16..]).await?;
        return parse_header(&head);
    }
    if !head.starts_with(b"PROXY ") {
        return Err(invalid("no PROXY protocol header".into()));
    }
    // Version 1 runs to the end of its line. What has arrived is peeked, and only the
    // bytes up to the newline are taken.
    while head.last() != Some(&b'\n') {
        let room = V1_MAX - head.len();
        if room == 0 {
            return Err(invalid(format!(
                "PROXY v1 header longer than {V1_MAX} bytes"
            )));
        }
        let mut more = [0u8; V1_MAX];
        let seen = stream.peek(&mut more[..room]).await?;
        if seen == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let take = more[..seen]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(seen, |at| at + 1);
        stream.read_exact(&mut more[..take]).await?;
        head.extend_from_slice(&more[..take]);
    }
    parse_header(&head)
}

/// The client a complete PROXY protocol header names, as [`read_header`] takes it off the
/// connection: version 2 when it starts with the version 2 signature, else version 1.
/// `None` when it names no client; an `InvalidData` error when it is not a valid header.
pub fn parse_header(header: &[u8]) -> io::Result<Option<SocketAddr>> {
    if header.starts_with(&V2_SIGNATURE) {
        let header = v2::Header::try_from(header).map_err(|e| invalid(e.to_string()))?;
        return Ok(match (header.command, header.addresses) {
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => Some((a.source_address, a.source_port).into()),
            (_, v2::Addresses::IPv6(a)) => Some((a.source_address, a.source_port).into()),
            (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
        });
    }
    let header = v1::Header::try_from(header).map_err(|e| invalid(e.to_string()))?;
    Ok(match header.addresses {
        v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
        v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
        v1::Addresses::Unknown => None,
    })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// The server's end of a loopback connection whose client wrote `parts` one after
    /// another.
    async fn written(parts: &'static [&'static [u8]]) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            for part in parts {
                client.write_all(part).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            // Held open until the server has read what it wants.
            let _ = client.read_u8().await;
        });
        listener.accept().await.unwrap().0
    }

    /// A version 1 header that arrives in pieces is read to its end and no further: the
    /// request after it is left on the connection.
    #[tokio::test]
    async fn a_header_in_pieces_is_read_exactly() {
        let mut stream = written(&[
            b"PROXY TCP6 2001:db8::1 ",
            b"2001:db8::2 4000 443\r\nGET / HTTP/1.1\r\n",
        ])
        .await;
        let client = read_header(&mut stream).await.unwrap();
        assert_eq!(client, Some("[2001:db8::1]:4000".parse().unwrap()));
        let mut rest = [0u8; 16];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_v2_header_longer_than_allowed_is_refused_before_it_is_read() {
        let mut stream = written(&[b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff"]).await;
        let err = read_header(&mut stream).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("65535 bytes"), "{err}");
    }
}
