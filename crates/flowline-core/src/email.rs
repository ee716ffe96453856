//! Email addresses, parsed once at the edge.

use std::fmt;

/// A syntactically plausible email address: one `@`, a non-empty local part, a dotted domain,
/// no spaces or line breaks, at most 320 characters. Compared and stored as given, trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

/// Why a string is not an email address.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a valid email address")]
pub struct InvalidEmail(pub String);

impl Email {
    /// Parses `s`.
    pub fn parse(s: &str) -> Result<Self, InvalidEmail> {
        let trimmed = s.trim();
        let invalid = || InvalidEmail(s.chars().take(100).collect());
        if trimmed.is_empty() || trimmed.len() > 320 {
            return Err(invalid());
        }
        if trimmed
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',')
        {
            return Err(invalid());
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or_else(invalid)?;
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(invalid());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return Err(invalid());
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn plausible_addresses_parse_and_others_do_not() {
        for good in [
            "a@b.co",
            " Jane.Doe+tag@mail.example.com ",
            "x@sub-domain.example.org",
        ] {
            assert!(Email::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "plain",
            "@b.co",
            "a@",
            "a@b",
            "a b@c.de",
            "a@b..c",
            "a@-b.c",
            "a@b.c\r\nBcc: x@y.z",
            "a@b@c.de",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }
}
