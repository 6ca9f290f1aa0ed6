//! TLS around a dialed byte stream, with rustls on the ring provider. The server certificate
//! is checked against the configured CA file or the operating system's roots, and against the
//! host name we dialed (DNS names and IP addresses alike: webpki matches IP SANs); SNI is sent
//! for DNS names. Handshake failures come back as [`TlsError`] variants a caller can match on,
//! mapped from rustls' certificate errors.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use thiserror::Error;
use tokio_rustls::TlsConnector;

use super::TlsConfig;
use crate::connection::BoxTransport;

/// Why a TLS connection could not be set up.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// The server's certificate does not chain to a trusted CA.
    #[error("server certificate is not signed by a trusted CA")]
    UntrustedCertificate,
    /// The certificate is valid, but not for the host we dialed.
    #[error("server certificate is not valid for host {host:?}")]
    HostnameMismatch { host: String },
    #[error("server certificate has expired")]
    Expired,
    #[error("server certificate is not valid yet")]
    NotYetValid,
    /// Any other certificate problem (bad signature, wrong purpose, revoked, ...).
    #[error("invalid server certificate: {0}")]
    InvalidCertificate(String),
    /// The handshake failed for another reason (an alert from the peer, no common cipher,
    /// the peer does not speak TLS).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The host part of the address is neither a DNS name nor an IP address.
    #[error("{0:?} is not a valid TLS server name")]
    InvalidServerName(String),
    /// A CA, certificate or key file could not be read or parsed.
    #[error("cannot load {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// Neither a CA file nor any usable system root certificate.
    #[error("no trusted root certificates (set ssl ca)")]
    NoRoots,
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The rustls client configuration for `cfg`, built once and shared by its clones.
pub fn client_config(cfg: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut cache = cfg.built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((k, built)) = cache.as_ref()
        && cfg.built_from(k)
    {
        return Ok(built.clone());
    }
    let built = build(cfg)?;
    *cache = Some((cfg.key(), built.clone()));
    Ok(built)
}

fn build(cfg: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    match &cfg.ca {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
                let cert = cert.map_err(|e| file_error(path, e))?;
                roots.add(cert).map_err(|e| file_error(path, e))?;
            }
            if roots.is_empty() {
                return Err(file_error(path, "no certificate in the file"));
            }
        }
        None if cfg.insecure_skip_verify => {}
        None => {
            system_roots(&mut roots);
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_error(cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error(cert, e))?;
            if chain.is_empty() {
                return Err(file_error(cert, "no certificate in the file"));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Config(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Config(
                "a client certificate needs both cert and key".into(),
            ));
        }
    };
    if cfg.insecure_skip_verify {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(SkipVerify(provider)));
    }
    Ok(Arc::new(config))
}

/// Where Unix systems keep their CA bundle (Debian/Ubuntu/Alpine/Arch, Fedora/RHEL, openSUSE,
/// FreeBSD, macOS's exported bundle), tried in order after `SSL_CERT_FILE`.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

/// The operating system's trusted roots, read from its CA bundle file (`SSL_CERT_FILE`, else
/// the first bundle found). Read directly rather than through rustls-native-certs, which on
/// Apple targets links Security.framework (C). Unparsable entries are skipped; an empty
/// result fails in the caller.
fn system_roots(roots: &mut RootCertStore) {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        let Ok(certs) = CertificateDer::pem_file_iter(&path) else {
            continue;
        };
        roots.add_parsable_certificates(certs.filter_map(Result::ok));
        if !roots.is_empty() {
            return;
        }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => addr,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Runs the TLS handshake over `stream`, verifying the server against the host of `addr`.
pub async fn connect(
    stream: BoxTransport,
    addr: &str,
    cfg: &TlsConfig,
) -> Result<BoxTransport, TlsError> {
    let config = client_config(cfg)?;
    let host = host_of(addr);
    if cfg.insecure_skip_verify {
        tracing::warn!(
            "TLS certificate verification is OFF for {addr} (ssl insecure_skip_verify): \
             the connection is not protected against impersonation"
        );
    }
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| TlsError::InvalidServerName(host.to_owned()))?;
    let tls = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| classify(&e, host))?;
    Ok(Box::new(tls))
}

/// Maps a handshake error (rustls' error inside the I/O error) to a [`TlsError`].
fn classify(e: &io::Error, host: &str) -> TlsError {
    let Some(err) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return TlsError::Handshake(e.to_string());
    };
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => TlsError::UntrustedCertificate,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsError::HostnameMismatch {
                    host: host.to_owned(),
                }
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsError::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsError::NotYetValid
            }
            other => TlsError::InvalidCertificate(format!("{other:?}")),
        },
        other => TlsError::Handshake(other.to_string()),
    }
}

/// Accepts any certificate for any name, but still checks the handshake signatures (so the
/// peer at least holds the key of the certificate it sent).
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("broker-1:9093"), "broker-1");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn system_roots_load_when_the_system_has_a_bundle() {
        if !SYSTEM_BUNDLES.iter().any(|p| Path::new(p).is_file()) {
            return;
        }
        client_config(&TlsConfig::default()).unwrap();
    }

    #[test]
    fn a_changed_clone_does_not_reuse_the_built_config() {
        let insecure = TlsConfig::default().insecure_skip_verify(true);
        let first = client_config(&insecure).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &client_config(&insecure.clone()).unwrap()
        ));
        let mut changed = insecure.clone();
        changed.ca = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            client_config(&changed),
            Err(TlsError::File { .. })
        ));
    }

    #[test]
    fn missing_ca_file_is_a_file_error() {
        let cfg = TlsConfig::default().ca("/nonexistent/ca.pem");
        assert!(matches!(client_config(&cfg), Err(TlsError::File { .. })));
    }
}
