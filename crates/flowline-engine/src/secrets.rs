//! Secrets: sealed with XChaCha20-Poly1305 under the installation's key, bound to their
//! workspace and name, opened only inside an executor at the moment of use, and masked in
//! everything a step leaves behind.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use flowline_core::id::WorkspaceId;
use serde_json::Value;

/// How a masked secret reads in stored inputs, outputs, errors and logs.
pub const MASK: &str = "[secret]";

/// The key secrets are sealed with: 32 bytes.
#[derive(Clone)]
pub struct SecretKey(chacha20poly1305::Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Why a secret cannot be opened, or a key read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key is not 32 bytes of base64.
    #[error(
        "the secret key must be 32 bytes, base64-encoded (for example `openssl rand -base64 32`)"
    )]
    BadKey,
    /// The ciphertext does not open under this key (another key, or tampered data).
    #[error("secret `{0}` cannot be decrypted with the configured key")]
    WrongKey(String),
}

fn aad(workspace: WorkspaceId, name: &str) -> Vec<u8> {
    let mut aad = workspace.0.as_bytes().to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

impl SecretKey {
    /// A key from its base64 form.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SecretError::BadKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(Self(chacha20poly1305::Key::from(bytes)))
    }

    /// A fresh random key, and its base64 form.
    pub fn generate() -> (Self, String) {
        let bytes: [u8; 32] = rand::random();
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        (Self(chacha20poly1305::Key::from(bytes)), text)
    }

    /// Seals `value` as secret `name` of `workspace`: (nonce, ciphertext).
    pub fn seal(&self, workspace: WorkspaceId, name: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
        let nonce: [u8; 24] = rand::random();
        let cipher = XChaCha20Poly1305::new(&self.0);
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad(workspace, name),
                },
            )
            .unwrap_or_default();
        (nonce.to_vec(), sealed)
    }

    /// Opens secret `name` of `workspace`.
    pub fn open(
        &self,
        workspace: WorkspaceId,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<String, SecretError> {
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|_| SecretError::WrongKey(name.to_owned()))?;
        let cipher = XChaCha20Poly1305::new(&self.0);
        let opened = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad(workspace, name),
                },
            )
            .map_err(|_| SecretError::WrongKey(name.to_owned()))?;
        String::from_utf8(opened).map_err(|_| SecretError::WrongKey(name.to_owned()))
    }
}

/// The secret names a config refers to (`secrets.name` or `secrets["name"]` in its strings).
pub fn referenced(config: &Value) -> Vec<String> {
    fn walk(value: &Value, names: &mut Vec<String>) {
        match value {
            Value::String(s) => {
                let mut rest = s.as_str();
                while let Some(at) = rest.find("secrets") {
                    rest = &rest[at + "secrets".len()..];
                    let name: String = if let Some(after) = rest.strip_prefix('.') {
                        after
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect()
                    } else if let Some(after) =
                        rest.strip_prefix("[\"").or_else(|| rest.strip_prefix("['"))
                    {
                        after
                            .chars()
                            .take_while(|c| *c != '"' && *c != '\'')
                            .collect()
                    } else {
                        String::new()
                    };
                    if !name.is_empty() && !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, names)),
            Value::Object(map) => map.values().for_each(|v| walk(v, names)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    walk(config, &mut names);
    names
}

/// Masks resolved secret values, and their base64 and URL-encoded forms, wherever they appear.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    needles: Vec<String>,
}

impl Masker {
    /// A masker for these resolved values.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles = Vec::new();
        for value in values {
            if value.len() < 4 {
                // Too short to mask without garbling everything; such a secret is no secret.
                continue;
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(value);
            let b64_trimmed = b64.trim_end_matches('=').to_owned();
            let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value);
            let url: String = url_encode(value);
            for needle in [value.to_owned(), b64, b64_trimmed, b64url, url] {
                if !needles.contains(&needle) {
                    needles.push(needle);
                }
            }
        }
        // Longest first, so a value inside another's encoding is not masked half-way.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Self { needles }
    }

    /// Whether it masks anything.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret masked.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        out
    }

    /// `value` with every secret masked in its strings and keys.
    pub fn json(&self, value: Value) -> Value {
        if self.needles.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.text(&k), self.json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// Percent-encodes everything but unreserved characters.
pub(crate) fn url_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_open_only_under_their_key_workspace_and_name() {
        let (_, text) = SecretKey::generate();
        let key = SecretKey::from_base64(&text).unwrap();
        let w = WorkspaceId::new();
        let (nonce, sealed) = key.seal(w, "crm_token", "s3cr3t-value");
        assert_eq!(
            key.open(w, "crm_token", &nonce, &sealed).unwrap(),
            "s3cr3t-value"
        );
        assert!(key.open(w, "other", &nonce, &sealed).is_err());
        assert!(
            key.open(WorkspaceId::new(), "crm_token", &nonce, &sealed)
                .is_err()
        );
        let (other, _) = SecretKey::generate();
        assert!(other.open(w, "crm_token", &nonce, &sealed).is_err());
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn references_are_found_and_values_masked_in_every_form() {
        let config = json!({"url": "https://x/{{ secrets.api_key }}", "h": {"a": "{{ secrets['other'] }} {{ secrets.api_key }}"}});
        let mut names = referenced(&config);
        names.sort();
        assert_eq!(names, vec!["api_key", "other"]);
        let masker = Masker::new(["p@ss word+1"]);
        let b64 = base64::engine::general_purpose::STANDARD.encode("p@ss word+1");
        let masked = masker.json(json!({"body": format!("x p@ss word+1 {b64} p%40ss%20word%2B1")}));
        assert_eq!(masked, json!({"body": "x [secret] [secret] [secret]"}));
    }
}
