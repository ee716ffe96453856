//! Outbound HTTP: an SSRF guard inside the connector, redirects followed by hand and checked
//! again, a response size cap, and failures sorted into the error categories.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use flowline_core::status::ErrorCategory;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, StatusCode, Url};

use crate::failure::Failure;
use crate::secrets::Masker;

/// The largest response body kept.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The most redirects followed.
const MAX_REDIRECTS: usize = 5;

/// What outbound requests may reach.
#[derive(Clone, Debug, Default)]
pub struct OutboundPolicy {
    /// Networks opened despite the guard (`127.0.0.1/32` for local services, in tests).
    pub allow: Vec<IpNet>,
}

impl OutboundPolicy {
    /// Whether `ip` may be reached.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&ip)) || is_public(ip)
    }
}

/// Whether `ip` is a public unicast address: not private, loopback, link-local (cloud metadata
/// included), shared, reserved, multicast, documentation, nor any of those embedded in an IPv6
/// form (IPv4-mapped, -compatible, 6to4, NAT64, Teredo).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)) // discard-only
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

/// The IPv4 address an IPv6 address carries, in the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail); // IPv4-compatible
    }
    if s[0] == 0x0064 && s[1] == 0xff9b {
        return Some(tail); // NAT64
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        )); // 6to4
    }
    if s[0] == 0x2001 && s[1] == 0 {
        let (x, y) = (!s[6], !s[7]);
        return Some(Ipv4Addr::new(
            (x >> 8) as u8,
            x as u8,
            (y >> 8) as u8,
            y as u8,
        )); // Teredo
    }
    None
}

/// Resolves names and keeps only the addresses the policy permits; a name with none is refused.
struct GuardedResolver {
    policy: Arc<OutboundPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> = if found.is_empty() {
                    format!("{host} has no address").into()
                } else {
                    Box::new(Blocked(format!(
                        "{host} resolves only to addresses Flowline may not reach ({})",
                        found
                            .iter()
                            .map(|a| a.ip().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                };
                return Err(error);
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// An address the guard refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Blocked(String);

/// The HTTP client every outbound action uses.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    policy: Arc<OutboundPolicy>,
    /// A dry run's notebook: requests are checked and written down here, never sent.
    recorder: Option<Arc<std::sync::Mutex<Vec<serde_json::Value>>>>,
    /// Where requests are counted.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// A request to send.
pub struct OutboundRequest {
    /// What sends it, for metrics (`run_api_request`, `send_webhook`, `sendgrid`, …).
    pub kind: &'static str,
    /// Method.
    pub method: Method,
    /// URL, already rendered.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Headers that carry credentials: dropped when a redirect leaves the first origin
    /// (`Authorization`, `Cookie` and `Proxy-Authorization` always are).
    pub sensitive: Vec<String>,
    /// Body bytes (JSON or a form), with its content type.
    pub body: Option<(Vec<u8>, &'static str)>,
    /// The whole exchange's timeout.
    pub timeout: Duration,
}

/// A response, its body capped.
#[derive(Debug)]
pub struct OutboundResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body, at most [`MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
    /// Whether the body was cut.
    pub truncated: bool,
    /// The URL that answered (after redirects).
    pub url: String,
}

impl OutboundResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or as a string when it is not JSON.
    pub fn body_value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&self.body).into_owned())
        })
    }
}

fn validation(message: impl Into<String>, suggestion: impl Into<String>) -> Failure {
    Failure::new(ErrorCategory::Validation, message, suggestion)
}

impl Outbound {
    /// A client under `policy`.
    pub fn new(policy: OutboundPolicy) -> Self {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("Flowline/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            client,
            policy,
            recorder: None,
            metrics: None,
        }
    }

    /// Counts requests into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A client for a dry run: every request is checked as usual, then written down (secrets
    /// masked) instead of sent, and answered `200 {}`.
    pub fn recording(
        policy: OutboundPolicy,
    ) -> (Self, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
        let notebook = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut outbound = Self::new(policy);
        outbound.recorder = Some(notebook.clone());
        (outbound, notebook)
    }

    /// Writes down what a dry run would have done; `true` when this is a dry run.
    pub fn record(&self, what: serde_json::Value) -> bool {
        match &self.recorder {
            Some(notebook) => {
                if let Ok(mut notebook) = notebook.lock() {
                    notebook.push(what);
                }
                true
            }
            None => false,
        }
    }

    /// The addresses of `host` the policy permits (for connections other than HTTP: SMTP).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                Failure::new(
                    ErrorCategory::Network,
                    format!("{host} could not be resolved: {e}"),
                    "check the host name",
                )
            })?
            .collect();
        let permitted: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| self.policy.permits(a.ip()))
            .collect();
        if permitted.is_empty() {
            return Err(blocked(format!(
                "{host} resolves only to addresses Flowline may not reach"
            )));
        }
        Ok(permitted)
    }

    /// Checks a URL before it is requested: http or https, no credentials in it, and a
    /// literal address only when permitted (names are checked as they resolve).
    pub fn check_url(&self, url: &str) -> Result<Url, Failure> {
        let parsed = Url::parse(url).map_err(|e| {
            validation(
                format!("`{url}` is not a URL: {e}"),
                "give a full http:// or https:// URL",
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(validation(
                format!(
                    "only http and https URLs may be called, not {}:",
                    parsed.scheme()
                ),
                "use an http:// or https:// URL",
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(validation(
                "the URL carries credentials",
                "put credentials in `authentication` (with a secret), never in the URL",
            ));
        }
        let Some(host) = parsed.host_str() else {
            return Err(validation("the URL has no host", "give a full URL"));
        };
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if let Some(ip) = literal
            && !self.policy.permits(ip)
        {
            return Err(blocked(format!(
                "{ip} is an address Flowline may not reach"
            )));
        }
        Ok(parsed)
    }

    /// Sends `request`, following up to five redirects (each target checked again; a 303, or a
    /// 301/302 after a POST, continues as GET without a body).
    pub async fn send(
        &self,
        request: OutboundRequest,
        masker: &Masker,
    ) -> Result<OutboundResponse, Failure> {
        let kind = request.kind;
        let result = self.send_counted(request, masker).await;
        if let Some(metrics) = &self.metrics {
            let outcome = match &result {
                Ok(r) => format!("{}xx", r.status.as_u16() / 100),
                Err(f) => f.error.category.to_string(),
            };
            metrics.inc(
                "flowline_outbound_requests_total",
                "Outbound requests by kind and outcome (status class, or the failure's category).",
                &[("kind", kind), ("outcome", &outcome)],
            );
        }
        result
    }

    async fn send_counted(
        &self,
        request: OutboundRequest,
        masker: &Masker,
    ) -> Result<OutboundResponse, Failure> {
        let mut url = self.check_url(&request.url)?;
        if self.recorder.is_some() {
            let body = request.body.as_ref().map(|(bytes, kind)| {
                let text = masker.text(&String::from_utf8_lossy(bytes));
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(json) if *kind == "application/json" => json,
                    _ => serde_json::Value::String(text),
                }
            });
            self.record(serde_json::json!({
                "method": request.method.as_str(),
                "url": masker.text(url.as_str()),
                "headers": request.headers.iter().map(|(n, v)| (n.clone(), serde_json::Value::String(masker.text(v)))).collect::<serde_json::Map<_, _>>(),
                "contentType": request.body.as_ref().map(|(_, kind)| *kind),
                "body": body,
            }));
            return Ok(OutboundResponse {
                status: StatusCode::OK,
                headers: Vec::new(),
                body: b"{}".to_vec(),
                truncated: false,
                url: url.to_string(),
            });
        }
        let origin = url.origin();
        let mut headers = request.headers.clone();
        let mut method = request.method.clone();
        let mut body = request.body.clone();
        let deadline = tokio::time::Instant::now() + request.timeout;
        for _ in 0..=MAX_REDIRECTS {
            let mut builder = self.client.request(method.clone(), url.clone());
            for (name, value) in &headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            if let Some((bytes, content_type)) = &body {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let sent = tokio::time::timeout(remaining, builder.send()).await;
            let response = match sent {
                Err(_) => return Err(timed_out(request.timeout)),
                Ok(Err(error)) => return Err(transport(&error, masker)),
                Ok(Ok(response)) => response,
            };
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(reqwest::header::LOCATION)
            {
                let next = location
                    .to_str()
                    .ok()
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| {
                        Failure::new(
                            ErrorCategory::Upstream,
                            format!("the server redirected to an unreadable location ({status})"),
                            "check the URL",
                        )
                    })?;
                url = self.check_url(next.as_str())?;
                if url.origin() != origin {
                    headers.retain(|(name, _)| {
                        let name = name.to_ascii_lowercase();
                        !matches!(
                            name.as_str(),
                            "authorization" | "cookie" | "proxy-authorization"
                        ) && !request
                            .sensitive
                            .iter()
                            .any(|s| s.eq_ignore_ascii_case(&name))
                    });
                }
                if status == StatusCode::SEE_OTHER
                    || (method == Method::POST
                        && matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND))
                {
                    method = Method::GET;
                    body = None;
                }
                continue;
            }
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let answered = url.to_string();
            let (body, truncated) = read_capped(response, deadline, request.timeout).await?;
            return Ok(OutboundResponse {
                status,
                headers,
                body,
                truncated,
                url: answered,
            });
        }
        Err(Failure::new(
            ErrorCategory::Upstream,
            format!("more than {MAX_REDIRECTS} redirects"),
            "call the final URL directly",
        ))
    }
}

async fn read_capped(
    mut response: reqwest::Response,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(Vec<u8>, bool), Failure> {
    let mut body = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining, response.chunk()).await {
            Err(_) => return Err(timed_out(timeout)),
            Ok(Err(error)) => return Err(transport(&error, &Masker::default())),
            Ok(Ok(None)) => return Ok((body, false)),
            Ok(Ok(Some(chunk))) => {
                let room = MAX_RESPONSE_BYTES - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    return Ok((body, true));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

fn blocked(message: String) -> Failure {
    Failure::new(
        ErrorCategory::Permission,
        message,
        "Flowline does not call private, loopback, link-local or metadata addresses; an operator can open a network with `outbound_allow`",
    )
}

fn timed_out(limit: Duration) -> Failure {
    Failure::new(
        ErrorCategory::Timeout,
        format!("the request did not finish within {} ms", limit.as_millis()),
        "check the service, or raise the action's timeout",
    )
}

/// A transport failure: refused by the guard (`permission`), or a connect, DNS or TLS failure
/// (`network`).
fn transport(error: &reqwest::Error, masker: &Masker) -> Failure {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        if let Some(blocked_by) = e.downcast_ref::<Blocked>() {
            return blocked(blocked_by.0.clone());
        }
        source = e.source();
    }
    if error.is_timeout() {
        return timed_out(Duration::from_secs(0));
    }
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        detail.push_str(": ");
        detail.push_str(&e.to_string());
        source = e.source();
    }
    Failure::new(
        ErrorCategory::Network,
        masker.text(&format!("the request failed: {detail}")),
        "check the URL and that the service is reachable; the step is retried per its policy",
    )
}

/// Sorts an HTTP status into a failure, or `None` for 2xx.
pub fn status_failure(response: &OutboundResponse, masker: &Masker, what: &str) -> Option<Failure> {
    let status = response.status;
    if status.is_success() {
        return None;
    }
    let snippet: String = masker
        .text(&String::from_utf8_lossy(&response.body))
        .chars()
        .take(300)
        .collect();
    let message = format!("{what} answered {status}: {snippet}");
    Some(match status.as_u16() {
        429 => {
            let mut failure = Failure::new(
                ErrorCategory::RateLimited,
                message,
                "the step waits as the service asked (Retry-After) and tries again",
            );
            failure.retry_after = response.header("retry-after").and_then(retry_after);
            failure
        }
        401 | 403 => Failure::new(
            ErrorCategory::Permission,
            message,
            "check the credentials (the secret named in `authentication`) and their rights",
        ),
        500..=599 => Failure::new(
            ErrorCategory::Upstream,
            message,
            "the service failed; the step is retried per its policy",
        ),
        404 => Failure::new(ErrorCategory::NotFound, message, "check the URL"),
        _ => Failure::new(
            ErrorCategory::Validation,
            message,
            "the service refused the request as sent: check the URL, body and headers",
        ),
    })
}

/// `Retry-After` in seconds or as an HTTP date, at most a day.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(86_400)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    wait.to_std()
        .ok()
        .map(|d| d.min(Duration::from_secs(86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_pass() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo for 10.0.0.1
            "172.16.5.4",
            "172.31.255.255",
            "100.127.0.1",
            "fd00:ec2::254",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(!is_public(blocked.parse().unwrap()), "{blocked}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        let policy = OutboundPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn urls_are_checked_before_anything_is_sent() {
        let outbound = Outbound::new(OutboundPolicy::default());
        assert!(outbound.check_url("https://example.com/x").is_ok());
        // Every private, loopback, link-local and metadata form is refused at the guard's
        // decision, before any connection: numeric and shortened IPv4 forms are normalised by
        // the URL parser first.
        for blocked in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00:ec2::254]/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
        ] {
            let failure = outbound.check_url(blocked).unwrap_err();
            assert_eq!(
                failure.error.category,
                ErrorCategory::Permission,
                "{blocked}: {failure:?}"
            );
        }
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "http://127.0.0.1:8080/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data",
            "not a url",
        ] {
            assert!(outbound.check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
    }
}
