//! Version negotiation and header versions: the one place that decides which version of an
//! API goes on the wire (KIP-35 ApiVersions, KIP-511, KIP-482 for flexible headers).

use std::collections::BTreeMap;

use thiserror::Error;

use crate::message::VersionRange;
use crate::messages::{ApiKey, ApiVersionsResponse};

/// Why no version of an API can be sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VersionError {
    /// The broker does not list the API, or lists no version we also speak.
    #[error(
        "{api:?} is not supported by this broker (broker offers {broker:?}, this client speaks {ours:?})"
    )]
    NotSupportedByBroker {
        api: ApiKey,
        ours: VersionRange,
        broker: Option<VersionRange>,
    },
    /// The user pinned a version that the client and broker cannot both speak.
    #[error("{api:?} is pinned to v{pin}, but only {usable:?} is usable with this broker")]
    PinUnavailable {
        api: ApiKey,
        pin: i16,
        usable: Option<VersionRange>,
    },
    /// This client has no stable version of the API (the spec marks it unstable).
    #[error("{api:?} has no stable version in this client")]
    NotSupportedByClient { api: ApiKey },
}

/// Picks the version to send: the highest version in both `ours` and `broker`, or exactly
/// `pin` if given and usable. `broker` is `None` when the broker's ApiVersions answer does not
/// list the API. Every request this project sends goes through here.
pub fn negotiate_version(
    api: ApiKey,
    ours: VersionRange,
    broker: Option<VersionRange>,
    pin: Option<i16>,
) -> Result<i16, VersionError> {
    let usable = broker.and_then(|b| b.intersect(&ours));
    match (pin, usable) {
        (Some(pin), Some(u)) if u.contains(pin) => Ok(pin),
        (Some(pin), _) => Err(VersionError::PinUnavailable { api, pin, usable }),
        (None, Some(u)) => Ok(u.max),
        (None, None) => Err(VersionError::NotSupportedByBroker { api, ours, broker }),
    }
}

/// The versions this crate will send for `api`: the spec's valid range less an unstable latest.
pub fn client_versions(api: ApiKey) -> Result<VersionRange, VersionError> {
    api.info()
        .supported
        .ok_or(VersionError::NotSupportedByClient { api })
}

/// What one broker said it supports, from its ApiVersions response. Keys we do not know are
/// kept by number so a newer broker's answer still reads cleanly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerVersions {
    ranges: BTreeMap<i16, VersionRange>,
}

impl BrokerVersions {
    pub fn from_response(resp: &ApiVersionsResponse) -> Self {
        let ranges = resp
            .api_keys
            .iter()
            .filter(|k| k.min_version <= k.max_version)
            .map(|k| (k.api_key, VersionRange::new(k.min_version, k.max_version)))
            .collect();
        BrokerVersions { ranges }
    }

    pub fn get(&self, api: ApiKey) -> Option<VersionRange> {
        self.ranges.get(&(api as i16)).copied()
    }

    /// Negotiates against this broker using the client's full stable range.
    pub fn negotiate(&self, api: ApiKey, pin: Option<i16>) -> Result<i16, VersionError> {
        negotiate_version(api, client_versions(api)?, self.get(api), pin)
    }
}

/// Request header version for `api` at `version`: v2 (flexible, tagged fields) from the API's
/// first flexible version, v1 before it. ControlledShutdown v0 alone used header v0.
pub fn request_header_version(api: ApiKey, version: i16) -> i16 {
    match api.info().first_flexible {
        Some(f) if version >= f => 2,
        _ if api == ApiKey::ControlledShutdown && version == 0 => 0,
        _ => 1,
    }
}

/// Response header version for `api` at `version`: v1 for flexible versions, v0 otherwise —
/// except ApiVersions, whose response header is always v0 so a client that does not yet know
/// the broker's versions can still read the answer (KIP-511).
pub fn response_header_version(api: ApiKey, version: i16) -> i16 {
    if api == ApiKey::ApiVersions {
        return 0;
    }
    match api.info().first_flexible {
        Some(f) if version >= f => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::api_versions_response::ApiVersion;

    #[test]
    fn picks_the_highest_common_version() {
        let ours = VersionRange::new(0, 12);
        assert_eq!(
            negotiate_version(ApiKey::Metadata, ours, Some(VersionRange::new(1, 9)), None),
            Ok(9)
        );
        assert_eq!(
            negotiate_version(ApiKey::Metadata, ours, Some(VersionRange::new(4, 20)), None),
            Ok(12)
        );
    }

    #[test]
    fn honours_a_usable_pin_and_rejects_an_unusable_one() {
        let ours = VersionRange::new(0, 12);
        let broker = Some(VersionRange::new(1, 9));
        assert_eq!(
            negotiate_version(ApiKey::Metadata, ours, broker, Some(4)),
            Ok(4)
        );
        assert_eq!(
            negotiate_version(ApiKey::Metadata, ours, broker, Some(10)),
            Err(VersionError::PinUnavailable {
                api: ApiKey::Metadata,
                pin: 10,
                usable: Some(VersionRange::new(1, 9))
            })
        );
    }

    #[test]
    fn reports_apis_the_broker_lacks() {
        let ours = VersionRange::new(3, 5);
        for broker in [
            None,
            Some(VersionRange::new(0, 2)),
            Some(VersionRange::new(6, 9)),
        ] {
            assert!(matches!(
                negotiate_version(ApiKey::Fetch, ours, broker, None),
                Err(VersionError::NotSupportedByBroker {
                    api: ApiKey::Fetch,
                    ..
                })
            ));
        }
    }

    #[test]
    fn unstable_latest_versions_are_not_offered() {
        let info = ApiKey::ConsumerGroupHeartbeat.info();
        assert!(info.latest_version_unstable);
        assert_eq!(info.supported.map(|r| r.max), Some(info.valid.max - 1));
        assert!(matches!(
            client_versions(ApiKey::ShareFetch),
            Err(VersionError::NotSupportedByClient { .. })
        ));
        assert_eq!(
            client_versions(ApiKey::Produce),
            Ok(ApiKey::Produce.info().valid)
        );
    }

    #[test]
    fn broker_versions_from_an_api_versions_answer() {
        let mut resp = ApiVersionsResponse::default();
        for (k, min, max) in [(3, 0, 9), (18, 0, 3), (999, 0, 1)] {
            let mut v = ApiVersion::default();
            v.api_key = k;
            v.min_version = min;
            v.max_version = max;
            resp.api_keys.push(v);
        }
        let bv = BrokerVersions::from_response(&resp);
        assert_eq!(bv.negotiate(ApiKey::Metadata, None), Ok(9));
        assert_eq!(bv.negotiate(ApiKey::ApiVersions, None), Ok(3));
        assert!(bv.negotiate(ApiKey::Produce, None).is_err());
    }

    #[test]
    fn header_versions_follow_flexibility_with_the_api_versions_exception() {
        assert_eq!(request_header_version(ApiKey::Metadata, 8), 1);
        assert_eq!(request_header_version(ApiKey::Metadata, 9), 2);
        assert_eq!(response_header_version(ApiKey::Metadata, 8), 0);
        assert_eq!(response_header_version(ApiKey::Metadata, 9), 1);
        assert_eq!(request_header_version(ApiKey::ApiVersions, 3), 2);
        assert_eq!(response_header_version(ApiKey::ApiVersions, 3), 0);
        assert_eq!(request_header_version(ApiKey::ControlledShutdown, 0), 0);
        assert_eq!(request_header_version(ApiKey::Produce, 9), 2);
        assert_eq!(response_header_version(ApiKey::Produce, 8), 0);
    }
}
