//! TLS for PostgreSQL connections with rustls, following libpq's `sslmode` semantics.
//!
//! - `prefer` and `require` encrypt but do not verify the server certificate (as libpq does
//!   when no root certificate is configured);
//! - `verify-ca` verifies the chain against `sslrootcert` (or the system roots) but not the
//!   host name;
//! - `verify-full` verifies the chain and that the certificate names the host.
//!
//! PostgreSQL starts TLS inside its own protocol: the client sends an SSLRequest and the
//! server answers a single byte, `S` (go ahead) or `N` (no TLS here).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;

use super::ConnectionError;
use super::settings::{ConnectionSettings, SslMode};

/// Builds the rustls client configuration for `settings`, or `None` for `sslmode=disable`.
pub fn client_config(
    settings: &ConnectionSettings,
) -> Result<Option<Arc<ClientConfig>>, ConnectionError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectionError::Tls(format!("TLS setup failed: {e}")))?;
    let config = match settings.sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(settings)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| {
                    ConnectionError::Tls(format!("cannot build certificate verifier: {e}"))
                })?;
            let verifier: Arc<dyn ServerCertVerifier> = if settings.sslmode == SslMode::VerifyCa {
                Arc::new(IgnoreHostName(webpki))
            } else {
                webpki
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// The server name to present and verify: the host, or a placeholder for IP addresses that
/// `verify-full` then checks against the certificate's IP SANs.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, ConnectionError> {
    ServerName::try_from(host.to_owned()).map_err(|_| {
        ConnectionError::InvalidSettings(format!("{host:?} is not a valid TLS server name"))
    })
}

fn root_store(settings: &ConnectionSettings) -> Result<RootCertStore, ConnectionError> {
    let mut roots = RootCertStore::empty();
    match &settings.sslrootcert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    ConnectionError::Tls(format!(
                        "cannot read sslrootcert {}: {e}; point sslrootcert at a PEM file of CA certificates",
                        path.display()
                    ))
                })?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    ConnectionError::Tls(format!(
                        "sslrootcert {} holds an unusable certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // Skip the odd unparsable system certificate rather than refusing all.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(ConnectionError::Tls(format!(
            "sslmode={:?} needs trusted root certificates and none were found; set sslrootcert=/path/to/ca.pem in the source URL",
            settings.sslmode
        )));
    }
    Ok(roots)
}

/// `prefer`/`require`: encryption without authentication of the server, as libpq.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must verify; a certificate for another name is accepted.
#[derive(Debug)]
struct IgnoreHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
