//! The HTTP client for Orceum's "Push an Event" API.
//!
//! One pooled keep-alive `reqwest` client (rustls) for the whole process. A request is built
//! from the event body once; every attempt re-stamps `X-Timestamp` and re-signs the same bytes.
//! [`PreparedRequest`] is what both `run` sends and `render` prints, so they cannot disagree.

use super::answer::Answer;
use super::sign::{send_timestamp, signature_header};
use crate::orceum::app::App;
use crate::sync::{read, write};
use std::time::Duration;

/// How much of an error response is kept for logs and dead letters.
const EXCERPT_BYTES: usize = 512;

/// The most of any answer body that is read: enough for a 200's `event_id`, `status` and
/// `action_taken` and for an error excerpt. Past it the response is dropped (and with it the
/// connection), so a huge or endless body costs neither memory nor time.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// One request, ready to send: method POST, these headers, these body bytes.
/// `Debug` shows the headers redacted.
#[derive(Clone)]
pub struct PreparedRequest {
    pub url: String,
    /// Header name and value; the secret header's value is the real secret.
    pub headers: Vec<(&'static str, String)>,
    pub body: bytes::Bytes,
}

impl std::fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("url", &self.url)
            .field("headers", &self.redacted_headers())
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

pub const SECRET_HEADER: &str = "X-Orceum-Webhook-Secret";

impl PreparedRequest {
    /// The headers with the webhook secret replaced by `whs_…[REDACTED]`, for display.
    pub fn redacted_headers(&self) -> Vec<(&'static str, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                if *k == SECRET_HEADER {
                    (*k, "whs_…[REDACTED]".to_string())
                } else {
                    (*k, v.clone())
                }
            })
            .collect()
    }
}

/// Builds the URL, headers and signature for `body`, stamped now. `Bytes`: a retry re-signs
/// the same buffer without copying it.
pub fn prepare(base_url: &str, app: &App, body: impl Into<bytes::Bytes>) -> PreparedRequest {
    let body = body.into();
    let url = format!(
        "{}/apps/{}/events",
        base_url.trim_end_matches('/'),
        app.app_id
    );
    let (secret, signature) = app
        .secret
        .with_exposed(|s| (s.to_string(), signature_header(s.as_bytes(), &body)));
    PreparedRequest {
        url,
        headers: vec![
            ("Content-Type", "application/json".into()),
            (SECRET_HEADER, secret),
            ("X-Hub-Signature-256", signature),
            ("X-Timestamp", send_timestamp()),
        ],
        body,
    }
}

/// What Orceum answered.
#[derive(Debug, Clone)]
pub struct PushResponse {
    pub status: u16,
    /// `Retry-After`, in seconds or as an HTTP date.
    pub retry_after: Option<Duration>,
    /// The start of the response body, for logs and dead letters (error answers only).
    pub excerpt: String,
    /// 2xx: what Orceum said it did (`action_taken`, `status`, `event_id`), read from the
    /// first [`MAX_ANSWER_BYTES`]; `None` for any other status.
    pub answer: Option<Answer>,
    /// 3xx: the host the answer pointed at (never followed; see [`OrceumClient::with_ca`]).
    pub redirect_host: Option<String>,
}

/// Why no response came back. Never carries the secret (reqwest errors name the URL only).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push to {url} timed out")]
    Timeout { url: String },
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("push to {url} failed: {reason}")]
    Other { url: String, reason: String },
}

impl PushError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PushError::Timeout { .. } => "timeout",
            PushError::Connect { .. } => "connect",
            PushError::Other { .. } => "transport",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientBuildError(String);

/// The pooled client.
#[derive(Clone)]
pub struct OrceumClient {
    http: reqwest::Client,
    base_url: String,
    /// Each app's push URL, parsed once (parsing it per request showed in the drain profile).
    /// One entry per app of the config.
    urls: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, reqwest::Url>>>,
}

impl OrceumClient {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, ClientBuildError> {
        Self::with_ca(base_url, timeout, None)
    }

    /// A client trusting the system's roots plus the CA certificates in `ca_file` (PEM).
    pub fn with_ca(
        base_url: &str,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, ClientBuildError> {
        Self::build(base_url, timeout, ca_file, false, None)
    }

    /// [`OrceumClient::with_ca`]; with `http2_prior_knowledge`, HTTP/2 from the first byte
    /// (h2c): every request of an app shares one multiplexed connection instead of one
    /// connection per request in flight (measured in docs/performance.md).
    pub fn build(
        base_url: &str,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
        http2_prior_knowledge: bool,
        proxy: Option<&super::proxy::Proxy>,
    ) -> Result<Self, ClientBuildError> {
        let mut builder = reqwest::Client::builder();
        if http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| ClientBuildError(format!("ca_file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientBuildError(format!("ca_file {}: {e}", path.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        // The request carries the webhook secret: it goes to `base_url` and nowhere else. A
        // redirect is never followed (reqwest would replay the secret header to any host, and
        // turn a 301/302/303 into a body-less GET whose 200 would count as delivered), and no
        // proxy from the environment is used silently: only the one `orceum.proxy` names.
        builder = builder.no_proxy();
        if let Some(p) = proxy {
            builder = builder.proxy(p.to_reqwest().map_err(ClientBuildError)?);
        }
        let http = builder
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .user_agent(concat!("orceum-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            urls: Default::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn parsed(&self, url: &str) -> Result<reqwest::Url, PushError> {
        let cached = read(&self.urls).get(url).cloned();
        if let Some(u) = cached {
            return Ok(u);
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| PushError::Other {
            url: url.to_string(),
            reason: format!("invalid URL: {e}; check orceum.base_url"),
        })?;
        write(&self.urls).insert(url.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// Signs `body` for `app` with a fresh timestamp and sends it once.
    pub async fn push(&self, app: &App, body: bytes::Bytes) -> Result<PushResponse, PushError> {
        self.push_with(app, body, &[]).await
    }

    /// [`push`](Self::push) with extra headers (the message's trace context); values are
    /// visible ASCII, checked by whoever gives them.
    pub async fn push_with(
        &self,
        app: &App,
        body: bytes::Bytes,
        extra: &[(&'static str, String)],
    ) -> Result<PushResponse, PushError> {
        let mut req = prepare(&self.base_url, app, body);
        let mut builder = self.http.post(self.parsed(&req.url)?);
        for (k, v) in req.headers.iter_mut() {
            if *k == SECRET_HEADER {
                // Marked sensitive (never printed by the HTTP stack's Debug, kept out of
                // HPACK tables), and this copy of the secret wiped once it is in the request.
                let value = reqwest::header::HeaderValue::from_str(v).map(|mut h| {
                    h.set_sensitive(true);
                    h
                });
                secrecy::zeroize::Zeroize::zeroize(v);
                match value {
                    Ok(h) => builder = builder.header(*k, h),
                    // `orceum::app` admits only header-safe secrets.
                    Err(_) => {
                        return Err(PushError::Other {
                            url: req.url.clone(),
                            reason: "the app secret cannot go into an HTTP header".into(),
                        })
                    }
                }
            } else {
                builder = builder.header(*k, v.as_str());
            }
        }
        for (k, v) in extra {
            builder = builder.header(*k, v.as_str());
        }
        let url = req.url.clone();
        let resp = builder
            .body(req.body)
            .send()
            .await
            .map_err(|e| classify(&url, &e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let redirect_host = (300..400).contains(&status).then(|| {
            resp.headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| reqwest::Url::parse(l).ok())
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "(no absolute Location)".to_string())
        });
        let head = read_bounded(resp, MAX_ANSWER_BYTES).await;
        let delivered = (200..300).contains(&status);
        let answer = delivered.then(|| Answer::parse(&head));
        let excerpt = if delivered {
            String::new()
        } else {
            // Scrubbed whole, then cut: a secret across the cut is still caught.
            let text = String::from_utf8_lossy(&head);
            let clean = super::scrub::scrub_secrets(&text);
            let mut end = clean.len().min(EXCERPT_BYTES);
            while !clean.is_char_boundary(end) {
                end -= 1;
            }
            clean[..end].to_string()
        };
        Ok(PushResponse {
            status,
            retry_after,
            excerpt,
            answer,
            redirect_host,
        })
    }
}

/// Reads at most `limit` bytes of a response body, then drops the response: the rest of a
/// longer body is never read (the connection closes instead of going back to the pool).
/// A body that fails midway yields what arrived.
pub(crate) async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut head = Vec::new();
    while head.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - head.len();
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    head
}

fn classify(url: &str, e: &reqwest::Error) -> PushError {
    let url = url.to_string();
    // The error's own text may hold the URL, never headers; strip the URL to keep it short.
    let reason = e.without_url_ref_string();
    if e.is_timeout() {
        PushError::Timeout { url }
    } else if e.is_connect() {
        PushError::Connect { url, reason }
    } else {
        PushError::Other { url, reason }
    }
}

trait WithoutUrl {
    fn without_url_ref_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref_string(&self) -> String {
        let mut s = self.to_string();
        if let Some(u) = self.url() {
            s = s.replace(u.as_str(), "");
        }
        let mut src = std::error::Error::source(self);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    }
}

/// `Retry-After` is either delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orceum::app::AppSecret;

    #[test]
    fn prepared_request_has_the_exact_header_set_and_signs_the_body() {
        let app = App {
            name: "tasks".into(),
            app_id: "app_123".into(),
            secret: AppSecret::fixed("whs_test"),
        };
        let req = prepare("https://api.orceum.com/v1/", &app, b"{\"a\":1}".to_vec());
        assert_eq!(req.url, "https://api.orceum.com/v1/apps/app_123/events");
        let names: Vec<_> = req.headers.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "Content-Type",
                "X-Orceum-Webhook-Secret",
                "X-Hub-Signature-256",
                "X-Timestamp"
            ]
        );
        assert_eq!(
            req.headers[2].1,
            signature_header(b"whs_test", b"{\"a\":1}")
        );
        let shown = format!("{:?}", req.redacted_headers());
        assert!(!shown.contains("whs_test"), "{shown}");
    }

    /// A one-connection-at-a-time HTTP/1.1 server on loopback that answers every request
    /// with `answer` (raw bytes, then `tail` repeated until the peer goes away) and counts
    /// the requests it saw.
    async fn raw_server(
        answer: &'static str,
        tail: Option<&'static [u8]>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if sock.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if let Some(tail) = tail {
                        // An endless body: stops only when the client hangs up.
                        while sock.write_all(tail).await.is_ok() {}
                    }
                });
            }
        });
        (format!("http://{addr}/v1"), seen)
    }

    /// One push of `{}` to `base` with a 30 s timeout: the answer and how long it took.
    async fn push_once(base: &str) -> (PushResponse, Duration) {
        let client = OrceumClient::new(base, Duration::from_secs(30)).unwrap();
        let started = std::time::Instant::now();
        let resp = client
            .push(&test_app(), bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        (resp, started.elapsed())
    }

    fn test_app() -> App {
        App {
            name: "tasks".into(),
            app_id: "app_123".into(),
            secret: AppSecret::fixed("whs_test"),
        }
    }

    #[tokio::test]
    async fn a_redirect_is_never_followed_and_names_its_host() {
        let (target, target_seen) =
            raw_server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", None).await;
        // The redirect points at a live server that would answer 200: it must see nothing.
        let location: &'static str = Box::leak(
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {target}/apps/app_123/events\r\ncontent-length: 0\r\n\r\n"
            )
            .into_boxed_str(),
        );
        for answer in [
            location,
            Box::leak(
                location
                    .replace("307 Temporary Redirect", "302 Found")
                    .into_boxed_str(),
            ),
        ] {
            let (base, seen) = raw_server(answer, None).await;
            let (resp, _) = push_once(&base).await;
            assert!((300..400).contains(&resp.status), "{}", resp.status);
            assert_eq!(resp.redirect_host.as_deref(), Some("127.0.0.1"));
            assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
        assert_eq!(target_seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_endless_answer_body_is_read_only_up_to_the_bound() {
        // Valid 4 KiB chunks, forever: without the bound the client reads until its timeout.
        let chunk: &'static [u8] = Box::leak(
            [b"1000\r\n".as_slice(), &[b'x'; 4096], b"\r\n"]
                .concat()
                .into_boxed_slice(),
        );
        let (base, _) = raw_server(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            Some(chunk),
        )
        .await;
        let (resp, took) = push_once(&base).await;
        assert_eq!(resp.status, 200);
        assert!(took < Duration::from_secs(20), "{took:?}");
    }

    #[tokio::test]
    async fn a_2xx_answer_is_read_and_any_other_carries_none() {
        use crate::orceum::answer::{Action, Status};
        let (base, _) = raw_server(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 75\r\n\r\n{\"event_id\":\"evt_abc123\",\"status\":\"IGNORED\",\"action_taken\":\"IGNORED\"}      ",
            None,
        )
        .await;
        let (resp, _) = push_once(&base).await;
        let answer = resp.answer.expect("a 200 carries its answer");
        assert_eq!(answer.action, Action::Ignored);
        assert_eq!(answer.status, Some(Status::Ignored));
        assert_eq!(answer.event_id.as_deref(), Some("evt_abc123"));
        assert!(resp.excerpt.is_empty());

        // Delivered all the same; nothing known of what Orceum did.
        let (base, _) =
            raw_server("HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nOK", None).await;
        let (resp, _) = push_once(&base).await;
        assert_eq!(resp.answer.map(|a| a.action), Some(Action::Unknown));

        let (base, _) = raw_server(
            "HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: 25\r\n\r\n{\"action_taken\":\"QUEUED\"}",
            None,
        )
        .await;
        let (resp, _) = push_once(&base).await;
        assert_eq!(resp.answer, None);
    }

    #[tokio::test]
    async fn an_error_body_is_cut_to_the_excerpt() {
        let (base, _) = raw_server(
            "HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: 100000000000\r\n\r\n",
            Some(&[b'x'; 8192]),
        )
        .await;
        // A 100 GB error body: read whole, it would take the 30 s timeout (and the memory).
        let (resp, took) = push_once(&base).await;
        assert_eq!(resp.status, 422);
        assert_eq!(resp.excerpt.len(), EXCERPT_BYTES);
        assert!(took < Duration::from_secs(20), "{took:?}");
    }

    #[tokio::test]
    async fn an_answer_that_echoes_the_secret_header_is_scrubbed_in_the_excerpt() {
        // A proxy that echoes request headers in its error page.
        let (base, _) = raw_server(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 120\r\n\r\n",
            Some(b"<pre>X-Orceum-Webhook-Secret: whs_test_secret_for_tasks\r\nX-Orceum-Signature: sha256=ab</pre>                                   "),
        )
        .await;
        let (resp, _) = push_once(&base).await;
        assert_eq!(resp.status, 400);
        assert!(!resp.excerpt.contains("whs_test"), "{}", resp.excerpt);
        assert!(resp.excerpt.contains("whs_[redacted]"), "{}", resp.excerpt);
        assert!(
            resp.excerpt.contains("X-Orceum-Signature"),
            "{}",
            resp.excerpt
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
