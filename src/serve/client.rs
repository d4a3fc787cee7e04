//! A minimal blocking HTTP/1.1 client for the load bench and the tests: one request per
//! connection ([`request`]) or many on one kept-alive connection ([`Connection`]), just enough
//! to talk to `gpu-cnn serve` over loopback, no dependency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response: status code, header lines (lower-cased names), body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one request and reads the whole answer (the server closes the connection after it).
/// A server that answers before reading all of a large body (413) may reset the connection
/// while the body is still being written: the write error is ignored and the answer read.
pub fn request(addr: SocketAddr, method: &str, path: &str, content_type: Option<&str>, body: &[u8], timeout: Duration) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = content_type {
        head += &format!("Content-Type: {t}\r\n");
    }
    head += "\r\n";
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    // Write from a second thread: a server may answer (413) without reading a large body, and
    // then the answer must be read while the write is still blocked.
    let mut writer = stream.try_clone()?;
    let write = std::thread::spawn(move || {
        let _ = writer.write_all(&message);
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let result = loop {
        if let Some(done) = complete(&raw) {
            break Ok(done);
        }
        match stream.read(&mut buf) {
            Ok(0) => break parse(&raw).ok_or_else(|| invalid(&raw)),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => break Err(e),
            Err(_) => break parse(&raw).ok_or_else(|| invalid(&raw)),
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = write.join();
    result
}

/// One kept-alive connection: requests one after another on one TCP stream, as a web backend's
/// pooled HTTP client sends them (no connect, accept and teardown per request). For bodies the
/// server reads in full (the load bench's images); [`request`] handles early answers.
pub struct Connection {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
}

impl Connection {
    /// A connection to `addr`; the TCP stream opens on the first request.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Connection {
        Connection { addr, timeout, stream: None }
    }

    fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        Ok(self.stream.as_mut().expect("just opened"))
    }

    /// Sends one request and reads its answer; the connection stays open unless the server
    /// closes it (the next request then opens a new one). On an error the stream is dropped.
    pub fn send(&mut self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> std::io::Result<HttpResponse> {
        let addr = self.addr;
        let mut message = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
        if let Some(t) = content_type {
            message += &format!("Content-Type: {t}\r\n");
        }
        message += "\r\n";
        let mut message = message.into_bytes();
        message.extend_from_slice(body);
        let result = self.exchange(&message);
        match &result {
            Ok(r) if !r.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) => {}
            _ => self.stream = None,
        }
        result
    }

    fn exchange(&mut self, message: &[u8]) -> std::io::Result<HttpResponse> {
        let stream = self.stream()?;
        stream.write_all(message)?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(done) = complete(&raw) {
                return Ok(done);
            }
            match stream.read(&mut buf)? {
                0 => return Err(invalid(&raw)),
                n => raw.extend_from_slice(&buf[..n]),
            }
        }
    }
}

fn invalid(raw: &[u8]) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw[..raw.len().min(200)])))
}

/// The response, once its head and Content-Length bytes of body have arrived.
fn complete(raw: &[u8]) -> Option<HttpResponse> {
    let r = parse(raw)?;
    let len: usize = r.header("content-length")?.parse().ok()?;
    (r.body.len() >= len).then_some(r)
}

fn parse(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some(len) = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<usize>().ok()) {
        body.truncate(len);
    }
    Some(HttpResponse { status, headers, body })
}

/// A multipart/form-data body with one part per (file name, bytes); returns (content type, body).
pub fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "gpu-cnn-boundary-7d3f9a";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
