//! A normalised, validated email address.

use std::fmt;

/// Longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
const MAX_LEN: usize = 254;

/// An email address, trimmed and lower-cased so `Ann@Example.com ` and `ann@example.com` are
/// one account. Only [`Email::parse`] builds one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Normalises and validates `raw`.
    ///
    /// # Errors
    /// A message fit to show the client when `raw` is not a plausible address.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err("must not be empty");
        }
        if normalised.len() > MAX_LEN {
            return Err("must be at most 254 characters");
        }
        let Some((local, domain)) = normalised.rsplit_once('@') else {
            return Err("must contain @");
        };
        if local.is_empty() || domain.is_empty() {
            return Err("must have text before and after @");
        }
        if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return Err("domain must contain a dot, like example.com");
        }
        if !email_address::EmailAddress::is_valid(&normalised) {
            return Err("is not a valid email address");
        }
        Ok(Self(normalised))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
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
    fn valid_addresses_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        assert_eq!(
            Email::parse("a.b+tag@sub.example.org").unwrap().as_str(),
            "a.b+tag@sub.example.org"
        );
    }

    #[test]
    fn invalid_addresses_are_rejected_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("   ", "blank"),
            ("ann", "no @"),
            ("@example.com", "no local part"),
            ("ann@", "no domain"),
            ("ann@localhost", "domain without a dot"),
            ("ann@example.com.", "trailing dot"),
            ("an n@example.com", "space inside"),
            ("ann@@example.com", "two @"),
        ];
        for (raw, why) in cases {
            assert!(Email::parse(raw).is_err(), "{why}: {raw:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(
            Email::parse(&long).is_err(),
            "over-long address was accepted"
        );
    }
}
