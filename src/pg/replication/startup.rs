//! Opening a replication connection: TCP, TLS as `sslmode` asks (the `SSLRequest`
//! exchange), the startup message with `replication=database` and the session settings,
//! and authentication (cleartext, MD5, SCRAM-SHA-256 with channel binding where TLS
//! offers it), up to `ReadyForQuery`.

use super::*;

impl ReplicationConnection {
    pub(super) async fn connect_inner(
        settings: &ConnectionSettings,
        peer: String,
    ) -> Result<Self, ConnectionError> {
        let stream: Box<dyn Transport> = if settings.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", settings.host, settings.port);
            Box::new(
                UnixStream::connect(&path)
                    .await
                    .map_err(io_error(&format!("connecting to Unix socket {path}")))?,
            )
        } else {
            let tcp = TcpStream::connect((settings.host.as_str(), settings.port))
                .await
                .map_err(io_error(&format!(
                    "connecting to {peer} (is PostgreSQL running and listening there?)"
                )))?;
            // Status updates are small and latency matters more than packet count.
            let _ = tcp.set_nodelay(true);
            Self::negotiate_tls(settings, tcp, &peer).await?
        };
        let mut conn = ReplicationConnection {
            stream,
            read: BytesMut::with_capacity(256 * 1024),
            write: BytesMut::with_capacity(1024),
            server_version: 0,
            peer,
        };
        conn.startup(settings).await?;
        Ok(conn)
    }

    pub(super) async fn negotiate_tls(
        settings: &ConnectionSettings,
        mut tcp: TcpStream,
        peer: &str,
    ) -> Result<Box<dyn Transport>, ConnectionError> {
        let Some(config) = tls::client_config(settings)? else {
            return Ok(Box::new(tcp));
        };
        let mut request = BytesMut::new();
        frontend::ssl_request(&mut request);
        tcp.write_all(&request)
            .await
            .map_err(io_error("sending SSLRequest"))?;
        let answer = tcp
            .read_u8()
            .await
            .map_err(io_error("reading the SSLRequest answer"))?;
        match answer {
            b'S' => {
                let connector = tokio_rustls::TlsConnector::from(config);
                let name = tls::server_name(&settings.host)?;
                let stream = connector.connect(name, tcp).await.map_err(|e| {
                    ConnectionError::Tls(format!("handshake with {peer} failed: {e}"))
                })?;
                Ok(Box::new(stream))
            }
            b'N' if settings.sslmode == SslMode::Prefer => Ok(Box::new(tcp)),
            b'N' => Err(ConnectionError::TlsRefused(peer.to_owned())),
            other => Err(ConnectionError::Protocol(format!(
                "answer {other:#04x} to SSLRequest"
            ))),
        }
    }

    pub(super) async fn startup(
        &mut self,
        settings: &ConnectionSettings,
    ) -> Result<(), ConnectionError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &settings.user),
            ("database", &settings.dbname),
            ("replication", "database"),
            ("application_name", &settings.application_name),
        ];
        params.extend_from_slice(SESSION_SETTINGS);
        frontend::startup_message(params.iter().copied(), &mut self.write)
            .map_err(io_error("encoding the startup message"))?;
        self.flush().await?;
        let password = || {
            settings
                .password
                .as_ref()
                .map(|p| p.expose().as_bytes())
                .ok_or_else(|| ConnectionError::PasswordRequired(settings.user.clone()))
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, mut body) = self.next_frame().await?;
            match tag {
                b'R' => {
                    if body.len() < 4 {
                        return Err(ConnectionError::Protocol(
                            "short authentication message".into(),
                        ));
                    }
                    match body.get_i32() {
                        0 => {}
                        3 => {
                            // password_message adds the terminating NUL itself.
                            frontend::password_message(password()?, &mut self.write)
                                .map_err(io_error("encoding the password"))?;
                            self.flush().await?;
                        }
                        5 => {
                            if body.len() < 4 {
                                return Err(ConnectionError::Protocol("short MD5 salt".into()));
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = md5_hash(settings.user.as_bytes(), password()?, salt);
                            frontend::password_message(hash.as_bytes(), &mut self.write)
                                .map_err(io_error("encoding the password"))?;
                            self.flush().await?;
                        }
                        10 => {
                            let offers_scram = body
                                .split(|&b| b == 0)
                                .any(|m| m == SCRAM_SHA_256.as_bytes());
                            if !offers_scram {
                                let offered = String::from_utf8_lossy(&body).replace('\0', " ");
                                return Err(ConnectionError::UnsupportedAuth(format!(
                                    "SASL ({})",
                                    offered.trim()
                                )));
                            }
                            let client =
                                ScramSha256::new(password()?, ChannelBinding::unsupported());
                            frontend::sasl_initial_response(
                                SCRAM_SHA_256,
                                client.message(),
                                &mut self.write,
                            )
                            .map_err(io_error("encoding the SCRAM message"))?;
                            self.flush().await?;
                            scram = Some(client);
                        }
                        11 => {
                            let client = scram.as_mut().ok_or_else(|| {
                                ConnectionError::Protocol("SASL continue before SASL start".into())
                            })?;
                            client.update(&body).map_err(|e| {
                                ConnectionError::Protocol(format!("SCRAM exchange failed: {e}"))
                            })?;
                            frontend::sasl_response(client.message(), &mut self.write)
                                .map_err(io_error("encoding the SCRAM message"))?;
                            self.flush().await?;
                        }
                        12 => {
                            let client = scram.as_mut().ok_or_else(|| {
                                ConnectionError::Protocol("SASL final before SASL start".into())
                            })?;
                            client.finish(&body).map_err(|e| {
                                ConnectionError::Protocol(format!(
                                    "the server's SCRAM signature does not verify: {e}"
                                ))
                            })?;
                        }
                        2 => return Err(ConnectionError::UnsupportedAuth("Kerberos V5".into())),
                        7 | 8 => return Err(ConnectionError::UnsupportedAuth("GSSAPI".into())),
                        9 => return Err(ConnectionError::UnsupportedAuth("SSPI".into())),
                        other => {
                            return Err(ConnectionError::UnsupportedAuth(format!("code {other}")));
                        }
                    }
                }
                b'S' => {
                    let mut fields = body.split(|&b| b == 0);
                    if fields.next() == Some(b"server_version") {
                        let text = String::from_utf8_lossy(fields.next().unwrap_or_default());
                        self.server_version = parse_server_version(&text);
                    }
                }
                b'K' | b'N' => {}
                b'Z' => return Ok(()),
                other => return Err(self.unexpected(other, &body)),
            }
        }
    }
}
