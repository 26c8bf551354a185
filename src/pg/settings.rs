//! Connection settings parsed from a `postgres://` URL, with libpq's `sslmode` values.
//!
//! tokio-postgres' own parser knows only `disable`, `prefer` and `require`; tidemark also
//! supports `verify-ca` and `verify-full`, so the URL is parsed here once and used both for
//! the replication connection and for ordinary SQL connections.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::ConnectionError;
use crate::domain::secret::Secret;

/// libpq's `sslmode`, ordered from weakest to strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without verifying the certificate.
    #[default]
    Prefer,
    /// Require TLS, without verifying the certificate.
    Require,
    /// Require TLS and a certificate signed by a trusted root.
    VerifyCa,
    /// Require TLS, a trusted certificate, and that it names the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = ConnectionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(ConnectionError::InvalidSettings(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Host name, IP address, or a Unix socket directory (starting with `/`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password, if any.
    pub password: Option<Secret>,
    /// Database name.
    pub dbname: String,
    /// TLS mode.
    pub sslmode: SslMode,
    /// PEM file of trusted root certificates; the system roots when absent.
    pub sslrootcert: Option<PathBuf>,
    /// `application_name` shown in `pg_stat_activity`.
    pub application_name: String,
    /// How long to wait for the TCP connection and the server's answer.
    pub connect_timeout: Duration,
}

impl ConnectionSettings {
    /// Parses a `postgres://user:password@host:port/dbname?param=value` URL.
    ///
    /// Recognised parameters: `sslmode`, `sslrootcert`, `application_name`,
    /// `connect_timeout` (seconds), `host` (overrides, e.g. a Unix socket directory),
    /// `port`, `user`, `password`, `dbname`.
    pub fn from_url(text: &str) -> Result<Self, ConnectionError> {
        let invalid = |why: String| ConnectionError::InvalidSettings(why);
        let url = url::Url::parse(text)
            .map_err(|e| invalid(format!("source URL is not a valid URL ({e}); expected postgres://user:password@host:5432/dbname")))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(invalid(format!(
                "source URL scheme {:?} is not postgres:// or postgresql://",
                url.scheme()
            )));
        }
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| invalid(format!("source URL has bad percent-encoding in {s:?}")))
        };
        let mut settings = ConnectionSettings {
            host: url
                .host_str()
                .map(|h| h.trim_matches(['[', ']']).to_owned())
                .unwrap_or_default(),
            port: url.port().unwrap_or(5432),
            user: decode(url.username())?,
            password: url.password().map(decode).transpose()?.map(Secret::new),
            dbname: decode(url.path().trim_start_matches('/'))?,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: "tidemark".into(),
            connect_timeout: Duration::from_secs(10),
        };
        for (key, value) in url.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "sslmode" => settings.sslmode = value.parse()?,
                "sslrootcert" => settings.sslrootcert = Some(PathBuf::from(value)),
                "application_name" => settings.application_name = value,
                "host" => settings.host = value,
                "port" => {
                    settings.port = value
                        .parse()
                        .map_err(|_| invalid(format!("port={value} is not a port number")))?
                }
                "user" => settings.user = value,
                "password" => settings.password = Some(Secret::new(value)),
                "dbname" => settings.dbname = value,
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        invalid(format!(
                            "connect_timeout={value} is not a whole number of seconds"
                        ))
                    })?;
                    settings.connect_timeout = Duration::from_secs(secs.max(1));
                }
                other => {
                    return Err(invalid(format!(
                        "source URL parameter {other:?} is not supported; supported: sslmode, sslrootcert, \
                         application_name, connect_timeout, host, port, user, password, dbname"
                    )));
                }
            }
        }
        if settings.host.is_empty() {
            settings.host = "localhost".into();
        }
        if settings.user.is_empty() {
            return Err(invalid(
                "source URL names no user; write postgres://USER@host/dbname".into(),
            ));
        }
        if settings.dbname.is_empty() {
            return Err(invalid(
                "source URL names no database; write postgres://user@host/DBNAME".into(),
            ));
        }
        if settings.host.starts_with('/') && settings.sslmode > SslMode::Prefer {
            return Err(invalid(format!(
                "sslmode={:?} cannot be used over the Unix socket {}; use a TCP host or sslmode=disable",
                settings.sslmode, settings.host
            )));
        }
        Ok(settings)
    }

    /// The URL with the password replaced by `***`, for logs and status output.
    pub(crate) fn redacted_url(&self) -> String {
        let password = if self.password.is_some() { ":***" } else { "" };
        format!(
            "postgres://{}{}@{}:{}/{}",
            self.user, password, self.host, self.port, self.dbname
        )
    }

    /// Settings for tokio-postgres (ordinary SQL connections), without the TLS part.
    pub(crate) fn to_tokio_postgres(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            .ssl_mode(match self.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        let options: Vec<String> = super::SESSION_SETTINGS
            .iter()
            .map(|(k, v)| format!("-c {k}={v}"))
            .collect();
        config.options(options.join(" "));
        config
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() {
        let s = ConnectionSettings::from_url(
            "postgres://app%40x:p%2Fss@db.example:6543/shop?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3",
        );
        let Ok(s) = s else { panic!("{s:?}") };
        assert_eq!(s.user, "app@x");
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("p/ss"));
        assert_eq!(
            (s.host.as_str(), s.port, s.dbname.as_str()),
            ("db.example", 6543, "shop")
        );
        assert_eq!(s.sslmode, SslMode::VerifyFull);
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert!(
            !format!("{s:?}").contains("p/ss"),
            "password leaked into Debug"
        );
        assert_eq!(
            s.redacted_url(),
            "postgres://app@x:***@db.example:6543/shop"
        );
    }

    #[test]
    fn malformed_settings_name_the_problem() {
        for (url, expected) in [
            ("not a url", "not a valid URL"),
            ("mysql://u@h/db", "scheme"),
            ("postgres://h/db", "names no user"),
            ("postgres://u@h/", "names no database"),
            ("postgres://u@h/db?sslmode=strict", "sslmode=strict"),
            ("postgres://u@h/db?port=x", "port=x"),
            ("postgres://u@h/db?bogus=1", "\"bogus\" is not supported"),
            ("postgres://u@h/db?host=/tmp&sslmode=require", "Unix socket"),
        ] {
            match ConnectionSettings::from_url(url) {
                Ok(s) => panic!("{url} parsed as {s:?}"),
                Err(e) => assert!(e.to_string().contains(expected), "{url}: {e}"),
            }
        }
    }
}
