//! `email_integration`: a real SMTP session, or SendGrid's or Mailgun's HTTP API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use flowline_core::action::integration::{
    EmailIntegrationConfig, EmailProvider, SmtpSecurity, SmtpSettings,
};
use flowline_core::email::Email;
use flowline_core::status::ErrorCategory;
use reqwest::Method;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::http::{masked, text};
use super::{Executor, StepContext, StepOutput, WithSecrets};
use crate::failure::Failure;
use crate::outbound::{Outbound, OutboundRequest, status_failure};
use crate::secrets::url_encode;

/// Where the email providers' APIs are, and the SMTP server used when an action names none.
#[derive(Clone, Debug)]
pub struct EmailSettings {
    /// SendGrid's API (`https://api.sendgrid.com`).
    pub sendgrid_url: String,
    /// Mailgun's API (`https://api.mailgun.net`).
    pub mailgun_url: String,
    /// The default SMTP server.
    pub smtp: Option<SmtpSettings>,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            sendgrid_url: "https://api.sendgrid.com".into(),
            mailgun_url: "https://api.mailgun.net".into(),
            smtp: None,
        }
    }
}

/// Sends email.
pub struct SendEmail {
    outbound: Outbound,
    settings: Arc<EmailSettings>,
}

impl SendEmail {
    /// Sends through `outbound` (and SMTP connections under its policy).
    pub fn new(outbound: Outbound, settings: EmailSettings) -> Self {
        Self {
            outbound,
            settings: Arc::new(settings),
        }
    }
}

fn invalid(message: impl Into<String>, suggestion: impl Into<String>) -> Failure {
    Failure::new(ErrorCategory::Validation, message, suggestion)
}

/// A header field: no line breaks (header injection).
fn header_field(field: &str, value: &str) -> Result<(), Failure> {
    if value.contains(['\r', '\n']) {
        return Err(invalid(
            format!("`{field}` contains a line break"),
            "remove line breaks: they would let the value add mail headers",
        ));
    }
    Ok(())
}

/// `a@b.c` or `Name <a@b.c>`: (display name, address).
fn mailbox(field: &str, value: &str) -> Result<(Option<String>, String), Failure> {
    header_field(field, value)?;
    let value = value.trim();
    let (name, address) = match (value.rfind('<'), value.ends_with('>')) {
        (Some(open), true) => (
            Some(value[..open].trim().trim_matches('"').to_owned()).filter(|n| !n.is_empty()),
            &value[open + 1..value.len() - 1],
        ),
        _ => (None, value),
    };
    let address = Email::parse(address).map_err(|e| {
        invalid(
            format!("`{field}`: {e}"),
            format!("make `{field}` an email address"),
        )
    })?;
    Ok((name, address.into_string()))
}

/// The message in the email, rendered.
struct Message {
    from: (Option<String>, String),
    to: String,
    subject: Option<String>,
    html: Option<String>,
    text: Option<String>,
    template_id: Option<String>,
    customizations: Option<Map<String, Value>>,
}

#[async_trait]
impl Executor for SendEmail {
    async fn execute(&self, step: &StepContext<'_>) -> Result<StepOutput, Failure> {
        let config: EmailIntegrationConfig = step.saved_config()?;
        let secrets = step.with_secrets().await?;
        self.send(step, &config, &secrets)
            .await
            .map_err(|f| masked(f, &secrets))
    }
}

impl SendEmail {
    async fn send(
        &self,
        step: &StepContext<'_>,
        config: &EmailIntegrationConfig,
        secrets: &WithSecrets,
    ) -> Result<StepOutput, Failure> {
        let real = &secrets.real;
        let optional = |field: &str, value: &Option<String>| -> Result<Option<String>, Failure> {
            value.as_ref().map(|v| text(real, field, v)).transpose()
        };
        let to = match &config.to {
            Some(to) => text(real, "to", to)?,
            None => step
                .data
                .json()
                .pointer("/contact/email")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    invalid(
                        "there is no `to`, and the run's contact has no email",
                        "give `to`, or run the flow for a contact with an email",
                    )
                })?,
        };
        let subject = optional("subject", &config.subject)?;
        if let Some(subject) = &subject {
            header_field("subject", subject)?;
        }
        let message = Message {
            from: mailbox("from", &text(real, "from", &config.from)?)?,
            to: mailbox("to", &to)?.1,
            subject,
            html: optional("html", &config.html)?,
            text: optional("text", &config.text)?,
            template_id: optional("templateId", &config.template_id)?,
            customizations: match &config.customizations {
                Some(map) => Some(
                    match real
                        .render_value("customizations", &Value::Object(map.clone()))
                        .map_err(Failure::template)?
                    {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    },
                ),
                None => None,
            },
        };
        if message.template_id.is_none()
            && (message.subject.is_none() || (message.html.is_none() && message.text.is_none()))
        {
            return Err(invalid(
                "an email needs a subject and html or text, or a templateId",
                "fill in subject and html/text, or name the provider's template",
            ));
        }
        let input = secrets.masker.json(json!({
            "provider": config.provider,
            "from": config.from,
            "to": message.to,
            "subject": message.subject,
            "templateId": message.template_id,
            "hasHtml": message.html.is_some(),
            "hasText": message.text.is_some(),
        }));
        step.show(&input);
        let output = match config.provider {
            EmailProvider::Smtp => self.smtp(step, config, secrets, &message).await?,
            EmailProvider::Sendgrid => self.sendgrid(step, config, secrets, &message).await?,
            EmailProvider::Mailgun => self.mailgun(step, config, secrets, &message).await?,
        };
        Ok(StepOutput {
            output: secrets.masker.json(output),
            variables: Vec::new(),
            input: Some(input),
        })
    }

    async fn sendgrid(
        &self,
        step: &StepContext<'_>,
        config: &EmailIntegrationConfig,
        secrets: &WithSecrets,
        message: &Message,
    ) -> Result<Value, Failure> {
        let key = api_key(config, secrets, "SendGrid")?;
        let mut personalization = json!({"to": [{"email": message.to}]});
        if let Some(data) = &message.customizations {
            personalization["dynamic_template_data"] = Value::Object(data.clone());
        }
        let mut from = json!({"email": message.from.1});
        if let Some(name) = &message.from.0 {
            from["name"] = json!(name);
        }
        let mut body = json!({
            "personalizations": [personalization],
            "from": from,
            "custom_args": {"flowline_step": step.step_id.to_string()},
        });
        if let Some(subject) = &message.subject {
            body["subject"] = json!(subject);
        }
        if let Some(template) = &message.template_id {
            body["template_id"] = json!(template);
        } else {
            let mut content = Vec::new();
            if let Some(text) = &message.text {
                content.push(json!({"type": "text/plain", "value": text}));
            }
            if let Some(html) = &message.html {
                content.push(json!({"type": "text/html", "value": html}));
            }
            body["content"] = Value::Array(content);
        }
        let response = self
            .outbound
            .send(
                OutboundRequest {
                    kind: "email",
                    method: Method::POST,
                    url: format!(
                        "{}/v3/mail/send",
                        self.settings.sendgrid_url.trim_end_matches('/')
                    ),
                    headers: vec![("Authorization".into(), format!("Bearer {key}"))],
                    sensitive: Vec::new(),
                    body: Some((
                        serde_json::to_vec(&body).unwrap_or_default(),
                        "application/json",
                    )),
                    timeout: Duration::from_secs(30),
                },
                &secrets.masker,
            )
            .await?;
        if let Some(failure) = status_failure(&response, &secrets.masker, "SendGrid") {
            return Err(failure);
        }
        Ok(json!({
            "provider": "sendgrid",
            "status": response.status.as_u16(),
            "messageId": response.header("x-message-id"),
        }))
    }

    async fn mailgun(
        &self,
        step: &StepContext<'_>,
        config: &EmailIntegrationConfig,
        secrets: &WithSecrets,
        message: &Message,
    ) -> Result<Value, Failure> {
        let key = api_key(config, secrets, "Mailgun")?;
        let domain = config
            .domain
            .as_ref()
            .map(|d| text(&secrets.real, "domain", d))
            .transpose()?
            .filter(|d| !d.is_empty() && !d.contains(['/', '?', '#']))
            .ok_or_else(|| {
                invalid(
                    "Mailgun needs `domain`, the sending domain",
                    "give the domain",
                )
            })?;
        let from = match &message.from.0 {
            Some(name) => format!("{name} <{}>", message.from.1),
            None => message.from.1.clone(),
        };
        let mut form = vec![
            ("from", from),
            ("to", message.to.clone()),
            ("h:X-Flowline-Step", step.step_id.to_string()),
        ];
        if let Some(subject) = &message.subject {
            form.push(("subject", subject.clone()));
        }
        if let Some(template) = &message.template_id {
            form.push(("template", template.clone()));
            if let Some(vars) = &message.customizations {
                form.push(("t:variables", Value::Object(vars.clone()).to_string()));
            }
        } else {
            if let Some(text) = &message.text {
                form.push(("text", text.clone()));
            }
            if let Some(html) = &message.html {
                form.push(("html", html.clone()));
            }
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("api:{key}"));
        let response = self
            .outbound
            .send(
                OutboundRequest {
                    kind: "email",
                    method: Method::POST,
                    url: format!(
                        "{}/v3/{domain}/messages",
                        self.settings.mailgun_url.trim_end_matches('/')
                    ),
                    headers: vec![("Authorization".into(), format!("Basic {auth}"))],
                    sensitive: Vec::new(),
                    body: Some((body.into_bytes(), "application/x-www-form-urlencoded")),
                    timeout: Duration::from_secs(30),
                },
                &secrets.masker,
            )
            .await?;
        if let Some(failure) = status_failure(&response, &secrets.masker, "Mailgun") {
            return Err(failure);
        }
        Ok(json!({
            "provider": "mailgun",
            "status": response.status.as_u16(),
            "messageId": response.body_value().get("id").cloned(),
        }))
    }

    async fn smtp(
        &self,
        step: &StepContext<'_>,
        config: &EmailIntegrationConfig,
        secrets: &WithSecrets,
        message: &Message,
    ) -> Result<Value, Failure> {
        if message.template_id.is_some() {
            return Err(invalid(
                "SMTP sends subject and html/text; templateId is for SendGrid and Mailgun",
                "write the message in subject and html/text",
            ));
        }
        let settings = config
            .smtp
            .clone()
            .or_else(|| self.settings.smtp.clone())
            .ok_or_else(|| {
                invalid(
                    "no SMTP server: the action has no `smtp` and none is configured",
                    "give `smtp` {host, port, security}, or configure a default SMTP server",
                )
            })?;
        let real = &secrets.real;
        let host = text(real, "smtp.host", &settings.host)?;
        let username = settings
            .username
            .as_ref()
            .map(|u| text(real, "smtp.username", u))
            .transpose()?;
        let password = settings
            .password
            .as_ref()
            .map(|p| text(real, "smtp.password", p))
            .transpose()?;
        let id = format!("<{}@flowline>", step.step_id);
        let data = compose(message, &id);
        if self.outbound.record(json!({
            "smtp": {"host": host, "port": settings.port, "security": settings.security,
                     "authenticates": username.is_some()},
            "from": message.from.1,
            "to": message.to,
            "message": secrets.masker.text(&data),
        })) {
            return Ok(json!({"provider": "smtp", "messageId": id}));
        }
        let reply = tokio::time::timeout(
            Duration::from_secs(60),
            smtp_session(
                &self.outbound,
                &host,
                settings.port,
                settings.security,
                username.zip(password),
                &message.from.1,
                &message.to,
                &data,
            ),
        )
        .await
        .map_err(|_| {
            Failure::new(
                ErrorCategory::Timeout,
                format!(
                    "the SMTP server {host}:{} did not finish within 60 s",
                    settings.port
                ),
                "check the server; the step is retried per its policy",
            )
        })??;
        Ok(json!({"provider": "smtp", "messageId": id, "response": reply}))
    }
}

fn api_key(
    config: &EmailIntegrationConfig,
    secrets: &WithSecrets,
    provider: &str,
) -> Result<String, Failure> {
    let key = config
        .api_key
        .as_ref()
        .map(|k| text(&secrets.real, "apiKey", k))
        .transpose()?
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            invalid(
                format!("{provider} needs `apiKey`"),
                "set apiKey to {{ secrets.<name> }} holding the provider's key",
            )
        })?;
    header_field("apiKey", &key)?;
    Ok(key)
}

/// RFC 2047 for a header with non-ASCII text.
fn encoded_word(text: &str) -> String {
    if text.is_ascii() {
        text.to_owned()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

fn base64_lines(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// The message as RFC 5322 text with CRLF line ends: UTF-8 parts in base64.
fn compose(message: &Message, id: &str) -> String {
    let from = match &message.from.0 {
        Some(name) => format!("{} <{}>", encoded_word(name), message.from.1),
        None => message.from.1.clone(),
    };
    let mut out = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: {id}\r\nMIME-Version: 1.0\r\n",
        message.to,
        encoded_word(message.subject.as_deref().unwrap_or("")),
        chrono::Utc::now().to_rfc2822(),
    );
    let part = |kind: &str, body: &str| {
        format!(
            "Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64_lines(body)
        )
    };
    match (&message.text, &message.html) {
        (Some(text), Some(html)) => {
            let boundary = format!("flowline-{}", uuid::Uuid::now_v7().simple());
            out.push_str(&format!(
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n{}--{boundary}\r\n{}--{boundary}--\r\n",
                part("plain", text),
                part("html", html)
            ));
        }
        (Some(text), None) => out.push_str(&part("plain", text)),
        (None, Some(html)) => out.push_str(&part("html", html)),
        (None, None) => out.push_str("\r\n"),
    }
    out
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn network(message: String) -> Failure {
    Failure::new(
        ErrorCategory::Network,
        message,
        "check the SMTP server's host and port; the step is retried per its policy",
    )
}

/// Reads one reply (all its lines): its code and text.
async fn reply(stream: &mut BufReader<Box<dyn Stream>>) -> Result<(u16, String), Failure> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = stream
            .read_line(&mut line)
            .await
            .map_err(|e| network(format!("the SMTP server's reply could not be read: {e}")))?;
        if n == 0 || line.len() < 4 {
            return Err(network("the SMTP server closed the connection".into()));
        }
        text.push_str(line.trim_end());
        if line.as_bytes()[3] != b'-' {
            let code = line[..3]
                .parse()
                .map_err(|_| network(format!("the SMTP server said something odd: {line}")))?;
            return Ok((code, text));
        }
        text.push(' ');
    }
}

/// Sends a command and expects a reply code in `expected`.
async fn command(
    stream: &mut BufReader<Box<dyn Stream>>,
    line: &str,
    shown: &str,
    expected: &[u16],
) -> Result<String, Failure> {
    stream
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| network(format!("writing to the SMTP server failed: {e}")))?;
    let (code, text) = reply(stream).await?;
    if expected.contains(&code) {
        return Ok(text);
    }
    Err(smtp_refusal(shown, code, &text))
}

fn smtp_refusal(what: &str, code: u16, text: &str) -> Failure {
    let message = format!("the SMTP server refused {what}: {text}");
    match code {
        530 | 534 | 535 | 538 => Failure::new(
            ErrorCategory::Permission,
            message,
            "check the SMTP username and password (the secrets named in `smtp`)",
        ),
        400..=499 => Failure::new(
            ErrorCategory::Upstream,
            message,
            "the server is busy or deferring; the step is retried per its policy",
        ),
        _ => Failure::new(
            ErrorCategory::Validation,
            message,
            "check the sender, the recipient and the server's rules",
        ),
    }
}

async fn tls(stream: Box<dyn Stream>, host: &str) -> Result<Box<dyn Stream>, Failure> {
    use rustls_platform_verifier::ConfigVerifierExt;
    let config = tokio_rustls::rustls::ClientConfig::with_platform_verifier()
        .map_err(|e| network(format!("TLS could not be set up: {e}")))?;
    let name =
        tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
            invalid(
                format!("`{host}` is not a name TLS can check"),
                "give the server's host name",
            )
        })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| network(format!("the TLS handshake with {host} failed: {e}")))?;
    Ok(Box::new(stream))
}

#[allow(clippy::too_many_arguments)]
async fn smtp_session(
    outbound: &Outbound,
    host: &str,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<(String, String)>,
    from: &str,
    to: &str,
    data: &str,
) -> Result<String, Failure> {
    // The same guard as HTTP: the server's address must be one Flowline may reach.
    let addresses = outbound.resolve(host, port).await?;
    let tcp = tokio::net::TcpStream::connect(&addresses[..])
        .await
        .map_err(|e| network(format!("connecting to {host}:{port} failed: {e}")))?;
    let mut stream: Box<dyn Stream> = Box::new(tcp);
    if security == SmtpSecurity::Tls {
        stream = tls(stream, host).await?;
    }
    let mut stream = BufReader::new(stream);
    let (code, greeting) = reply(&mut stream).await?;
    if code != 220 {
        return Err(smtp_refusal("the connection", code, &greeting));
    }
    let mut ehlo = command(&mut stream, "EHLO flowline", "EHLO", &[250]).await?;
    if security == SmtpSecurity::Starttls {
        if !ehlo.to_ascii_uppercase().contains("STARTTLS") {
            return Err(invalid(
                format!("{host} does not offer STARTTLS"),
                "use security `tls` or `none` as the server supports",
            ));
        }
        command(&mut stream, "STARTTLS", "STARTTLS", &[220]).await?;
        let plain = stream.into_inner();
        stream = BufReader::new(tls(plain, host).await?);
        ehlo = command(&mut stream, "EHLO flowline", "EHLO", &[250]).await?;
    }
    if let Some((user, pass)) = credentials {
        if security == SmtpSecurity::None && !is_loopback(host) {
            return Err(invalid(
                "SMTP credentials would cross the network unencrypted",
                "use security `starttls` or `tls`",
            ));
        }
        let _ = ehlo;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        command(
            &mut stream,
            &format!("AUTH PLAIN {token}"),
            "the credentials",
            &[235],
        )
        .await?;
    }
    command(
        &mut stream,
        &format!("MAIL FROM:<{from}>"),
        "the sender",
        &[250],
    )
    .await?;
    command(
        &mut stream,
        &format!("RCPT TO:<{to}>"),
        "the recipient",
        &[250, 251],
    )
    .await?;
    command(&mut stream, "DATA", "DATA", &[354]).await?;
    // Dot-stuffing: a line that starts with a dot gets another.
    let mut body = String::with_capacity(data.len() + 16);
    for line in data.split("\r\n") {
        if line.starts_with('.') {
            body.push('.');
        }
        body.push_str(line);
        body.push_str("\r\n");
    }
    body.push('.');
    let accepted = command(&mut stream, &body, "the message", &[250]).await?;
    let _ = command(&mut stream, "QUIT", "QUIT", &[221]).await;
    Ok(accepted)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_parse_and_refuse_header_injection() {
        assert_eq!(
            mailbox("from", "Ada L. <ada@example.com>").unwrap(),
            (Some("Ada L.".to_owned()), "ada@example.com".to_owned())
        );
        assert!(mailbox("to", "a@example.com\r\nBcc: x@evil.test").is_err());
        assert!(header_field("subject", "Hi\nBcc: x@evil.test").is_err());
        assert!(mailbox("to", "not an address").is_err());
    }
}
