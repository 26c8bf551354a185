//! Connection settings parsed from a `postgres://` URL, with libpq's `sslmode` values.
//!
//! Several hosts may be given as libpq accepts them, `postgres://u@h1:5432,h2:5433/db` or
//! `?host=h1,h2&port=5432,5433`, with `target_session_attrs=read-write` to skip servers that
//! accept only reads (a standby): after a failover the connector finds the new primary by
//! trying the hosts in order ([`ConnectionSettings::candidates`]).
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
    /// Further hosts to try in order when `host` cannot be used (libpq's multi-host form).
    pub other_hosts: Vec<(String, u16)>,
    /// `target_session_attrs=read-write`: use only a server that accepts writes.
    pub read_write: bool,
}

/// Splits `host[:port]` (IPv6 in brackets) into its parts.
fn host_port(text: &str, default_port: u16) -> Result<(String, u16), ConnectionError> {
    let invalid = |why: String| ConnectionError::InvalidSettings(why);
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid(format!("host {text:?} opens a bracket it does not close")))?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(port) => port.parse().map_err(|_| {
            invalid(format!(
                "port {port:?} of host {text:?} is not a port number"
            ))
        })?,
    };
    Ok((host.to_owned(), port))
}

/// `postgres://user@h1:p1,h2:p2/db` → the URL with only the first host, and the others.
fn split_hosts(text: &str) -> Result<(String, Vec<(String, u16)>), ConnectionError> {
    let Some(scheme_end) = text.find("://") else {
        return Ok((text.to_owned(), Vec::new()));
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let hosts_start = authority.rfind('@').map_or(0, |at| at + 1);
    let hosts = &authority[hosts_start..];
    if hosts.is_empty() {
        // `postgres://user@/db?host=…`, as libpq allows: the query names the host.
        let with_host = format!(
            "{}localhost{}",
            &text[..scheme_end + 3 + hosts_start],
            &rest[authority_end..]
        );
        return Ok((with_host, Vec::new()));
    }
    if !hosts.contains(',') {
        return Ok((text.to_owned(), Vec::new()));
    }
    let mut list = hosts.split(',');
    let first = list.next().unwrap_or_default();
    let others = list
        .map(|h| host_port(h, 5432))
        .collect::<Result<Vec<_>, _>>()?;
    let single = format!(
        "{}{}{}",
        &text[..scheme_end + 3 + hosts_start],
        first,
        &rest[authority_end..]
    );
    Ok((single, others))
}

impl ConnectionSettings {
    /// Parses a `postgres://user:password@host:port/dbname?param=value` URL.
    ///
    /// Recognised parameters: `sslmode`, `sslrootcert`, `application_name`,
    /// `connect_timeout` (seconds), `host` (overrides, e.g. a Unix socket directory),
    /// `port`, `user`, `password`, `dbname`.
    pub fn from_url(text: &str) -> Result<Self, ConnectionError> {
        let invalid = |why: String| ConnectionError::InvalidSettings(why);
        let (text, url_hosts) = split_hosts(text)?;
        let url = url::Url::parse(&text)
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
            other_hosts: Vec::new(),
            read_write: false,
        };
        // The query's `host`/`port` lists pair up by position, as libpq's do.
        let mut query_hosts: Vec<String> = Vec::new();
        let mut query_ports: Vec<u16> = Vec::new();
        for (key, value) in url.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "sslmode" => settings.sslmode = value.parse()?,
                "sslrootcert" => settings.sslrootcert = Some(PathBuf::from(value)),
                "application_name" => settings.application_name = value,
                "host" => query_hosts = value.split(',').map(str::to_owned).collect(),
                "port" => {
                    query_ports = value
                        .split(',')
                        .map(|p| {
                            p.parse()
                                .map_err(|_| invalid(format!("port={value} is not a port number")))
                        })
                        .collect::<Result<_, _>>()?
                }
                "target_session_attrs" => {
                    settings.read_write = match value.as_str() {
                        "any" => false,
                        "read-write" | "primary" => true,
                        other => {
                            return Err(invalid(format!(
                                "target_session_attrs={other} is not supported; use read-write (skip servers that accept only reads, e.g. a standby) or any"
                            )));
                        }
                    }
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
                         application_name, connect_timeout, host, port, user, password, dbname, \
                         target_session_attrs"
                    )));
                }
            }
        }
        if !query_hosts.is_empty() || !query_ports.is_empty() {
            if query_ports.len() > 1 && query_hosts.len().max(1) != query_ports.len() {
                return Err(invalid(format!(
                    "{} hosts but {} ports; give one port, or one per host",
                    query_hosts.len().max(1),
                    query_ports.len()
                )));
            }
            let hosts = if query_hosts.is_empty() {
                vec![settings.host.clone()]
            } else {
                query_hosts
            };
            let port_of = |i: usize| match query_ports.len() {
                0 => settings.port,
                1 => query_ports[0],
                _ => query_ports[i],
            };
            let mut all: Vec<(String, u16)> = hosts
                .into_iter()
                .enumerate()
                .map(|(i, h)| (h, port_of(i)))
                .collect();
            let (host, port) = all.remove(0);
            settings.host = host;
            settings.port = port;
            settings.other_hosts = all;
        }
        settings.other_hosts.extend(url_hosts);
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
        let hosts: Vec<String> = std::iter::once((self.host.as_str(), self.port))
            .chain(self.other_hosts.iter().map(|(h, p)| (h.as_str(), *p)))
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect();
        format!(
            "postgres://{}{}@{}/{}{}",
            self.user,
            password,
            hosts.join(","),
            self.dbname,
            if self.read_write {
                "?target_session_attrs=read-write"
            } else {
                ""
            }
        )
    }

    /// One single-host settings per host, in the order to try them.
    pub(crate) fn candidates(&self) -> Vec<ConnectionSettings> {
        std::iter::once((self.host.clone(), self.port))
            .chain(self.other_hosts.iter().cloned())
            .map(|(host, port)| ConnectionSettings {
                host,
                port,
                other_hosts: Vec::new(),
                ..self.clone()
            })
            .collect()
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
        if self.read_write {
            config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        }
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
    fn several_hosts_in_either_form() {
        let s = ConnectionSettings::from_url(
            "postgres://u:pw@h1:5433,[::1]:5434,h3/db?target_session_attrs=read-write",
        );
        let Ok(s) = s else { panic!("{s:?}") };
        assert_eq!((s.host.as_str(), s.port), ("h1", 5433));
        assert_eq!(
            s.other_hosts,
            vec![("::1".to_string(), 5434), ("h3".to_string(), 5432)]
        );
        assert!(s.read_write);
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("pw"));
        let candidates: Vec<(String, u16)> = s
            .candidates()
            .into_iter()
            .map(|c| (c.host, c.port))
            .collect();
        assert_eq!(candidates.len(), 3);
        assert!(
            s.candidates()
                .iter()
                .all(|c| c.other_hosts.is_empty() && c.read_write)
        );
        assert_eq!(
            s.redacted_url(),
            "postgres://u:***@h1:5433,[::1]:5434,h3:5432/db?target_session_attrs=read-write"
        );
        let q = ConnectionSettings::from_url("postgres://u@/db?host=a,b&port=1,2");
        let Ok(q) = q else { panic!("{q:?}") };
        assert_eq!((q.host.as_str(), q.port), ("a", 1));
        assert_eq!(q.other_hosts, vec![("b".to_string(), 2)]);
        assert!(!q.read_write);
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
            ("postgres://u@a,b:x/db", "is not a port number"),
            (
                "postgres://u@h/db?host=a,b,c&port=1,2",
                "3 hosts but 2 ports",
            ),
            (
                "postgres://u@h/db?target_session_attrs=standby",
                "read-write",
            ),
        ] {
            match ConnectionSettings::from_url(url) {
                Ok(s) => panic!("{url} parsed as {s:?}"),
                Err(e) => assert!(e.to_string().contains(expected), "{url}: {e}"),
            }
        }
    }
}
