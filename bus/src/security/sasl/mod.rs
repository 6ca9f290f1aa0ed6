//! SASL over Kafka requests: SaslHandshake v1 names the mechanism, then SaslAuthenticate
//! frames carry the mechanism's messages (KIP-152), so authentication runs on the ordinary
//! connection after ApiVersions. SaslAuthenticate v1+ reports the session lifetime the broker
//! allows; the connection re-authenticates before it ends (KIP-368).

pub mod oauthbearer;
pub mod plain;
pub mod scram;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_proto::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_proto::{ApiKey, ErrorCode};
use thiserror::Error;

use super::{SaslConfig, SaslMechanism, SecurityError};
use crate::connection::Connection;
use crate::error::RequestError;
use scram::{ScramClient, ScramHash};

/// Why SASL authentication failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslError {
    /// The broker rejected the credentials (wrong password, unknown user, bad token).
    #[error("authentication failed: {message}")]
    AuthenticationFailed { message: String },
    /// The broker does not enable the configured mechanism.
    #[error("mechanism {mechanism} is not enabled on the broker (enabled: {enabled:?})")]
    MechanismNotEnabled {
        mechanism: String,
        enabled: Vec<String>,
    },
    /// The broker does not speak SaslHandshake v1 + SaslAuthenticate (pre-1.0 brokers).
    #[error("the broker does not support SaslHandshake v1 and SaslAuthenticate")]
    Unsupported,
    /// SCRAM: the server's signature does not prove it knows the password.
    #[error("SCRAM server signature does not verify")]
    BadServerSignature,
    /// SCRAM: the server nonce does not extend the client's.
    #[error("SCRAM server nonce does not extend the client nonce")]
    NonceMismatch,
    /// SCRAM: fewer iterations than RFC 7677's minimum of 4096.
    #[error("SCRAM iteration count {got} is below the minimum of 4096")]
    IterationCountTooLow { got: u32 },
    /// OAUTHBEARER: the token callback failed.
    #[error("no OAUTHBEARER token: {0}")]
    Token(String),
    /// A message that does not follow the mechanism's grammar.
    #[error("malformed SASL message: {0}")]
    Malformed(String),
    /// The broker answered a SASL request with an unexpected error code.
    #[error("broker error {code}: {message}")]
    Broker { code: String, message: String },
}

fn sasl_error(addr: &str, e: SaslError) -> RequestError {
    RequestError::Security {
        addr: addr.to_owned(),
        source: Arc::new(SecurityError::Sasl(e)),
    }
}

/// A server message of a text mechanism (SCRAM).
fn utf8(bytes: &[u8]) -> Result<&str, SaslError> {
    std::str::from_utf8(bytes).map_err(|_| SaslError::Malformed("not UTF-8".into()))
}

/// Authenticates `conn` with `cfg`. Returns the session lifetime the broker granted, if any.
pub(crate) async fn authenticate(
    conn: &Connection,
    cfg: &SaslConfig,
) -> Result<Option<Duration>, RequestError> {
    let addr = conn.addr();
    let fail = |e| sasl_error(addr, e);
    let versions = conn.broker_versions();
    let handshake_ok = versions
        .get(ApiKey::SaslHandshake)
        .is_some_and(|r| r.max >= 1);
    if !handshake_ok || versions.get(ApiKey::SaslAuthenticate).is_none() {
        return Err(fail(SaslError::Unsupported));
    }
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = cfg.mechanism.name().to_owned();
    let resp = conn.send_ungated(&hs, 1, conn.request_timeout()).await?;
    match ErrorCode::from_code(resp.error_code) {
        ErrorCode::None => {}
        ErrorCode::UnsupportedSaslMechanism => {
            return Err(fail(SaslError::MechanismNotEnabled {
                mechanism: hs.mechanism,
                enabled: resp.mechanisms,
            }));
        }
        code => {
            return Err(fail(SaslError::Broker {
                code: code.name().to_owned(),
                message: String::new(),
            }));
        }
    }
    let auth_version = conn.version_for::<SaslAuthenticateRequest>()?;
    let step = |bytes: Vec<u8>| async move {
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(bytes);
        let resp = conn
            .send_ungated(&req, auth_version, conn.request_timeout())
            .await?;
        match ErrorCode::from_code(resp.error_code) {
            ErrorCode::None => Ok((resp.auth_bytes, resp.session_lifetime_ms)),
            ErrorCode::SaslAuthenticationFailed => Err(fail(SaslError::AuthenticationFailed {
                message: resp
                    .error_message
                    .unwrap_or_else(|| "SASL_AUTHENTICATION_FAILED".into()),
            })),
            code => Err(fail(SaslError::Broker {
                code: code.name().to_owned(),
                message: resp.error_message.unwrap_or_default(),
            })),
        }
    };
    let lifetime_ms = match cfg.mechanism {
        SaslMechanism::Plain => {
            let msg = plain::initial_response(&cfg.username, cfg.password.expose());
            step(msg).await?.1
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let hash = if cfg.mechanism == SaslMechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let nonce = scram::random_nonce().map_err(fail)?;
            let mut client = ScramClient::new(hash, &cfg.username, cfg.password.expose(), nonce);
            let (server_first, _) = step(client.client_first().into_bytes()).await?;
            let client_final = utf8(&server_first)
                .and_then(|m| client.client_final(m))
                .map_err(fail)?;
            let (server_final, lifetime) = step(client_final.into_bytes()).await?;
            utf8(&server_final)
                .and_then(|m| client.verify_server_final(m))
                .map_err(fail)?;
            lifetime
        }
        SaslMechanism::OAuthBearer => {
            let token = match &cfg.token_callback {
                Some(cb) => cb.token().await.map_err(|e| fail(SaslError::Token(e)))?,
                None => cfg.password.clone(),
            };
            let (challenge, lifetime) = step(oauthbearer::initial_response(token.expose())).await?;
            if !challenge.is_empty() {
                // A JSON error: acknowledge it, then report what the broker said.
                let detail = String::from_utf8_lossy(&challenge).into_owned();
                let _ = step(oauthbearer::ERROR_ACK.to_vec()).await;
                return Err(fail(SaslError::AuthenticationFailed { message: detail }));
            }
            lifetime
        }
    };
    Ok((lifetime_ms > 0).then(|| Duration::from_millis(lifetime_ms as u64)))
}

/// When to re-authenticate a session of `lifetime`: at a jittered 85-95 % of it, so many
/// connections opened together do not all re-authenticate at once, and there is slack
/// before the broker closes the connection.
pub fn reauth_delay(lifetime: Duration, random: u64) -> Duration {
    let permille = 850 + random % 101;
    lifetime.mul_f64(permille as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reauth_is_between_85_and_95_percent() {
        let life = Duration::from_secs(10);
        for r in [0, 1, 50, 100, u64::MAX] {
            let d = reauth_delay(life, r);
            assert!(d >= Duration::from_millis(8500) && d <= Duration::from_millis(9500));
        }
        assert_eq!(reauth_delay(life, 0), Duration::from_millis(8500));
        assert_eq!(reauth_delay(life, 100), Duration::from_millis(9500));
    }
}
