//! One client connection to an `http://` or `https://` endpoint, with
//! hyper's connection-level client: HTTP/1.1 (one request at a time, kept
//! alive) or HTTP/2 (prior knowledge on plain TCP, ALPN `h2` with TLS).
//! The connection is made on first use and again after it breaks; a
//! request that found the old connection dead before it was sent is sent
//! once more on a new one.
use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use http_body_util::Full;
use hyper::{
    Request, Response, Uri,
    body::{Bytes, Incoming},
    client::conn::{http1, http2},
    header::{HOST, HeaderValue},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject as _},
    },
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/1.1 or HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// Plain TCP or TLS, behind one type so that hyper's and h2's generic
/// code is compiled once.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
type Io = TokioIo<Box<dyn Stream>>;

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// Where to connect, checked.
pub struct Connection {
    version: Version,
    host: String,
    port: u16,
    /// `scheme://authority`, for HTTP/2's pseudo-headers.
    origin: String,
    /// The URL's path, without a trailing `/`, put before each request's.
    prefix: String,
    host_header: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    sender: std::sync::Mutex<Option<Sender>>,
}

impl Connection {
    /// `url` is `http://host[:port][/path]` or `https://...`; `ca_pem`
    /// adds roots (PEM) to the host's for https.
    pub fn new(url: &str, version: Version, ca_pem: Option<&[u8]>) -> Result<Connection> {
        let uri: Uri = url.parse().with_context(|| format!("URL {url}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("{url}: not an http:// or https:// URL"),
        };
        let authority = uri.authority().with_context(|| format!("{url}: no host"))?.clone();
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.clone()).with_context(|| format!("{url}: host name"))?;
            let alpn = match version {
                Version::Http1 => b"http/1.1".to_vec(),
                Version::Http2 => b"h2".to_vec(),
            };
            Some((TlsConnector::from(Arc::new(tls_config(ca_pem, alpn)?)), name))
        } else {
            None
        };
        Ok(Connection {
            version,
            origin: format!("{}://{authority}", if https { "https" } else { "http" }),
            prefix: uri.path().trim_end_matches('/').to_string(),
            host_header: HeaderValue::from_str(authority.as_str()).context("host")?,
            host,
            port,
            tls,
            sender: std::sync::Mutex::new(None),
        })
    }

    /// Sends `request` (its URI a path, e.g. `/v1/logs`, put after the
    /// URL's own path) and returns the answer's head; its body is read by
    /// the caller.
    pub async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
        let path = format!("{}{}", self.prefix, request.uri().path());
        *request.uri_mut() = match self.version {
            Version::Http1 => path.parse()?,
            Version::Http2 => format!("{}{path}", self.origin).parse()?,
        };
        if self.version == Version::Http1 {
            request.headers_mut().insert(HOST, self.host_header.clone());
        }
        let reused = self.take_sender();
        let fresh = reused.is_none();
        let mut sender = match reused {
            Some(s) => s,
            None => self.connect().await?,
        };
        let again = request.clone();
        match send_on(&mut sender, request).await {
            Ok(r) => {
                self.put_sender(sender);
                Ok(r)
            }
            // A kept connection the peer closed: once more, on a new one.
            Err(e) if !fresh && e.is_canceled_or_closed() => {
                let mut sender = self.connect().await?;
                let r = send_on(&mut sender, again).await.map_err(|e| e.0)?;
                self.put_sender(sender);
                Ok(r)
            }
            Err(e) => Err(e.0),
        }
    }

    /// Drops the connection (after a timeout, its state is unknown).
    pub fn reset(&self) {
        self.take_sender();
    }

    fn take_sender(&self) -> Option<Sender> {
        let s = self.sender.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        s.filter(|s| match s {
            Sender::Http1(s) => !s.is_closed(),
            Sender::Http2(s) => !s.is_closed(),
        })
    }

    fn put_sender(&self, sender: Sender) {
        *self.sender.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender);
    }

    async fn connect(&self) -> Result<Sender> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {addr}: no answer within {} s", CONNECT_TIMEOUT.as_secs()))?
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &self.tls {
            Some((connector, name)) => {
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| anyhow::anyhow!("TLS with {addr}: no answer within {} s", CONNECT_TIMEOUT.as_secs()))?
                    .with_context(|| format!("TLS with {addr}"))?;
                if self.version == Version::Http2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    bail!("TLS with {addr}: the server did not agree to HTTP/2 (ALPN h2)");
                }
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        let io: Io = TokioIo::new(stream);
        Ok(match self.version {
            Version::Http1 => {
                let (sender, conn) = http1::handshake(io).await.with_context(|| format!("HTTP/1.1 with {addr}"))?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        log::debug!("export connection: {e}");
                    }
                });
                Sender::Http1(sender)
            }
            Version::Http2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.with_context(|| format!("HTTP/2 with {addr}"))?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        log::debug!("export connection: {e}");
                    }
                });
                Sender::Http2(sender)
            }
        })
    }
}

/// A failed send, and whether it failed because the kept connection was
/// gone (nothing was sent).
struct SendError(anyhow::Error, bool);

impl SendError {
    fn is_canceled_or_closed(&self) -> bool {
        self.1
    }
}

async fn send_on(sender: &mut Sender, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, SendError> {
    let closed = |e: hyper::Error| {
        let gone = e.is_canceled() || e.is_closed();
        SendError(anyhow::Error::new(e), gone)
    };
    match sender {
        Sender::Http1(s) => {
            s.ready().await.map_err(closed)?;
            s.send_request(request).await.map_err(closed)
        }
        Sender::Http2(s) => {
            s.ready().await.map_err(closed)?;
            s.send_request(request).await.map_err(closed)
        }
    }
}

/// The host's roots (none in a `FROM scratch` image) and the CA file's.
fn tls_config(ca_pem: Option<&[u8]>, alpn: Vec<u8>) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (host_roots, _) = roots.add_parsable_certificates(native.certs);
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.add(cert.context("CA file")?).context("CA file")?;
            added += 1;
        }
        if added == 0 {
            bail!("the CA file holds no PEM certificate");
        }
    }
    if roots.is_empty() {
        bail!("https, but the host has no root certificates ({host_roots} found) and no CA file was given");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = Connection::new("http://127.0.0.1:4318/otlp/", Version::Http1, None).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.prefix.as_str(), c.origin.as_str()), ("127.0.0.1", 4318, "/otlp", "http://127.0.0.1:4318"));
        let c = Connection::new("http://[::1]", Version::Http2, None).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.prefix.as_str()), ("::1", 80, ""));
        assert!(Connection::new("ftp://h", Version::Http1, None).is_err());
        assert!(Connection::new("h:4317", Version::Http1, None).is_err());
        assert!(Connection::new("https://h", Version::Http2, Some(b"no certificate here")).is_err());
    }
}
