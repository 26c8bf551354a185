//! A secret (a password) that never prints: its `Debug` form is `"***"`, and it has no
//! `Display`, so a log line or an error message cannot leak it. [`redact_url`] takes the
//! password out of a connection URL for the `Debug` form of configurations that hold one.

use std::fmt;

/// A password that never appears in `Debug` or `Display` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `url` with a password replaced by `***`: the one in the user information
/// (`scheme://user:password@host`) and a `password=` query parameter. Other text is kept.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme) = out.find("://") {
        let start = scheme + 3;
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@') {
            if let Some(colon) = out[start..start + at].find(':') {
                out.replace_range(start + colon + 1..start + at, "***");
            }
        }
    }
    if let Some(query) = out.find('?') {
        let redacted: Vec<String> = out[query + 1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.replace_range(query + 1.., &redacted.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_loses_its_password_and_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/shop?sslmode=require"),
            "postgres://app:***@db:5432/shop?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@h1,h2/shop?password=s3cret&sslmode=disable"),
            "postgres://app@h1,h2/shop?password=***&sslmode=disable"
        );
        assert_eq!(redact_url("/var/lib/wh.duckdb"), "/var/lib/wh.duckdb");
        assert_eq!(redact_url("postgres://db/shop"), "postgres://db/shop");
    }
}
