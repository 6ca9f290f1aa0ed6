//! Transport security and authentication: TLS around the dialed byte stream (rustls on the
//! ring provider, no OpenSSL), then SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) as ordinary
//! Kafka requests on the connection after ApiVersions, with re-authentication (KIP-368).
//!
//! The configuration ([`SecurityConfig`]) hangs off
//! [`ConnectionConfig::security`](crate::ConnectionConfig::security), so every connection a
//! client opens is secured the same way; it deserializes with serde so the bus TOML can embed
//! it as `[bus.kafka.security]`. Every failure here is typed and never retriable: a wrong
//! password or an untrusted certificate does not get better by dialing again.

pub mod config;
pub mod sasl;
pub mod tls;

pub use config::{
    SaslConfig, SaslMechanism, Secret, SecurityConfig, SecurityProtocol, TlsConfig, TokenCallback,
};
pub use sasl::SaslError;
pub use tls::TlsError;

use thiserror::Error;

/// Why securing a connection failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SecurityError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("SASL: {0}")]
    Sasl(#[from] SaslError),
    /// The security settings contradict each other (a SASL protocol without SASL settings,
    /// SASL or TLS settings under a protocol that does not use them). Refused before dialing,
    /// so nothing is sent unauthenticated that was meant to be authenticated.
    #[error("invalid security configuration: {0}")]
    Config(String),
}
