//! The connection against a scripted in-memory peer: no sockets, virtual time.

use std::time::Duration;

use bus::error::ConnectionFailure;
use bus::{Connection, ConnectionConfig, RequestError};
use bytes::{Bytes, BytesMut};
use kafka_proto::envelope::decode_request;
use kafka_proto::messages::api_versions_response::ApiVersion;
use kafka_proto::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, ResponseHeader,
};
use kafka_proto::version::response_header_version;
use kafka_proto::{ApiKey, Encode, ErrorCode, FrameSplitter, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The broker side of a duplex pipe: reads whole request frames, writes response frames.
struct Peer {
    io: DuplexStream,
    splitter: FrameSplitter,
}

impl Peer {
    async fn next_request(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = self.splitter.next_frame().unwrap() {
                return Some(f);
            }
            let mut buf = [0u8; 4096];
            let n = self.io.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            self.splitter.push(&buf[..n]);
        }
    }

    async fn reply<R: Response>(&mut self, correlation_id: i32, version: i16, body: &R) {
        let mut frame = BytesMut::new();
        let mut header = ResponseHeader::default();
        header.correlation_id = correlation_id;
        header
            .encode(&mut frame, response_header_version(R::API_KEY, version))
            .unwrap();
        body.encode(&mut frame, version).unwrap();
        self.io
            .write_all(&(frame.len() as i32).to_be_bytes())
            .await
            .unwrap();
        self.io.write_all(&frame).await.unwrap();
    }

    /// Answers the connection's ApiVersions handshake, offering Metadata v0-12.
    async fn handshake(&mut self) {
        let frame = self.next_request().await.unwrap();
        let (header, _req) = decode_request::<ApiVersionsRequest>(frame).unwrap();
        let mut resp = ApiVersionsResponse::default();
        for (k, max) in [(ApiKey::ApiVersions, 3), (ApiKey::Metadata, 12)] {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.max_version = max;
            resp.api_keys.push(v);
        }
        self.reply(header.correlation_id, header.request_api_version, &resp)
            .await;
    }
}

async fn connected(config: ConnectionConfig) -> (Connection, Peer) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let mut peer = Peer {
        io: server,
        splitter: FrameSplitter::new(),
    };
    let (conn, ()) = tokio::join!(
        async { Connection::handshake(client, "peer", config).await.unwrap() },
        peer.handshake()
    );
    (conn, peer)
}

fn metadata_with_cluster(id: &str) -> MetadataResponse {
    let mut m = MetadataResponse::default();
    m.cluster_id = Some(id.into());
    m
}

#[tokio::test]
async fn negotiates_and_matches_out_of_order_responses() {
    let (conn, mut peer) = connected(ConnectionConfig::default()).await;
    assert_eq!(conn.version_for::<MetadataRequest>().unwrap(), 12);
    let a = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    let first = peer.next_request().await.unwrap();
    let b = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    let second = peer.next_request().await.unwrap();
    let (h1, _) = decode_request::<MetadataRequest>(first).unwrap();
    let (h2, _) = decode_request::<MetadataRequest>(second).unwrap();
    assert_eq!(h1.request_api_version, 12);
    assert_ne!(h1.correlation_id, h2.correlation_id);
    // Answer the second request first.
    peer.reply(h2.correlation_id, 12, &metadata_with_cluster("second"))
        .await;
    peer.reply(h1.correlation_id, 12, &metadata_with_cluster("first"))
        .await;
    assert_eq!(
        a.await.unwrap().unwrap().cluster_id.as_deref(),
        Some("first")
    );
    assert_eq!(
        b.await.unwrap().unwrap().cluster_id.as_deref(),
        Some("second")
    );
    assert_eq!(conn.in_flight(), 0);
}

#[tokio::test]
async fn a_pinned_version_is_used_or_refused() {
    let (conn, mut peer) =
        connected(ConnectionConfig::default().pin_version(ApiKey::Metadata, 4)).await;
    let pending = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    let (h, _) = decode_request::<MetadataRequest>(peer.next_request().await.unwrap()).unwrap();
    assert_eq!(h.request_api_version, 4);
    peer.reply(h.correlation_id, 4, &MetadataResponse::default())
        .await;
    pending.await.unwrap().unwrap();

    let (conn, _peer) =
        connected(ConnectionConfig::default().pin_version(ApiKey::Metadata, 13)).await;
    assert!(matches!(
        conn.send(&MetadataRequest::default()).await,
        Err(RequestError::Version(_))
    ));
}

#[tokio::test]
async fn peer_close_fails_every_in_flight_request_with_one_cause() {
    let (conn, mut peer) = connected(ConnectionConfig::default()).await;
    let mut pending = Vec::new();
    for _ in 0..3 {
        let c = conn.clone();
        pending.push(tokio::spawn(async move {
            c.send(&MetadataRequest::default()).await
        }));
        peer.next_request().await.unwrap();
    }
    drop(peer);
    let mut causes = Vec::new();
    for p in pending {
        match p.await.unwrap() {
            Err(RequestError::ConnectionClosed { cause, .. }) => causes.push(cause),
            other => panic!("expected ConnectionClosed, got {other:?}"),
        }
    }
    assert!(matches!(*causes[0], ConnectionFailure::Eof));
    assert!(
        causes.iter().all(|c| std::sync::Arc::ptr_eq(c, &causes[0])),
        "one shared cause"
    );
    assert!(conn.is_closed());
    // Later requests fail at once with the same cause.
    match conn.send(&MetadataRequest::default()).await {
        Err(RequestError::ConnectionClosed { cause, .. }) => {
            assert!(std::sync::Arc::ptr_eq(&cause, &causes[0]))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_request_does_not_poison_the_connection() {
    let config = ConnectionConfig::default().request_timeout(Duration::from_secs(5));
    let (conn, mut peer) = connected(config).await;
    let slow = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    let (h, _) = decode_request::<MetadataRequest>(peer.next_request().await.unwrap()).unwrap();
    // Virtual time: this returns as soon as the runtime is idle past the deadline.
    assert!(
        matches!(slow.await.unwrap(), Err(RequestError::Timeout(d)) if d == Duration::from_secs(5))
    );
    assert_eq!(conn.in_flight(), 0, "the timed-out request was forgotten");
    // Its late answer is dropped, and the connection keeps working.
    peer.reply(h.correlation_id, 12, &MetadataResponse::default())
        .await;
    let next = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    let (h2, _) = decode_request::<MetadataRequest>(peer.next_request().await.unwrap()).unwrap();
    peer.reply(h2.correlation_id, 12, &metadata_with_cluster("ok"))
        .await;
    assert_eq!(
        next.await.unwrap().unwrap().cluster_id.as_deref(),
        Some("ok")
    );
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn an_oversized_frame_poisons_the_connection_before_allocating() {
    let mut config = ConnectionConfig::default();
    config.max_frame_size = 4096;
    let (conn, mut peer) = connected(config).await;
    let pending = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    peer.next_request().await.unwrap();
    peer.io
        .write_all(&(1i32 << 30).to_be_bytes())
        .await
        .unwrap();
    match pending.await.unwrap() {
        Err(RequestError::ConnectionClosed { cause, .. }) => {
            assert!(matches!(
                *cause,
                ConnectionFailure::Frame(kafka_proto::DecodeError::FrameTooLarge { .. })
            ))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_response_for_an_unknown_correlation_id_poisons_the_connection() {
    let (conn, mut peer) = connected(ConnectionConfig::default()).await;
    let pending = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    peer.next_request().await.unwrap();
    peer.reply(1_000_000, 12, &MetadataResponse::default())
        .await;
    assert!(matches!(
        pending.await.unwrap(),
        Err(RequestError::ConnectionClosed { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_throttled_connection_holds_the_next_request_until_the_throttle_ends() {
    let (conn, mut peer) = connected(ConnectionConfig::default()).await;
    let first = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    let (h, _) = decode_request::<MetadataRequest>(peer.next_request().await.unwrap()).unwrap();
    let mut throttled = metadata_with_cluster("t");
    throttled.throttle_time_ms = 2_000;
    peer.reply(h.correlation_id, 12, &throttled).await;
    first.await.unwrap().unwrap();

    let answered_at = tokio::time::Instant::now();
    let _second = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    // KIP-219: the broker answered at once; we must stay quiet for 2 s of (virtual) time.
    peer.next_request().await.unwrap();
    let waited = answered_at.elapsed();
    assert!(
        waited >= Duration::from_millis(2_000) && waited < Duration::from_millis(2_100),
        "the request was written after {waited:?}"
    );
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_socket() {
    let (conn, mut peer) = connected(ConnectionConfig::default()).await;
    drop(conn);
    // The peer sees end of stream instead of a connection that lingers forever.
    assert!(peer.next_request().await.is_none());
}

#[tokio::test]
async fn a_cancelled_request_leaves_the_stream_in_step() {
    let (conn, mut peer) = connected(ConnectionConfig::default()).await;
    let cancelled = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    let (h1, _) = decode_request::<MetadataRequest>(peer.next_request().await.unwrap()).unwrap();
    cancelled.abort();
    let _ = cancelled.await;
    assert_eq!(conn.in_flight(), 0, "the dropped future forgot its request");
    let next = tokio::spawn({
        let c = conn.clone();
        async move { c.send(&MetadataRequest::default()).await }
    });
    let (h2, _) = decode_request::<MetadataRequest>(peer.next_request().await.unwrap()).unwrap();
    // The answer to the cancelled request arrives first and must not be taken for the next.
    peer.reply(h1.correlation_id, 12, &metadata_with_cluster("stale"))
        .await;
    peer.reply(h2.correlation_id, 12, &metadata_with_cluster("fresh"))
        .await;
    assert_eq!(
        next.await.unwrap().unwrap().cluster_id.as_deref(),
        Some("fresh")
    );
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn an_old_broker_answering_apiversions_in_v0_form_is_understood() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let mut peer = Peer {
        io: server,
        splitter: FrameSplitter::new(),
    };
    let broker = async {
        // First attempt: a version this "broker" does not know. KIP-511: answer v0-shaped
        // UNSUPPORTED_VERSION with our own ApiVersions range (0-2).
        let frame = peer.next_request().await.unwrap();
        let (h, _) = decode_request::<ApiVersionsRequest>(frame).unwrap();
        assert!(h.request_api_version > 2);
        let mut resp = ApiVersionsResponse::default();
        resp.error_code = ErrorCode::UnsupportedVersion.code();
        let mut v = ApiVersion::default();
        v.api_key = ApiKey::ApiVersions as i16;
        v.max_version = 2;
        resp.api_keys.push(v);
        peer.reply(h.correlation_id, 0, &resp).await;
        // The retry comes at v2; answer it properly.
        let (h2, _) =
            decode_request::<ApiVersionsRequest>(peer.next_request().await.unwrap()).unwrap();
        assert_eq!(h2.request_api_version, 2);
        let mut ok = ApiVersionsResponse::default();
        for (k, max) in [(ApiKey::ApiVersions, 2), (ApiKey::Metadata, 9)] {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.max_version = max;
            ok.api_keys.push(v);
        }
        peer.reply(h2.correlation_id, 2, &ok).await;
    };
    let (conn, ()) = tokio::join!(
        async {
            Connection::handshake(client, "old", ConnectionConfig::default())
                .await
                .unwrap()
        },
        broker
    );
    assert_eq!(conn.version_for::<MetadataRequest>().unwrap(), 9);
}

#[tokio::test]
async fn a_oneway_send_returns_only_once_its_frame_is_written() {
    // A pipe with 64 KiB of room: the handshake fits; a 200 KB frame cannot be written until
    // the peer reads.
    let (conn, mut peer) = connected(ConnectionConfig::default()).await;
    let mut req = MetadataRequest::default();
    let mut topics = Vec::new();
    for i in 0..20_000 {
        let mut t = kafka_proto::messages::metadata_request::MetadataRequestTopic::default();
        t.name = Some(format!("topic-{i:05}"));
        topics.push(t);
    }
    req.topics = Some(topics);
    let sent = tokio::spawn({
        let c = conn.clone();
        async move { c.send_oneway(&req).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!sent.is_finished(), "returned before the frame left");
    let frame = peer.next_request().await.unwrap();
    assert!(frame.len() > 200_000);
    sent.await.unwrap().unwrap();
    assert_eq!(conn.in_flight(), 0, "nothing waits for a reply");
}
