//! The one HTTP client of every HTTP backend: rustls, a timeout per
//! request, retries with exponential backoff on 429 (always) and on 5xx
//! and transport errors (idempotent requests only), `Retry-After` honoured,
//! and the error mapping: 401/403 → credentials, 404 → not found (the
//! backend says what is missing), other 4xx → rejected, with the API's own
//! message. The credential header is marked sensitive and never logged.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};

use crate::{HttpSettings, ProviderError};

/// The longest `Retry-After` we wait for; longer ones fail the request.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// The longest pause between two attempts without `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A client for one API: base URL, credential header, limits.
pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
    provider: &'static str,
    retries: u32,
    backoff: Duration,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("provider", &self.provider)
            .field("base", &self.base)
            .field("credentials", &"***")
            .finish()
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The headers (pagination links).
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The `rel="next"` URL of an RFC 8288 `Link` header, if any.
    pub fn next_link(&self) -> Option<String> {
        let value = self.headers.get(reqwest::header::LINK)?.to_str().ok()?;
        value.split(',').find_map(|part| {
            let (url, params) = part.split_once(';')?;
            let is_next = params
                .split(';')
                .any(|p| p.trim().replace('"', "") == "rel=next");
            let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
            (is_next && !url.is_empty()).then(|| url.to_owned())
        })
    }

    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, provider: &str) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| ProviderError::Protocol {
            provider: provider.into(),
            message: format!("invalid JSON: {e}"),
        })
    }
}

/// A failure: the mapped error, or a 404 for the backend to name.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// 404, with the API's message.
    NotFound(String),
    /// Everything else.
    Other(ProviderError),
}

impl HttpError {
    /// The error, with a 404 taken to mean that `zone` is missing at `provider`.
    pub fn zone_missing(self, provider: &str, zone: &str) -> ProviderError {
        match self {
            HttpError::Other(e) => e,
            HttpError::NotFound(message) => ProviderError::ZoneMissing {
                provider: provider.into(),
                zone: crate::absolute(zone),
                message,
            },
        }
    }
}

impl Http {
    /// A client for `settings.url` that sends the secret as `header: prefix + secret`.
    pub fn new(
        provider: &'static str,
        settings: &HttpSettings,
        header: &'static str,
        prefix: &str,
    ) -> Result<Http, ProviderError> {
        // rustls with ring; a provider installed earlier is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let secret = settings.secret.read()?;
        let mut value =
            HeaderValue::from_str(&format!("{prefix}{}", secret.expose())).map_err(|_| {
                ProviderError::Secret(format!(
                    "{} holds characters that cannot go into an HTTP header",
                    settings.secret
                ))
            })?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static(header), value);
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("nolist/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Unreachable {
                provider: provider.into(),
                message: format!("cannot set up the HTTP client: {e}"),
            })?;
        Ok(Http {
            client,
            base: settings.url.trim_end_matches('/').to_owned(),
            provider,
            retries: settings.retries,
            backoff: settings.backoff,
        })
    }

    /// `path` (starting with `/`) below the base URL, or a full URL as given
    /// (pagination links).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Sends one request, with retries; `idempotent` allows retrying after
    /// a 5xx or a transport error (a 429 was not processed, so it is always
    /// retried).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> Result<Reply, HttpError> {
        let url = self.url(path);
        let mut pause = self.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.client.request(method.clone(), &url);
            if let Some(body) = body {
                request = request.json(body);
            }
            let last = attempt > self.retries;
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    if idempotent && !last {
                        tracing::warn!(provider = self.provider, %method, url, attempt, error = %e, "request failed; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    return Err(HttpError::Other(ProviderError::Unreachable {
                        provider: self.provider.into(),
                        message: format!("{method} {url}: {}", transport(&e)),
                    }));
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(|e| {
                HttpError::Other(ProviderError::Unreachable {
                    provider: self.provider.into(),
                    message: format!("{method} {url}: reading the answer: {}", transport(&e)),
                })
            })?;
            if status.is_success() {
                return Ok(Reply {
                    headers,
                    body: bytes.to_vec(),
                });
            }
            let retryable =
                status == StatusCode::TOO_MANY_REQUESTS || (status.is_server_error() && idempotent);
            if retryable && !last {
                let wait = retry_after(&headers).unwrap_or(pause);
                if wait > MAX_RETRY_AFTER {
                    return Err(HttpError::Other(ProviderError::Failed {
                        provider: self.provider.into(),
                        message: format!(
                            "{method} {url}: HTTP {status}, retry after {}s: longer than nolist waits",
                            wait.as_secs()
                        ),
                    }));
                }
                tracing::warn!(provider = self.provider, %method, url, %status, attempt, wait_ms = wait.as_millis() as u64, "retrying");
                tokio::time::sleep(wait).await;
                pause = (pause * 2).min(MAX_BACKOFF);
                continue;
            }
            let message = api_message(&bytes);
            let provider = self.provider.to_owned();
            let what = format!("{method} {url}: HTTP {}: {message}", status.as_u16());
            return Err(match status.as_u16() {
                401 | 403 => HttpError::Other(ProviderError::Credentials {
                    provider,
                    message: what,
                }),
                404 => HttpError::NotFound(what),
                429 => HttpError::Other(ProviderError::Failed {
                    provider,
                    message: format!("{what} (still rate-limited after {} attempts)", attempt),
                }),
                400..=499 => HttpError::Other(ProviderError::Rejected {
                    provider,
                    message: what,
                }),
                _ => HttpError::Other(ProviderError::Failed {
                    provider,
                    message: what,
                }),
            });
        }
    }
}

/// A transport error's chain of causes.
fn transport(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110 §10.2.3), which is
/// waited for relative to now (a date in the past means at once).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The API's error message: the shapes of the APIs nolist knows
/// (`{"error": "…"}` PowerDNS, `{"error": {"message": …}}` Hetzner,
/// `{"errors": [{"message": …}]}` Cloudflare, `{"detail": …}` deSEC),
/// else the body itself, cut to 300 characters.
pub(crate) fn api_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        s(&v["error"])
            .or_else(|| {
                let e = &v["error"];
                s(&e["message"]).map(|m| match s(&e["code"]) {
                    Some(code) => format!("{code}: {m}"),
                    None => m,
                })
            })
            .or_else(|| {
                let list = v["errors"].as_array()?;
                let parts: Vec<String> = list
                    .iter()
                    .map(|e| match (&e["code"], s(&e["message"])) {
                        (serde_json::Value::Number(n), Some(m)) => format!("{n}: {m}"),
                        (_, Some(m)) => m,
                        _ => e.to_string(),
                    })
                    .collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            })
            .or_else(|| s(&v["detail"]))
            .or_else(|| Some(v.to_string()))
    });
    let mut message = from_json.unwrap_or_else(|| text.trim().to_owned());
    if message.chars().count() > 300 {
        message = message.chars().take(300).collect::<String>() + "…";
    }
    if message.is_empty() {
        message = "(no message)".into();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::{api_message, retry_after};
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
    use std::time::{Duration, SystemTime};

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_in_seconds_or_as_an_http_date() {
        assert_eq!(retry_after(&with("7")), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let wait = retry_after(&with(&later)).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(
            retry_after(&with("Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&with("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn api_messages_of_every_known_shape() {
        assert_eq!(
            api_message(br#"{"error": "Could not find domain 'x.'"}"#),
            "Could not find domain 'x.'"
        );
        assert_eq!(
            api_message(br#"{"error": {"code": "not_found", "message": "zone not found"}}"#),
            "not_found: zone not found"
        );
        assert_eq!(
            api_message(br#"{"success": false, "errors": [{"code": 9005, "message": "Content for A record is invalid."}]}"#),
            "9005: Content for A record is invalid."
        );
        assert_eq!(
            api_message(br#"{"detail": "Invalid token."}"#),
            "Invalid token."
        );
        assert_eq!(
            api_message(br#"[{}, {"ttl": ["too low"]}]"#),
            r#"[{},{"ttl":["too low"]}]"#
        );
        assert_eq!(api_message(b"Unauthorized\n"), "Unauthorized");
        assert_eq!(api_message(b""), "(no message)");
        assert_eq!(api_message("x".repeat(400).as_bytes()).chars().count(), 301);
    }
}
