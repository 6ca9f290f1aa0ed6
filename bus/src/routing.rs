//! Two routing rules the admin client and the consumer share with each other (and that the
//! client could absorb later):
//!
//! - A request whose shape depends on the version (Fetch names topics by id from v13, KIP-516;
//!   DeleteTopics switches to structs at v6; ListOffsets gains fields at v2, v4, v7) must be
//!   built *after* the version is known and sent at exactly that version, on the connection it
//!   was negotiated on. [`send_versioned`] does that in one place.
//! - Which partition-level error codes mean "the client's metadata is stale, refresh and
//!   re-route" rather than "this request is wrong" ([`is_stale_metadata`]), and which mean
//!   "find the group coordinator again" ([`is_coordinator_moved`]).
//! - Where a consumer group's coordinator is ([`find_group_coordinator`]), for the group
//!   member and the group admin alike.

use kafka_proto::messages::FindCoordinatorRequest;
use kafka_proto::{ErrorCode, Request};

use crate::client::Client;
use crate::connection::Connection;
use crate::error::Error;

/// Sends to broker `node` a request built by `build` for the version that broker will receive.
/// A connection failure drops the pooled connection and marks metadata stale, as
/// [`Client::send_to`] does, so the caller's retry dials afresh and re-routes.
pub(crate) async fn send_versioned<R: Request>(
    client: &Client,
    node: i32,
    build: impl FnOnce(i16) -> Result<R, Error>,
) -> Result<R::Response, Error> {
    let conn = client.broker(node).await?;
    send_versioned_on(client, &conn, build).await
}

/// [`send_versioned`] waiting up to `timeout` for the answer (JoinGroup: a rebalance).
pub(crate) async fn send_versioned_with_timeout<R: Request>(
    client: &Client,
    node: i32,
    timeout: std::time::Duration,
    build: impl FnOnce(i16) -> Result<R, Error>,
) -> Result<R::Response, Error> {
    let conn = client.broker(node).await?;
    send_versioned_within(client, &conn, timeout, build).await
}

/// [`send_versioned`] on a connection the caller already holds (the controller, any broker).
pub(crate) async fn send_versioned_on<R: Request>(
    client: &Client,
    conn: &Connection,
    build: impl FnOnce(i16) -> Result<R, Error>,
) -> Result<R::Response, Error> {
    send_versioned_within(client, conn, conn.request_timeout(), build).await
}

/// The one build-after-negotiation send: every form above comes here, the plain ones with
/// the connection's request timeout (as [`Connection::send_at`] uses).
async fn send_versioned_within<R: Request>(
    client: &Client,
    conn: &Connection,
    timeout: std::time::Duration,
    build: impl FnOnce(i16) -> Result<R, Error>,
) -> Result<R::Response, Error> {
    let version = conn.version_for::<R>()?;
    let req = build(version)?;
    conn.send_at_with_timeout(&req, version, timeout)
        .await
        .map_err(|e| client.request_failed(conn, e))
}

/// Whether a partition-level error says the client asked the wrong broker, or asked with an
/// outdated leader epoch or topic id: the fix is a metadata refresh, then a retry.
pub(crate) fn is_stale_metadata(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeaderOrFollower
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::ReplicaNotAvailable
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::UnknownTopicId
            | ErrorCode::InconsistentTopicId
            | ErrorCode::KafkaStorageError
            | ErrorCode::NotController
    )
}

/// Whether a group coordinator's error says it is not (or not yet) the group's coordinator:
/// the fix is to find the coordinator again, then retry. Kafka retries
/// COORDINATOR_LOAD_IN_PROGRESS in place; asking again costs one FindCoordinator.
pub(crate) fn is_coordinator_moved(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
    )
}

/// FindCoordinator's key type for a consumer group (1 is a transactional id).
const GROUP_KEY_TYPE: i8 = 0;

/// One FindCoordinator for consumer group `group`, asked of any broker: the coordinator's node
/// id. v4+ batches keys (KIP-699); older versions take one key. A coordinator the broker names
/// as node -1 without an error is COORDINATOR_NOT_AVAILABLE, which is retriable. The caller
/// decides how to retry.
pub(crate) async fn find_group_coordinator(client: &Client, group: &str) -> Result<i32, Error> {
    let conn = client.any_broker().await?;
    let resp = send_versioned_on(client, &conn, |version| {
        let mut req = FindCoordinatorRequest {
            key_type: GROUP_KEY_TYPE,
            ..Default::default()
        };
        if version >= 4 {
            req.coordinator_keys = vec![group.to_owned()];
        } else {
            req.key = group.to_owned();
        }
        Ok(req)
    })
    .await?;
    let (code, message, node) = if let Some(c) = resp.coordinators.iter().find(|c| c.key == group) {
        (c.error_code, c.error_message.clone(), c.node_id)
    } else if resp.coordinators.is_empty() {
        (resp.error_code, resp.error_message.clone(), resp.node_id)
    } else {
        return Err(Error::Protocol(format!(
            "FindCoordinator lacks group {group:?}"
        )));
    };
    match ErrorCode::from_code(code) {
        ErrorCode::None if node >= 0 => Ok(node),
        ErrorCode::None => Err(Error::broker(
            ErrorCode::CoordinatorNotAvailable,
            message,
            format!("coordinator of group {group}"),
        )),
        code => Err(Error::broker(
            code,
            message,
            format!("coordinator of group {group}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routing_errors_ask_for_a_refresh() {
        assert!(is_stale_metadata(ErrorCode::NotLeaderOrFollower));
        assert!(is_stale_metadata(ErrorCode::FencedLeaderEpoch));
        assert!(is_stale_metadata(ErrorCode::UnknownTopicId));
        assert!(!is_stale_metadata(ErrorCode::OffsetOutOfRange));
        assert!(!is_stale_metadata(ErrorCode::TopicAuthorizationFailed));
        assert!(!is_stale_metadata(ErrorCode::None));
    }

    #[test]
    fn only_coordinator_errors_ask_for_a_rediscovery() {
        assert!(is_coordinator_moved(ErrorCode::NotCoordinator));
        assert!(is_coordinator_moved(ErrorCode::CoordinatorNotAvailable));
        assert!(is_coordinator_moved(ErrorCode::CoordinatorLoadInProgress));
        assert!(!is_coordinator_moved(ErrorCode::RebalanceInProgress));
        assert!(!is_coordinator_moved(ErrorCode::NotLeaderOrFollower));
        assert!(!is_coordinator_moved(ErrorCode::None));
    }
}
