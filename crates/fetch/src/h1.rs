//! File downloads over HTTP/1.1 read by hand: the request written in one `write`, the response
//! head parsed with `httparse`, the body de-framed (`Content-Length`, `chunked`, or to the end
//! of the connection; gzip decoded with flate2) from large reads inside the task that consumes
//! it, and idle connections kept per origin for the next file. The result is an ordinary
//! `reqwest::Response` (status, headers, and a body through `reqwest::Body::wrap`), so the
//! download code, its statuses, retries, `Retry-After`, token renewal and stall watchdog are
//! the same for both paths.
//!
//! Why by hand: a server that sends one HTTP chunk per NDJSON line (the SMART reference server
//! does) makes hyper decode every line into a frame in its connection task and hand it to the
//! body's reader over a one-item channel — two task wake-ups and a trip through tokio's
//! scheduler per ~700-byte line, about a third of such a download's CPU. Here one `read` of up
//! to [`READ_BUF`] bytes de-frames every chunk it holds with a `memmove`, as curl does, and
//! large chunks and `Content-Length` bodies are handed on without a copy. hyper's
//! `client::conn::http1` driven in the same task would still decode and channel each chunk.
//!
//! What is *not* handled here goes through reqwest unchanged ([`Outcome::Fallback`], before
//! anything of the response is consumed, or for a whole run): a proxy that may apply (any
//! `*_proxy` variable; always on macOS and Windows, whose system settings reqwest may read),
//! a request other than `GET`, a scheme other than http/https, a connection or TLS handshake
//! that fails (reqwest then reports the real error; an origin whose TLS handshake failed or
//! whose connection timed out is not tried here again, e.g. one that speaks only HTTP/2), no
//! response head on a new connection (on a kept one that gave not one byte of an answer, the
//! request goes once more on a new one), a head cut short, a `101`, a head `httparse`
//! refuses, a `Content-Length` that is not plain digits or several that disagree, and a
//! `Transfer-Encoding` other than `chunked`.
//!
//! Framing rules (each tested): a body cut short by the connection's end is an error; bytes
//! after a body's end, `Connection: close`, HTTP/1.0, and both `Transfer-Encoding` and
//! `Content-Length` (the chunks win, the length is dropped) keep the connection from being
//! used again; a chunk-size line must start with a hex digit. A body with neither a length
//! nor chunks ends where the connection ends, so a cut connection cannot be told from the end
//! (as with reqwest): the download then checks the manifest `count` and the last line. Redirects are followed by the caller
//! ([`crate::http`]), hop by hop, with the same `Authorization` rule as for reqwest.
//!
//! TLS is the same `rustls::ClientConfig` reqwest is given ([`crate::http::tls_config`]: the
//! platform verifier with the `--ca-cert` roots; verification is never off), offering only
//! `http/1.1` by ALPN. Request headers are those reqwest would send: the request's own, then
//! the client's defaults (`User-Agent`, `--header`, `Accept: */*`), and `Accept-Encoding:
//! gzip` unless the request names an encoding or a `Range`.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::Frame;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use url::Url;

/// Bytes asked for per `read` of a body.
pub(crate) const READ_BUF: usize = 256 * 1024;
/// A new read buffer is allocated when less than this is free in the current one.
const MIN_READ: usize = 16 * 1024;
/// Data of a chunk that starts a frame is handed on in place (no copy) when at least this much
/// of it is already read; shorter chunks are moved together.
const IN_PLACE: usize = 16 * 1024;
/// A response head larger than this is refused.
const MAX_HEAD: usize = 64 * 1024;
/// A chunk-size line or trailer line longer than this is refused.
const MAX_LINE: usize = 4096;
/// Response headers parsed at most.
const MAX_HEADERS: usize = 128;
/// Idle connections are dropped after this long (reqwest's pool keeps them 90 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per origin.
const MAX_IDLE: usize = 32;
/// Connecting (TCP and TLS) must take no longer (reqwest's `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The proxy variables reqwest reads (it honours the system proxy by default).
const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// Whether reqwest may send requests through a proxy: a proxy variable is set (`var` reads
/// the environment), or the platform has proxy settings reqwest may read (macOS, Windows).
fn proxy_configured(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    cfg!(any(target_os = "macos", windows))
        || PROXY_VARS
            .iter()
            .any(|v| var(v).is_some_and(|s| !s.is_empty()))
}

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

/// A plain or TLS connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Idle connections per origin, and the origins not to try here again.
#[derive(Default)]
struct Pool {
    idle: HashMap<Origin, Vec<(Stream, Instant)>>,
    refused: HashSet<Origin>,
    /// Connections opened, responses handed on, and requests left to reqwest (counted for
    /// tests).
    opened: u64,
    served: u64,
    fallbacks: u64,
}

type SharedPool = Arc<Mutex<Pool>>;

fn lock(pool: &SharedPool) -> std::sync::MutexGuard<'_, Pool> {
    pool.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hand-read HTTP/1.1 client for file downloads.
pub(crate) struct FastGet {
    tls: tokio_rustls::TlsConnector,
    /// Sent when the request does not set them (what reqwest adds).
    defaults: HeaderMap,
    pool: SharedPool,
}

impl std::fmt::Debug for FastGet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The default headers may hold a vendor key (`--header`): not shown.
        f.debug_struct("FastGet").finish_non_exhaustive()
    }
}

/// What [`FastGet::get`] did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The response, its body read by hand.
    Response(reqwest::Response),
    /// Not handled here: send the request through reqwest.
    Fallback,
}

impl FastGet {
    /// `None` when a proxy may be configured: reqwest's proxy rules then apply to every
    /// request.
    pub(crate) fn new(tls: &rustls::ClientConfig, defaults: HeaderMap) -> Option<Self> {
        if proxy_configured(|v| std::env::var_os(v)) {
            return None;
        }
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            defaults,
            pool: SharedPool::default(),
        })
    }

    /// Connections opened, responses served and requests left to reqwest so far (for tests:
    /// which path took a request, and reuse across files, are counted, not timed).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let p = lock(&self.pool);
        (p.opened, p.served, p.fallbacks)
    }

    /// Send `req` (a `GET`) and read its response head.
    pub(crate) async fn get(&self, req: &reqwest::Request) -> Outcome {
        let outcome = self.try_get(req).await;
        let mut pool = lock(&self.pool);
        match outcome {
            Outcome::Response(_) => pool.served += 1,
            Outcome::Fallback => pool.fallbacks += 1,
        }
        outcome
    }

    async fn try_get(&self, req: &reqwest::Request) -> Outcome {
        let url = req.url();
        let Some(origin) = origin_of(req, url) else {
            return Outcome::Fallback;
        };
        if lock(&self.pool).refused.contains(&origin) {
            return Outcome::Fallback;
        }
        let head = self.request_head(req, url);
        // A pooled connection the server has closed meanwhile gives no answer: then once more
        // on a new one (a GET may be sent again), but only when not one byte of an answer came.
        let mut idle = self.take_idle(&origin);
        loop {
            let reused = idle.is_some();
            let mut stream = match idle.take() {
                Some(s) => s,
                None => match self.connect(&origin).await {
                    Some(s) => s,
                    None => return Outcome::Fallback,
                },
            };
            match exchange(&mut stream, &head).await {
                Exchange::Head(head) => {
                    return match response(head, stream, origin, self.pool.clone()) {
                        Some(r) => Outcome::Response(r),
                        None => Outcome::Fallback,
                    };
                }
                Exchange::NoAnswer if reused => {}
                // Part of an answer, or none on a new connection: reqwest sends the request
                // again and reports what goes wrong.
                Exchange::NoAnswer | Exchange::Bad => return Outcome::Fallback,
            }
        }
    }

    fn take_idle(&self, origin: &Origin) -> Option<Stream> {
        let mut pool = lock(&self.pool);
        let list = pool.idle.get_mut(origin)?;
        while let Some((mut s, since)) = list.pop() {
            if since.elapsed() < IDLE_TIMEOUT && quiet(&mut s) {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self, origin: &Origin) -> Option<Stream> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let addrs = tokio::net::lookup_host((origin.host.as_str(), origin.port))
                .await
                .ok()?;
            for addr in addrs {
                if let Ok(s) = TcpStream::connect(addr).await {
                    return Some(s);
                }
            }
            None
        })
        .await;
        let tcp = match tcp {
            Ok(tcp) => tcp?,
            Err(_) => {
                // A connection that hangs: reqwest tries (and reports) it, and the next
                // requests to this origin do not wait for it twice.
                lock(&self.pool).refused.insert(origin.clone());
                return None;
            }
        };
        let _ = tcp.set_nodelay(true);
        lock(&self.pool).opened += 1;
        if !origin.https {
            return Some(Stream::Plain(tcp));
        }
        let name = rustls_pki_types::ServerName::try_from(origin.host.clone()).ok()?;
        match tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name, tcp)).await {
            Ok(Ok(tls)) => Some(Stream::Tls(Box::new(tls))),
            _ => {
                // Not here again: reqwest reports why (a bad certificate fails there in the
                // same way) or speaks what the server wants (HTTP/2 only).
                lock(&self.pool).refused.insert(origin.clone());
                None
            }
        }
    }

    /// The request line and headers, as reqwest would send them.
    fn request_head(&self, req: &reqwest::Request, url: &Url) -> Vec<u8> {
        let mut head = Vec::with_capacity(512);
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let _ = write!(head, "GET {target} HTTP/1.1\r\nhost: {host}\r\n");
        let own = req.headers();
        let mut put = |k: &HeaderName, v: &HeaderValue| {
            head.extend_from_slice(k.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        };
        for (k, v) in own {
            if k != reqwest::header::HOST {
                put(k, v);
            }
        }
        for (k, v) in &self.defaults {
            if !own.contains_key(k) {
                put(k, v);
            }
        }
        if !own.contains_key(reqwest::header::ACCEPT_ENCODING)
            && !own.contains_key(reqwest::header::RANGE)
        {
            put(
                &reqwest::header::ACCEPT_ENCODING,
                &HeaderValue::from_static("gzip"),
            );
        }
        head.extend_from_slice(b"\r\n");
        head
    }
}

/// An idle connection is fit for a request when it has nothing to read: a server that closed
/// it (or sent something unasked, such as a 408) makes it readable, and it is dropped.
fn quiet(stream: &mut Stream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    Pin::new(stream).poll_read(&mut cx, &mut buf).is_pending()
}

/// The origin of a request this module handles.
fn origin_of(req: &reqwest::Request, url: &Url) -> Option<Origin> {
    if req.method() != reqwest::Method::GET || !url.username().is_empty() {
        return None;
    }
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_owned(),
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => a.to_string(),
    };
    Some(Origin {
        https,
        host,
        port: url.port_or_known_default()?,
    })
}

/// A parsed response head and what follows it in the buffer.
struct Head {
    status: u16,
    version: u8,
    headers: HeaderMap,
    rest: BytesMut,
}

/// What came of sending a request.
enum Exchange {
    /// A complete final response head.
    Head(Head),
    /// Not one byte of an answer: the request could not be written, or the connection closed
    /// or failed before anything came (on a kept connection, the server had closed it).
    NoAnswer,
    /// Something came but no usable head: cut short, refused by `httparse`, or too large.
    Bad,
}

/// Write the request and read the response head.
async fn exchange(stream: &mut Stream, request: &[u8]) -> Exchange {
    if stream.write_all(request).await.is_err() || stream.flush().await.is_err() {
        return Exchange::NoAnswer;
    }
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut answered = false;
    loop {
        if buf.capacity() - buf.len() < MIN_READ {
            buf.reserve(READ_BUF);
        }
        let n = std::future::poll_fn(|cx| {
            tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut buf)
        })
        .await;
        match n {
            Ok(n) if n > 0 => {}
            _ if answered => return Exchange::Bad,
            _ => return Exchange::NoAnswer,
        }
        answered = true;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            let used = match parsed.parse(&buf) {
                Ok(httparse::Status::Complete(used)) => used,
                Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => break,
                _ => return Exchange::Bad,
            };
            let status = parsed.code.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                // An interim answer (100 Continue, 103 Early Hints): the real one follows.
                buf.advance(used);
                continue;
            }
            let mut map = HeaderMap::with_capacity(parsed.headers.len());
            for h in parsed.headers.iter() {
                let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(h.name.as_bytes()),
                    HeaderValue::from_bytes(h.value),
                ) else {
                    return Exchange::Bad;
                };
                map.append(k, v);
            }
            let version = parsed.version.unwrap_or(1);
            buf.advance(used);
            return Exchange::Head(Head {
                status,
                version,
                headers: map,
                rest: buf,
            });
        }
    }
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// `Transfer-Encoding: chunked`, in this state.
    Chunked(Chunk),
    /// Until the server closes the connection.
    Close,
    /// The body is complete.
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data remain.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty line.
    Trailers,
}

/// The response to hand on; `None` for what reqwest must handle (`101`, an unknown transfer
/// coding, a framing header that contradicts itself).
fn response(
    head: Head,
    stream: Stream,
    origin: Origin,
    pool: SharedPool,
) -> Option<reqwest::Response> {
    let Head {
        status,
        version,
        mut headers,
        rest,
    } = head;
    if status == 101 {
        return None;
    }
    let te: Vec<_> = headers
        .get_all(reqwest::header::TRANSFER_ENCODING)
        .iter()
        .collect();
    let framing = if status == 204 || status == 304 {
        Framing::Done
    } else if !te.is_empty() {
        let only_chunked = te.len() == 1
            && te[0]
                .to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !only_chunked || version == 0 {
            return None;
        }
        Framing::Chunked(Chunk::Size)
    } else {
        let mut lengths = headers
            .get_all(reqwest::header::CONTENT_LENGTH)
            .iter()
            .map(|v| content_length(v.as_bytes()));
        match lengths.next() {
            None => Framing::Close,
            Some(Some(n)) if lengths.all(|m| m == Some(n)) => {
                if n == 0 {
                    Framing::Done
                } else {
                    Framing::Length(n)
                }
            }
            Some(_) => return None,
        }
    };
    // Both `Transfer-Encoding` and `Content-Length`: the chunks frame the body (RFC 9112
    // 6.3), the length is not handed on, and the connection, whose framing is in doubt (a
    // sign of response smuggling), is not used again.
    let both = framing != Framing::Done
        && !te.is_empty()
        && headers.contains_key(reqwest::header::CONTENT_LENGTH);
    if both {
        headers.remove(reqwest::header::CONTENT_LENGTH);
    }
    let close = version == 0
        || both
        || headers
            .get_all(reqwest::header::CONNECTION)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            });
    let gzip = framing != Framing::Done
        && headers
            .get(reqwest::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip")
            });
    if gzip {
        // As reqwest does once it decodes: the length and coding are of the wire bytes.
        headers.remove(reqwest::header::CONTENT_ENCODING);
        headers.remove(reqwest::header::CONTENT_LENGTH);
    }
    let body = RawBody {
        stream: Some(stream),
        buf: rest,
        framing,
        gzip: gzip.then(Gunzip::default),
        reuse: (!close).then_some((origin, pool)),
        received: 0,
    };
    let mut builder = http::Response::builder()
        .status(status)
        .version(if version == 0 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        });
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let r = builder.body(reqwest::Body::wrap(body)).ok()?;
    Some(reqwest::Response::from(r))
}

/// A `Content-Length` value: decimal digits only (no sign, no spaces inside; `httparse` has
/// trimmed the outside), as hyper reads it; `None` when it is not one or overflows.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// gzip decoding of the de-framed body.
#[derive(Default)]
struct Gunzip {
    dec: Option<flate2::write::MultiGzDecoder<Vec<u8>>>,
}

impl Gunzip {
    fn feed(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        let dec = self
            .dec
            .get_or_insert_with(|| flate2::write::MultiGzDecoder::new(Vec::new()));
        dec.write_all(data)?;
        dec.flush()?;
        Ok(Bytes::from(std::mem::take(dec.get_mut())))
    }

    /// The end of the body: a gzip stream cut short is an error.
    fn finish(&mut self) -> std::io::Result<Bytes> {
        let Some(dec) = self.dec.as_mut() else {
            return Ok(Bytes::new());
        };
        dec.try_finish()?;
        Ok(Bytes::from(std::mem::take(dec.get_mut())))
    }
}

/// Why a body could not be read to its end.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("connection closed before the end of the body ({0} bytes received)")]
    Closed(u64),
    #[error("invalid chunked encoding: {0}")]
    Chunked(&'static str),
    #[error("error reading a body from connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("error decoding gzip: {0}")]
    Gzip(std::io::Error),
}

/// A response body read straight from the connection.
struct RawBody {
    /// `None` once the body is complete (the connection went back to the pool or was closed).
    stream: Option<Stream>,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    framing: Framing,
    gzip: Option<Gunzip>,
    /// Where the connection goes when the body is complete and the server keeps it open.
    reuse: Option<(Origin, SharedPool)>,
    /// Wire bytes of the body received (for the error of a cut-off body).
    received: u64,
}

impl RawBody {
    /// Hand on what the buffer holds of the body (possibly nothing) and advance the framing.
    fn take(&mut self) -> Result<Bytes, BodyError> {
        match self.framing {
            Framing::Done => Ok(Bytes::new()),
            Framing::Close => Ok(self.buf.split().freeze()),
            Framing::Length(rem) => {
                let n = rem.min(self.buf.len() as u64);
                self.framing = if n == rem {
                    Framing::Done
                } else {
                    Framing::Length(rem - n)
                };
                Ok(self.buf.split_to(n as usize).freeze())
            }
            Framing::Chunked(state) => self.dechunk(state),
        }
    }

    /// De-frame the chunks in the buffer: data moved together at the front (`memmove`), or,
    /// when a frame starts with a long run of one chunk's data, handed on in place.
    fn dechunk(&mut self, mut state: Chunk) -> Result<Bytes, BodyError> {
        // Data bytes gathered at the buffer's front, and where reading is.
        let (mut w, mut r) = (0usize, 0usize);
        let out = loop {
            let len = self.buf.len();
            match state {
                Chunk::Size => {
                    if w >= IN_PLACE {
                        break Framing::Chunked(state);
                    }
                    // `httparse` reads a line without a digit (empty, blanks, only an
                    // extension) as size 0, the last chunk: the body would end early, silently.
                    match self.buf.get(r) {
                        None => break Framing::Chunked(state),
                        Some(b) if !b.is_ascii_hexdigit() => {
                            return Err(BodyError::Chunked("no chunk size"));
                        }
                        Some(_) => {}
                    }
                    match httparse::parse_chunk_size(&self.buf[r..]) {
                        Ok(httparse::Status::Complete((used, _))) if used > MAX_LINE => {
                            // Refused whether it came in one read or several.
                            return Err(BodyError::Chunked("chunk size line too long"));
                        }
                        Ok(httparse::Status::Complete((used, size))) => {
                            r += used;
                            state = if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if len - r <= MAX_LINE => {
                            break Framing::Chunked(state);
                        }
                        _ => return Err(BodyError::Chunked("bad chunk size line")),
                    }
                }
                Chunk::Data(rem) => {
                    if w == 0 && r > 0 {
                        // Nothing gathered yet: drop what was read so far, so this data
                        // starts the frame where it lies.
                        self.buf.advance(r);
                        r = 0;
                        continue;
                    }
                    let avail = (len - r) as u64;
                    if avail == 0 {
                        break Framing::Chunked(state);
                    }
                    let k = rem.min(avail) as usize;
                    if w != r {
                        self.buf.copy_within(r..r + k, w);
                    }
                    w += k;
                    r += k;
                    state = if k as u64 == rem {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rem - k as u64)
                    };
                }
                Chunk::DataEnd => {
                    if len - r < 2 {
                        break Framing::Chunked(state);
                    }
                    if &self.buf[r..r + 2] != b"\r\n" {
                        return Err(BodyError::Chunked("no CRLF after chunk data"));
                    }
                    r += 2;
                    state = Chunk::Size;
                }
                Chunk::Trailers => {
                    let Some(nl) = memchr::memmem::find(&self.buf[r..], b"\r\n") else {
                        // `MAX_LINE` bytes and a CR may still end in time.
                        if len - r > MAX_LINE + 1 {
                            return Err(BodyError::Chunked("trailer line too long"));
                        }
                        break Framing::Chunked(state);
                    };
                    if nl > MAX_LINE {
                        return Err(BodyError::Chunked("trailer line too long"));
                    }
                    r += nl + 2;
                    if nl == 0 {
                        break Framing::Done;
                    }
                }
            }
        };
        self.framing = out;
        let data = self.buf.split_to(w).freeze();
        self.buf.advance(r - w);
        Ok(data)
    }

    /// The body is complete: the connection goes back to the pool if nothing else came with it.
    fn complete(&mut self) {
        let stream = self.stream.take();
        if let (Some(stream), Some((origin, pool))) = (stream, self.reuse.take())
            && self.buf.is_empty()
        {
            let mut pool = lock(&pool);
            let list = pool.idle.entry(origin).or_default();
            if list.len() < MAX_IDLE {
                list.push((stream, Instant::now()));
            }
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            if self.stream.is_none() {
                return Poll::Ready(None);
            }
            let before = self.buf.len();
            let data = self.take()?;
            self.received += (before - self.buf.len()) as u64;
            let data = match &mut self.gzip {
                Some(g) if !data.is_empty() => g.feed(&data).map_err(BodyError::Gzip)?,
                _ => data,
            };
            if self.framing == Framing::Done {
                let tail = match &mut self.gzip {
                    Some(g) => g.finish().map_err(BodyError::Gzip)?,
                    None => Bytes::new(),
                };
                self.complete();
                let data = if tail.is_empty() {
                    data
                } else if data.is_empty() {
                    tail
                } else {
                    let mut both = BytesMut::from(&data[..]);
                    both.extend_from_slice(&tail);
                    both.freeze()
                };
                return Poll::Ready((!data.is_empty()).then_some(Ok(data)));
            }
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(data)));
            }
            if self.buf.capacity() - self.buf.len() < MIN_READ {
                self.buf.reserve(READ_BUF);
            }
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Ready(None);
            };
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(stream),
                cx,
                &mut self.buf
            ))?;
            if n == 0 {
                if self.framing == Framing::Close {
                    self.framing = Framing::Done;
                    self.reuse = None;
                    continue;
                }
                self.stream = None;
                return Poll::Ready(Some(Err(BodyError::Closed(self.received))));
            }
        }
    }
}

/// The chunked de-framer on a whole input fed in reads of the sizes in `steps` (cycled; 0
/// counts as 1, none as reads of [`READ_BUF`]): the body and the input bytes its framing took, `None` when the input ends
/// before the body does (an error at a connection's end), or the error. For the fuzz target
/// ([`crate::fuzzing::dechunk`]) and the tests.
pub(crate) fn dechunk_whole(
    wire: &[u8],
    steps: &[usize],
) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = RawBody {
        stream: None,
        buf: BytesMut::new(),
        framing: Framing::Chunked(Chunk::Size),
        gzip: None,
        reuse: None,
        received: 0,
    };
    let mut out = Vec::new();
    let mut fed = 0;
    let whole = [READ_BUF];
    let mut steps = if steps.is_empty() { &whole[..] } else { steps }
        .iter()
        .cycle();
    while fed < wire.len() {
        let n = steps
            .next()
            .copied()
            .unwrap_or(1)
            .clamp(1, wire.len() - fed);
        body.buf.extend_from_slice(&wire[fed..fed + n]);
        fed += n;
        // As `poll_data`: take until nothing more comes without a read.
        loop {
            match body.take() {
                Ok(d) if d.is_empty() => break,
                Ok(d) => out.extend_from_slice(&d),
                Err(e) => return Err(e.to_string()),
            }
        }
        if body.framing == Framing::Done {
            return Ok(Some((out, fed - body.buf.len())));
        }
    }
    Ok(None)
}

impl http_body::Body for RawBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let r = ready!(this.poll_data(cx));
        if let Some(Err(_)) = &r {
            // The connection is in an unknown state: never reused.
            this.stream = None;
        }
        Poll::Ready(r.map(|d| d.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// De-frame `wire` fed in pieces of `step` bytes (as reads would return it); the body
    /// must end exactly at the end of `wire`.
    fn dechunk_in_steps(wire: &[u8], step: usize) -> Result<Vec<u8>, String> {
        let (body, used) = dechunk_whole(wire, &[step])?.expect("the body ends in the input");
        assert_eq!(used, wire.len(), "step {step}");
        Ok(body)
    }

    fn chunked(parts: &[&[u8]]) -> Vec<u8> {
        let mut wire = Vec::new();
        for p in parts {
            wire.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            wire.extend_from_slice(p);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        wire
    }

    /// Every split of the wire bytes gives the same data: short chunks moved together, long
    /// ones handed on in place, chunk extensions and trailers skipped.
    #[test]
    fn chunks_are_deframed_whatever_the_reads() {
        let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let parts: Vec<&[u8]> = vec![b"{\"a\":1}\n", &big, b"x", b"{\"b\":2}\n", &big[..17_000]];
        let mut wire = chunked(&parts);
        // A chunk extension on the first size line.
        wire.splice(1..1, b";name=value".iter().copied());
        let want: Vec<u8> = parts.concat();
        for step in [1, 2, 3, 7, 100, 4096, 16_385, 70_000, wire.len()] {
            assert_eq!(dechunk_in_steps(&wire, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn any_proxy_variable_leaves_every_request_to_reqwest() {
        if cfg!(any(target_os = "macos", windows)) {
            assert!(proxy_configured(|_| None));
            return;
        }
        assert!(!proxy_configured(|_| None));
        assert!(!proxy_configured(|v| (v == "NO_PROXY").then(|| "x".into())));
        for name in PROXY_VARS {
            assert!(
                proxy_configured(|v| (v == name).then(|| "http://p:3128".into())),
                "{name}"
            );
            assert!(
                !proxy_configured(|v| (v == name).then(|| "".into())),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        assert!(dechunk_in_steps(b"zz\r\nab\r\n0\r\n\r\n", 100).is_err());
        assert!(dechunk_in_steps(b"2\r\nabXX0\r\n\r\n", 100).is_err());
    }

    /// A chunk-size line without a digit is not the last chunk: `httparse` reads an empty
    /// line, blanks or a bare extension as size 0, and the body would end there, the rest
    /// taken for trailers — a short file without an error.
    #[test]
    fn a_size_line_without_digits_is_an_error_not_the_end() {
        for wire in [
            &b"3\r\nabc\r\n\r\n3\r\ndef\r\n0\r\n\r\n"[..],
            b"3\r\nabc\r\n \r\n3\r\ndef\r\n0\r\n\r\n",
            b"3\r\nabc\r\n;x\r\n3\r\ndef\r\n0\r\n\r\n",
            b"\r\n",
        ] {
            for step in [1, 3, wire.len()] {
                assert!(
                    matches!(run(wire, &[step]), Deframed::Bad),
                    "{:?} step {step}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
    }

    /// Overflow, a missing CRLF after data, and the end of input anywhere before the final
    /// empty line are errors or incomplete (an error at the connection's end), never a body.
    #[test]
    fn every_damaged_frame_is_refused() {
        // The largest size is read, then waited for.
        let huge = b"ffffffffffffffff\r\nab";
        assert_eq!(run(huge, &[1]), Deframed::Incomplete);
        assert_eq!(reference(huge), Deframed::Incomplete);
        let bad: [&[u8]; 5] = [
            b"11111111111111111\r\nab\r\n0\r\n\r\n",
            b"2\r\nab0\r\n\r\n",
            b"2\r\nab\n0\r\n\r\n",
            b"-2\r\nab\r\n0\r\n\r\n",
            b"2 3\r\nab\r\n0\r\n\r\n",
        ];
        for wire in bad {
            assert!(matches!(run(wire, &[1]), Deframed::Bad), "{wire:?}");
        }
        let whole = b"2;ext=\"v\"\r\nab\r\n0\r\nt: 1\r\n\r\n";
        assert_eq!(
            run(whole, &[1]),
            Deframed::Done(b"ab".to_vec(), whole.len())
        );
        for cut in 0..whole.len() {
            assert_eq!(
                run(&whole[..cut], &[1, 2]),
                Deframed::Incomplete,
                "cut {cut}"
            );
        }
    }

    /// A size line or trailer line over [`MAX_LINE`] is refused however the reads split it
    /// (it was taken when it came in one read).
    #[test]
    fn an_overlong_line_is_refused_whatever_the_reads() {
        let ext = "x".repeat(MAX_LINE + 10);
        let size_line = format!("2;{ext}\r\nab\r\n0\r\n\r\n");
        let trailer = format!("2\r\nab\r\n0\r\nt: {ext}\r\n\r\n");
        for wire in [size_line, trailer] {
            for step in [7, 1000, wire.len()] {
                assert_eq!(run(wire.as_bytes(), &[step]), Deframed::Bad, "step {step}");
            }
        }
        // At the limit: taken, also when the CR comes in one read and the LF in the next.
        let fill = "x".repeat(MAX_LINE - 3);
        let trailer = format!("2\r\nab\r\n0\r\nt: {fill}\r\n\r\n");
        let cr = trailer.len() - 3;
        for steps in [&[trailer.len()][..], &[cr, 1]] {
            assert_eq!(
                run(trailer.as_bytes(), steps),
                Deframed::Done(b"ab".to_vec(), trailer.len()),
                "{steps:?}"
            );
        }
    }

    /// The outcome of de-framing a whole input.
    #[derive(Debug, PartialEq, Eq)]
    enum Deframed {
        /// The body, and the input bytes its framing took (the rest is left unread).
        Done(Vec<u8>, usize),
        /// The input ended before the body's end (an error at a connection's end).
        Incomplete,
        Bad,
    }

    /// [`RawBody`]'s de-framer fed `wire` in reads of the sizes in `steps`.
    fn run(wire: &[u8], steps: &[usize]) -> Deframed {
        match dechunk_whole(wire, steps) {
            Ok(Some((body, used))) => Deframed::Done(body, used),
            Ok(None) => Deframed::Incomplete,
            Err(_) => Deframed::Bad,
        }
    }

    /// The chunked grammar read plainly ([`crate::fuzzing::reference_dechunk`]).
    fn reference(w: &[u8]) -> Deframed {
        match crate::fuzzing::reference_dechunk(w) {
            Ok(Some((body, used))) => Deframed::Done(body, used),
            Ok(None) => Deframed::Incomplete,
            Err(_) => Deframed::Bad,
        }
    }

    /// `parts` (empty ones skipped: a 0 would end the body) chunked with the size in upper or
    /// lower case, leading zeros, extensions, then trailers.
    fn encode(parts: &[Vec<u8>], style: &[u8], trailers: &[String]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut style = style.iter().copied().cycle();
        for p in parts.iter().filter(|p| !p.is_empty()) {
            let s = style.next().unwrap_or(0);
            let size = if s & 1 == 0 {
                format!("{:x}", p.len())
            } else {
                format!("{:X}", p.len())
            };
            let zeros = if s & 2 == 0 { "" } else { "00" };
            let ext = if s & 4 == 0 { "" } else { " ;a=\"b;c\"" };
            wire.extend_from_slice(format!("{zeros}{size}{ext}\r\n").as_bytes());
            wire.extend_from_slice(p);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        for t in trailers {
            wire.extend_from_slice(format!("x-{t}: {t}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        fn parts(max: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..max), 0..8)
        }

        proptest! {
            /// Any chunking of any body, read in any splits, de-frames to the body.
            #[test]
            fn random_chunkings_deframe_to_the_body(
                parts in parts(300),
                style in prop::collection::vec(any::<u8>(), 1..8),
                trailers in prop::collection::vec("[a-z]{1,8}", 0..3),
                steps in prop::collection::vec(1usize..64, 1..16),
            ) {
                let wire = encode(&parts, &style, &trailers);
                prop_assert_eq!(reference(&wire), Deframed::Done(parts.concat(), wire.len()));
                prop_assert_eq!(run(&wire, &steps), Deframed::Done(parts.concat(), wire.len()));
            }

            /// Long chunks (handed on in place) among short ones, in large reads.
            #[test]
            fn long_chunks_deframe_to_the_body(
                parts in parts(40_000),
                style in prop::collection::vec(any::<u8>(), 1..8),
                steps in prop::collection::vec(1usize..70_000, 1..8),
            ) {
                let wire = encode(&parts, &style, &[]);
                prop_assert_eq!(run(&wire, &steps), Deframed::Done(parts.concat(), wire.len()));
            }

            /// A damaged wire (bytes changed, put in, a run of them taken out, or the input cut) de-frames
            /// exactly as the plain reading of the grammar: the same body, an error, or
            /// incomplete — never another body.
            #[test]
            fn damaged_wire_deframes_as_the_reference(
                parts in parts(200),
                style in prop::collection::vec(any::<u8>(), 1..8),
                trailers in prop::collection::vec("[a-z]{1,8}", 0..3),
                edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..4),
                steps in prop::collection::vec(1usize..64, 1..16),
            ) {
                let mut wire = encode(&parts, &style, &trailers);
                // Framing bytes are the likelier targets: pick among `\r\n;0-9a-f` often.
                const NEAR: &[u8] = b"\r\n;0123456789abcdefABCDEF \t";
                for (at, kind, byte) in edits {
                    let i = at.index(wire.len() + 1);
                    let b = if byte < 200 { NEAR[usize::from(byte) % NEAR.len()] } else { byte };
                    match kind {
                        0 if i < wire.len() => wire[i] = b,
                        1 => wire.insert(i, b),
                        2 => { wire.drain(i..(i + usize::from(byte % 6) + 1).min(wire.len())); }
                        3 => wire.truncate(i),
                        _ => {}
                    }
                }
                prop_assert_eq!(run(&wire, &steps), reference(&wire));
            }
        }
    }
}
