//! The traits every generated message implements, and the per-API version table's row type.
//!
//! Routing by type (franz-go's kmsg, rskafka's associated response types): a `Request` names
//! its `Response`, so a client's `send::<R>()` returns the right type without a runtime match.

use std::fmt::Debug;

use crate::messages::ApiKey;
use crate::wire::{Decode, Encode};

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    pub min: i16,
    pub max: i16,
}

impl VersionRange {
    pub const fn new(min: i16, max: i16) -> Self {
        VersionRange { min, max }
    }

    pub const fn contains(&self, v: i16) -> bool {
        self.min <= v && v <= self.max
    }

    /// The versions both ranges contain, if any.
    pub fn intersect(&self, other: &VersionRange) -> Option<VersionRange> {
        let r = VersionRange::new(self.min.max(other.min), self.max.min(other.max));
        (r.min <= r.max).then_some(r)
    }

    pub fn iter(&self) -> impl Iterator<Item = i16> + use<> {
        self.min..=self.max
    }
}

/// A message body, header or data type from the spec.
pub trait Message:
    Encode + Decode + Default + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The spec's name, e.g. `"MetadataRequest"`.
    const NAME: &'static str;
    /// Every version the spec defines (including an unstable latest one).
    const VALID_VERSIONS: VersionRange;
    /// The first version using compact encodings and tagged fields (KIP-482), if any.
    const FIRST_FLEXIBLE_VERSION: Option<i16>;

    fn is_flexible(version: i16) -> bool {
        Self::FIRST_FLEXIBLE_VERSION.is_some_and(|f| version >= f)
    }
}

/// A request body; its response type is fixed by the API.
pub trait Request: Message {
    const API_KEY: ApiKey;
    type Response: Response<Request = Self>;
}

/// A response body.
pub trait Response: Message {
    const API_KEY: ApiKey;
    type Request: Request<Response = Self>;

    /// How long the broker asks the client to hold off this connection (KIP-219), in
    /// milliseconds; 0 for responses that carry no such field.
    fn throttle_time_ms(&self) -> i32 {
        0
    }
}

/// One row of the API table: what the spec says about an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiInfo {
    pub key: ApiKey,
    /// The API's name without the Request/Response suffix, e.g. `"Metadata"`.
    pub name: &'static str,
    /// Every version the spec defines.
    pub valid: VersionRange,
    /// The versions this crate will send: `valid` minus a latest version the spec marks
    /// unstable (`latestVersionUnstable`), which brokers may still change incompatibly.
    /// `None` when the API has no stable version yet.
    pub supported: Option<VersionRange>,
    pub deprecated: Option<VersionRange>,
    pub first_flexible: Option<i16>,
    pub latest_version_unstable: bool,
    /// Which Kafka roles serve the API ("broker", "controller", "zkBroker").
    pub listeners: &'static [&'static str],
}
