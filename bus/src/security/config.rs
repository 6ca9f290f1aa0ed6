//! Security settings: the protocol (Kafka's `security.protocol` names), TLS files and SASL
//! credentials. Deserializable (serde) with unknown fields refused, so a typo in the bus TOML
//! is an error instead of a silently plaintext connection.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

/// Kafka's `security.protocol`. Default [`SecurityProtocol::Plaintext`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[non_exhaustive]
pub enum SecurityProtocol {
    #[default]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// Parses Kafka's names (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`), any case.
    pub fn from_name(name: &str) -> Option<SecurityProtocol> {
        Some(match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// A SASL mechanism, by its IANA name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
}

impl SaslMechanism {
    /// The name sent in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        Some(match name.to_ascii_uppercase().as_str() {
            "PLAIN" => SaslMechanism::Plain,
            "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
            "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
            "OAUTHBEARER" => SaslMechanism::OAuthBearer,
            _ => return None,
        })
    }
}

/// A password or token. Its `Debug` and `Display` print `***`, so a config logged with `{:?}`
/// never leaks it; read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// The future a [`TokenCallback`] returns: the bearer token, or why none is available.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<Secret, String>> + Send>>;

/// Supplies OAUTHBEARER tokens. Called on every authentication (each new connection and each
/// re-authentication), so it can return a refreshed token; cache inside it if fetching is
/// expensive.
#[derive(Clone)]
pub struct TokenCallback(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenCallback {
    pub fn new<F, Fut>(f: F) -> TokenCallback
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Secret, String>> + Send + 'static,
    {
        TokenCallback(Arc::new(move || Box::pin(f())))
    }

    pub(crate) fn token(&self) -> TokenFuture {
        (self.0)()
    }
}

impl fmt::Debug for TokenCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCallback(..)")
    }
}

/// The settings a built rustls configuration came from.
pub(crate) type TlsKey = (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>, bool);

/// A built rustls configuration and the settings it came from.
pub(crate) type BuiltTls = (TlsKey, Arc<rustls::ClientConfig>);

/// TLS options (`[bus.kafka.security.ssl]`).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM file of the CA certificates to trust. Default `None`: the operating system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for mutual TLS. Needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Accepts any server certificate and name. Default `false`. For test rigs only: it makes
    /// TLS worthless against an active attacker, and a warning is logged on every connection.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The rustls configuration built from the files, with the settings it was built from:
    /// clones share it (the files are read once, not on every connection), and a clone whose
    /// settings were changed rebuilds. Replacing a file on disk needs a new `TlsConfig`.
    #[serde(skip)]
    pub(crate) built: Arc<Mutex<Option<BuiltTls>>>,
}

/// The settings only: file paths and the flag. The built rustls configuration (root
/// certificates, the client's certified key) stays out, so a logged config is short and carries
/// no key material.
impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl TlsConfig {
    /// Whether these settings are the ones `key` was taken from (compared in place: no
    /// path is cloned on a connection's cache hit).
    pub(crate) fn built_from(&self, key: &TlsKey) -> bool {
        let (ca, cert, k, skip) = key;
        (ca, cert, k, *skip) == (&self.ca, &self.cert, &self.key, self.insecure_skip_verify)
    }

    pub(crate) fn key(&self) -> TlsKey {
        (
            self.ca.clone(),
            self.cert.clone(),
            self.key.clone(),
            self.insecure_skip_verify,
        )
    }

    pub fn ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// Client certificate and key for mutual TLS.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    pub fn insecure_skip_verify(mut self, skip: bool) -> Self {
        self.insecure_skip_verify = skip;
        self
    }
}

/// SASL options (`[bus.kafka.security.sasl]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    /// The user (PLAIN, SCRAM). Empty for OAUTHBEARER.
    #[serde(default)]
    pub username: String,
    /// The password (PLAIN, SCRAM); for OAUTHBEARER without a callback, a static token.
    #[serde(default)]
    pub password: Secret,
    /// OAUTHBEARER token source; set in code (not from TOML).
    #[serde(skip)]
    pub token_callback: Option<TokenCallback>,
}

impl SaslConfig {
    pub fn new(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> SaslConfig {
        SaslConfig {
            mechanism,
            username: username.into(),
            password: password.into(),
            token_callback: None,
        }
    }

    /// OAUTHBEARER with tokens from `callback`.
    pub fn oauthbearer(callback: TokenCallback) -> SaslConfig {
        SaslConfig {
            mechanism: SaslMechanism::OAuthBearer,
            username: String::new(),
            password: Secret::default(),
            token_callback: Some(callback),
        }
    }
}

/// How connections are secured (`[bus.kafka.security]`). Default: plaintext, no SASL.
///
/// In TOML the protocol is `security_protocol` (Kafka's `security.protocol`, the name the
/// kbus flag `--security-protocol` uses too); `protocol` is accepted as an alias, and giving
/// both is an error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SecurityConfig {
    /// `PLAINTEXT` (default), `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    #[serde(default, rename = "security_protocol", alias = "protocol")]
    pub protocol: SecurityProtocol,
    /// TLS settings; with `SSL`/`SASL_SSL` and none given, the system roots are trusted.
    #[serde(default, rename = "ssl")]
    pub tls: Option<TlsConfig>,
    /// Required with `SASL_PLAINTEXT`/`SASL_SSL`.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
}

impl SecurityConfig {
    pub fn new(protocol: SecurityProtocol) -> SecurityConfig {
        SecurityConfig {
            protocol,
            tls: None,
            sasl: None,
        }
    }

    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn sasl(mut self, sasl: SaslConfig) -> Self {
        self.sasl = Some(sasl);
        self
    }

    /// Rejects combinations that cannot work, or would silently not do what was asked.
    pub fn validate(&self) -> Result<(), String> {
        let p = self.protocol;
        if p.uses_sasl() && self.sasl.is_none() {
            return Err(format!("security protocol {p:?} needs sasl settings"));
        }
        if !p.uses_sasl() && self.sasl.is_some() {
            return Err(format!(
                "sasl settings given but security protocol {p:?} does not use SASL"
            ));
        }
        if !p.uses_tls() && self.tls.is_some() {
            return Err(format!(
                "ssl settings given but security protocol {p:?} does not use TLS"
            ));
        }
        if let Some(tls) = &self.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return Err("a client certificate needs both ssl cert and ssl key".into());
        }
        if let Some(sasl) = &self.sasl {
            match sasl.mechanism {
                SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                    if sasl.username.is_empty() {
                        return Err(format!("sasl {} needs a username", sasl.mechanism.name()));
                    }
                }
                SaslMechanism::OAuthBearer => {
                    if sasl.token_callback.is_none() && sasl.password.expose().is_empty() {
                        return Err("sasl OAUTHBEARER needs a token callback or a token".into());
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrapper {
        security: SecurityConfig,
    }

    #[test]
    fn toml_as_the_bus_config_embeds_it() {
        let w: Wrapper = toml::from_str(
            r#"
            [security]
            security_protocol = "SASL_SSL"
            ssl = { ca = "/etc/kafka/ca.pem" }
            sasl = { mechanism = "SCRAM-SHA-256", username = "alice", password = "hunter2" }
            "#,
        )
        .unwrap();
        let s = w.security;
        assert_eq!(s.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            s.tls.as_ref().unwrap().ca.as_deref(),
            Some(std::path::Path::new("/etc/kafka/ca.pem"))
        );
        let sasl = s.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha256);
        assert_eq!(sasl.password.expose(), "hunter2");
        s.validate().unwrap();
        // The secret never shows in Debug output.
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***"));
    }

    #[test]
    fn protocol_is_an_alias_of_security_protocol() {
        for key in ["security_protocol", "protocol"] {
            let w: Wrapper = toml::from_str(&format!("[security]\n{key} = \"SSL\"")).unwrap();
            assert_eq!(w.security.protocol, SecurityProtocol::Ssl, "{key}");
        }
        // Both at once is ambiguous, even when they agree.
        let both = "[security]\nsecurity_protocol = \"SSL\"\nprotocol = \"SSL\"";
        let e = toml::from_str::<Wrapper>(both).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
    }

    #[test]
    fn tls_debug_names_the_files_not_the_built_config() {
        let tls = TlsConfig::default().insecure_skip_verify(true);
        // Fills the cache the clones share with a built rustls config.
        crate::security::tls::client_config(&tls).unwrap();
        assert!(tls.built.lock().unwrap().is_some());
        assert_eq!(
            format!("{tls:?}"),
            "TlsConfig { ca: None, cert: None, key: None, insecure_skip_verify: true }"
        );
        let files = TlsConfig::default()
            .ca("/etc/kafka/ca.pem")
            .client_cert("/etc/kafka/me.pem", "/etc/kafka/me-key.pem");
        assert_eq!(
            format!("{files:?}"),
            "TlsConfig { ca: Some(\"/etc/kafka/ca.pem\"), cert: Some(\"/etc/kafka/me.pem\"), \
             key: Some(\"/etc/kafka/me-key.pem\"), insecure_skip_verify: false }"
        );
    }

    #[test]
    fn unknown_fields_and_names_are_refused() {
        for bad in [
            "[security]\nprotocol = \"SSL\"\nssl = { cafile = \"x\" }",
            "[security]\nprotocol = \"TLS\"",
            "[security]\nprotcol = \"SSL\"",
            "[security]\nprotocol = \"SASL_SSL\"\nsasl = { mechanism = \"GSSAPI\" }",
        ] {
            assert!(toml::from_str::<Wrapper>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_rejects_contradictions() {
        assert!(
            SecurityConfig::new(SecurityProtocol::SaslSsl)
                .validate()
                .is_err()
        );
        assert!(
            SecurityConfig::new(SecurityProtocol::Plaintext)
                .tls(TlsConfig::default())
                .validate()
                .is_err()
        );
        let mut half = TlsConfig::default();
        half.cert = Some("c.pem".into());
        assert!(
            SecurityConfig::new(SecurityProtocol::Ssl)
                .tls(half)
                .validate()
                .is_err()
        );
        assert!(
            SecurityConfig::new(SecurityProtocol::SaslPlaintext)
                .sasl(SaslConfig::new(SaslMechanism::Plain, "", "p"))
                .validate()
                .is_err()
        );
        SecurityConfig::new(SecurityProtocol::SaslPlaintext)
            .sasl(SaslConfig::new(SaslMechanism::Plain, "u", "p"))
            .validate()
            .unwrap();
    }
}
