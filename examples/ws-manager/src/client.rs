//! A tiny HTTP/1.1 client (one request per connection), enough for the tests and the
//! bench to talk to managers and the upstream without a heavier dependency.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time allowed for one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, writing or reading failed.
    #[error("HTTP {method} http://{addr}{path} failed: {source}")]
    Io {
        /// The method.
        method: String,
        /// The server.
        addr: SocketAddr,
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("HTTP {method} http://{addr}{path} timed out after {REQUEST_TIMEOUT:?}")]
    Timeout {
        /// The method.
        method: String,
        /// The server.
        addr: SocketAddr,
        /// The path.
        path: String,
    },
    /// The answer is not HTTP.
    #[error("HTTP {method} http://{addr}{path}: malformed response")]
    Malformed {
        /// The method.
        method: String,
        /// The server.
        addr: SocketAddr,
        /// The path.
        path: String,
    },
}

/// Sends one request (`body`, if any, as JSON) and returns the status and body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), ClientError> {
    let io = |source| ClientError::Io {
        method: method.to_owned(),
        addr,
        path: path.to_owned(),
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(body.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(io)?;
        Ok::<_, ClientError>(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            method: method.to_owned(),
            addr,
            path: path.to_owned(),
        })??;
    parse(&raw).ok_or_else(|| ClientError::Malformed {
        method: method.to_owned(),
        addr,
        path: path.to_owned(),
    })
}

fn parse(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_owned()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some((status, out));
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_plain_and_chunked() {
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
            Some((200, "hi".to_owned()))
        );
        assert_eq!(
            parse(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\n!!!\r\n0\r\n\r\n"),
            Some((201, "hi!!!".to_owned()))
        );
    }
}
