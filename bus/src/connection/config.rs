//! Connection options, each default stated with its unit and reason.

use std::collections::HashMap;
use std::time::Duration;

use kafka_proto::ApiKey;
use kafka_proto::frame::DEFAULT_MAX_FRAME_SIZE;

use super::Dialer;
use crate::security::SecurityConfig;

/// Options for one broker connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Sent in every request header; brokers log it and apply quotas by it. Default `"kbus"`.
    pub client_id: Option<String>,
    /// Reported in ApiVersions v3+ (KIP-511). Default `"kbus"`.
    pub client_software_name: String,
    /// Reported in ApiVersions v3+. Default: this crate's version.
    pub client_software_version: String,
    /// TCP connect timeout. Default 10 s: long enough for a cold cloud load balancer.
    pub connect_timeout: Duration,
    /// How long one request may wait for its response. Default 30 s, Kafka's
    /// `request.timeout.ms` default.
    pub request_timeout: Duration,
    /// The largest response frame accepted, checked before allocating. Default 100 MiB.
    pub max_frame_size: usize,
    /// Frames queued for the writer before `send` waits. Default 64.
    pub max_in_flight_frames: usize,
    /// Per-API version pins; negotiation fails rather than silently sending another version.
    pub version_pins: HashMap<ApiKey, i16>,
    /// Where connections come from. Default `None`: TCP to the address. Tests set an
    /// in-process fake broker here.
    pub dialer: Option<Dialer>,
    /// TLS and SASL. Default plaintext. TLS wraps whatever the dialer returns; SASL runs
    /// after ApiVersions.
    pub security: SecurityConfig,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: Some("kbus".into()),
            client_software_name: "kbus".into(),
            client_software_version: env!("CARGO_PKG_VERSION").into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_in_flight_frames: 64,
            version_pins: HashMap::new(),
            dialer: None,
            security: SecurityConfig::default(),
        }
    }
}

impl ConnectionConfig {
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    pub fn pin_version(mut self, api: ApiKey, version: i16) -> Self {
        self.version_pins.insert(api, version);
        self
    }

    pub fn dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = Some(dialer);
        self
    }

    pub fn security(mut self, security: SecurityConfig) -> Self {
        self.security = security;
        self
    }

    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        self.security.validate()?;
        if self.max_in_flight_frames == 0 {
            return Err("max_in_flight_frames must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return Err("request_timeout must be positive".into());
        }
        if self.max_frame_size < 1024 {
            return Err("max_frame_size below 1 KiB cannot hold a metadata response".into());
        }
        Ok(())
    }
}
