//! The HTTP side of the Hub protocol: one blocking client (ureq, rustls), redirects followed by
//! hand, errors read from `X-Error-Code` as huggingface_hub's `hf_raise_for_status` reads them.
//!
//! Redirects are never left to the HTTP library: `HEAD` follows only relative redirects (a
//! renamed repo) as huggingface_hub's `_httpx_follow_relative_redirects` does, `GET` follows any
//! redirect (to a CDN), and `Authorization` is sent only to the origin the request started at.

use std::io::Read;
use std::time::Duration;

use crate::error::{Error, Result};

/// At most this many redirects are followed for one request.
pub const MAX_REDIRECTS: usize = 10;

/// Response bodies read into memory (API JSON, error texts) are cut at this size.
pub const MAX_JSON_BYTES: u64 = 16 * 1024 * 1024;

/// The parts of a response the Hub protocol reads.
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The URL that answered (after the redirects that were followed).
    pub url: String,
    headers: Vec<(String, String)>,
    body: Option<ureq::Body>,
}

impl Response {
    /// A header's value, by case-insensitive name; `None` when absent or not valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is a redirect that carries a `Location`.
    pub fn is_redirect(&self) -> bool {
        matches!(self.status, 301 | 302 | 303 | 307 | 308) && self.header("location").is_some()
    }

    /// The body as a stream (for files), with no size limit: callers count what they read.
    pub fn into_reader(self) -> Option<impl Read> {
        self.body
            .map(|body| body.into_with_config().limit(u64::MAX).reader())
    }

    /// The body as text, cut at `limit` bytes (error texts, API JSON).
    pub fn text(self, limit: u64) -> Result<String> {
        let url = self.url.clone();
        let Some(reader) = self.into_reader() else {
            return Ok(String::new());
        };
        let mut bytes = Vec::new();
        reader
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Connection {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 > limit {
            return Err(Error::download(
                &url,
                format!("the response is larger than {limit} bytes"),
            ));
        }
        String::from_utf8(bytes).map_err(|_| Error::download(&url, "the response is not UTF-8"))
    }
}

/// A blocking HTTP client for the Hub: timeouts on every connection, no automatic redirects.
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
    /// The same without the proxy from the environment, for loopback addresses.
    direct: ureq::Agent,
    token: Option<String>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// `scheme://host:port` of an absolute URL, lower-cased; `None` for a relative one.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    Some(format!("{scheme}://{authority}").to_ascii_lowercase())
}

/// Whether `url` points at this machine (no proxy is used for it).
fn is_loopback(url: &str) -> bool {
    let Some(origin) = origin(url) else {
        return false;
    };
    let host = origin.split("://").nth(1).unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "localhost" | "[::1]") || host.starts_with("127.")
}

/// Resolves a `Location` header against the URL that sent it.
pub fn join_location(base: &str, location: &str) -> Result<String> {
    if origin(location).is_some() {
        return Ok(location.to_string());
    }
    let base_origin =
        origin(base).ok_or_else(|| Error::download(base, "the request URL is not absolute"))?;
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = base_origin.split("://").next().unwrap_or("https");
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{base_origin}{location}"));
    }
    // A path relative to the current folder.
    let path_start = base_origin.len();
    let path = base.get(path_start..).unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let folder = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    Ok(format!("{base_origin}{folder}{location}"))
}

/// Percent-encodes `text`, leaving RFC 3986's unreserved characters and those in `safe`
/// (Python's `urllib.parse.quote`).
pub fn quote(text: &str, safe: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let c = byte as char;
        if c.is_ascii_alphanumeric() || "-._~".contains(c) || (c.is_ascii() && safe.contains(c)) {
            out.push(c);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A duration in seconds from the environment variable `name`, else `default`.
fn env_seconds(name: &str, default: u64) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(default))
}

impl HttpClient {
    /// A client sending `token` (if any) as `Authorization: Bearer` to the origin of each request.
    /// `HF_HUB_ETAG_TIMEOUT` bounds connecting and waiting for headers, `HF_HUB_DOWNLOAD_TIMEOUT`
    /// each read of a body (10 s each by default, as in huggingface_hub).
    pub fn new(token: Option<String>) -> Self {
        Self::with_timeouts(
            token,
            env_seconds("HF_HUB_ETAG_TIMEOUT", 10),
            env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", 10),
        )
    }

    /// A client with explicit timeouts: `header_timeout` for connecting and receiving headers,
    /// `read_timeout` for each read or write on the connection.
    pub fn with_timeouts(
        token: Option<String>,
        header_timeout: Duration,
        read_timeout: Duration,
    ) -> Self {
        let builder = || {
            ureq::Agent::config_builder()
                .max_redirects(0)
                .http_status_as_error(false)
                .timeout_connect(Some(header_timeout))
                .timeout_send_request(Some(header_timeout))
                .timeout_recv_response(Some(header_timeout))
                .timeout_per_read(Some(read_timeout))
                .timeout_per_write(Some(read_timeout))
                .max_response_header_size(64 * 1024)
                .user_agent(format!(
                    "autoclass/{}; rust; hf_hub-compatible",
                    env!("CARGO_PKG_VERSION")
                ))
        };
        HttpClient {
            agent: builder().build().into(),
            direct: builder().proxy(None).build().into(),
            token,
        }
    }

    /// The token this client sends, if any.
    pub fn token(&self) -> Option<&String> {
        self.token.as_ref()
    }

    /// One request, no redirect followed. `auth` says whether the token may be sent.
    fn send(
        &self,
        method: &str,
        url: &str,
        extra: &[(&str, String)],
        auth: bool,
    ) -> Result<Response> {
        let connection = |e: ureq::Error| Error::Connection {
            url: url.to_string(),
            reason: e.to_string(),
        };
        if super::offline_mode() {
            return Err(Error::Connection {
                url: url.to_string(),
                reason: "offline mode is enabled (HF_HUB_OFFLINE)".to_string(),
            });
        }
        let agent = if is_loopback(url) {
            &self.direct
        } else {
            &self.agent
        };
        let mut request = match method {
            "HEAD" => agent.head(url),
            _ => agent.get(url),
        };
        request = request.header("Accept-Encoding", "identity");
        if auth {
            if let Some(token) = &self.token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
        }
        for (name, value) in extra {
            request = request.header(*name, value.as_str());
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(e @ (ureq::Error::BadUri(_) | ureq::Error::Http(_))) => {
                return Err(Error::download(url, e.to_string()))
            }
            Err(e) => return Err(connection(e)),
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = (method != "HEAD").then(|| response.into_body());
        Ok(Response {
            status,
            url: url.to_string(),
            headers,
            body,
        })
    }

    /// `HEAD url`, following only relative redirects (same host), as huggingface_hub does; an
    /// absolute redirect (to a CDN) is returned as is, its `Location` to be fetched with `GET`.
    pub fn head(&self, url: &str) -> Result<Response> {
        let start = origin(url);
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send("HEAD", &url, &[], origin(&url) == start)?;
            if !response.is_redirect() {
                return Ok(response);
            }
            let location = response.header("location").unwrap_or_default();
            if origin(location).is_some() {
                return Ok(response);
            }
            url = join_location(&url, location)?;
        }
        Err(Error::download(
            &url,
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }

    /// `GET url`, following every redirect; the token goes only to the starting origin.
    pub fn get(&self, url: &str, extra: &[(&str, String)]) -> Result<Response> {
        self.get_from(url, extra, origin(url))
    }

    /// `GET url` where `trusted` is the origin the token may be sent to.
    pub fn get_from(
        &self,
        url: &str,
        extra: &[(&str, String)],
        trusted: Option<String>,
    ) -> Result<Response> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send("GET", &url, extra, origin(&url) == trusted)?;
            if !response.is_redirect() {
                return Ok(response);
            }
            let location = response.header("location").unwrap_or_default().to_string();
            url = join_location(&url, &location)?;
        }
        Err(Error::download(
            &url,
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }
}

/// What a failed Hub response means (huggingface_hub's `hf_raise_for_status`).
#[derive(Debug, PartialEq, Eq)]
pub enum HubFailure {
    /// `RepoNotFound`, or a 401 without a code: the repo does not exist or is private.
    RepoNotFound,
    /// `GatedRepo`: the repo needs accepted terms and a token.
    Gated(String),
    /// `EntryNotFound` (or a bare 404 on a file): the file is not in the repo.
    EntryNotFound,
    /// `RevisionNotFound`: the branch, tag or commit does not exist.
    RevisionNotFound,
    /// Any other status >= 400 (the text to show).
    Other(String),
}

/// Classifies a response with status >= 400. `None` for a success.
pub fn classify(response: &Response) -> Option<HubFailure> {
    if response.status < 400 {
        return None;
    }
    let code = response.header("x-error-code").unwrap_or_default();
    let message = response.header("x-error-message").unwrap_or_default();
    let url = &response.url;
    Some(match code {
        "RevisionNotFound" => HubFailure::RevisionNotFound,
        "EntryNotFound" => HubFailure::EntryNotFound,
        "GatedRepo" => HubFailure::Gated(format!(
            "{} Client Error.\n\nCannot access gated repo for url {url}.{}",
            response.status,
            if message.is_empty() {
                String::new()
            } else {
                format!("\n{message}")
            }
        )),
        "RepoNotFound" => HubFailure::RepoNotFound,
        _ if response.status == 401 && message != "Invalid credentials in Authorization header" => {
            HubFailure::RepoNotFound
        }
        _ if response.status == 404 => HubFailure::EntryNotFound,
        _ if response.status == 403 => HubFailure::Other(format!(
            "403 Forbidden: {message}.\nCannot access content at: {url}.\nMake sure your token \
             has the correct permissions."
        )),
        _ => HubFailure::Other(format!(
            "{} Client Error for url: {url}{}",
            response.status,
            if message.is_empty() {
                String::new()
            } else {
                format!(" ({message})")
            }
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let base = "http://127.0.0.1:8000/org/name/resolve/main/config.json";
        assert_eq!(
            join_location(base, "/new/name/resolve/main/config.json").ok(),
            Some("http://127.0.0.1:8000/new/name/resolve/main/config.json".to_string())
        );
        assert_eq!(
            join_location(base, "http://cdn:1/x").ok(),
            Some("http://cdn:1/x".into())
        );
        assert_eq!(
            join_location(base, "other.json").ok(),
            Some("http://127.0.0.1:8000/org/name/resolve/main/other.json".into())
        );
        assert_eq!(
            join_location(base, "//cdn.example/x").ok(),
            Some("http://cdn.example/x".into())
        );
        assert_eq!(
            origin("HTTP://Host:1/a?b"),
            Some("http://host:1".to_string())
        );
        assert_eq!(origin("/relative"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("refs/pr/1", ""), "refs%2Fpr%2F1");
        assert_eq!(quote("sub dir/file.json", "/"), "sub%20dir/file.json");
    }
}
