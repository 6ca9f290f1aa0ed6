//! The admin client against the broker: topics with configs, per-topic errors, configs read
//! and changed, partitions added, topics listed, offsets looked up (earliest, latest, by
//! timestamp) and the cluster described. Where the broker does not offer an API (tansu 0.6
//! has no CreatePartitions), the test holds the client to a typed "unsupported" error instead.
//!
//! tansu 0.6 departs from Kafka in a few answers; each test asserts Kafka's answer on Kafka
//! and tansu's exact answer on tansu (recognised by its cluster id), so a change on either
//! side shows up:
//! - CreateTopics accepts 0 partitions (Kafka: INVALID_PARTITIONS).
//! - ListOffsets "latest" is the last batch's base offset + 1, not the high watermark, so it
//!   is short by the last batch's extra records.
//! - ListOffsets by timestamp searches append times, and a timestamp after every record
//!   answers offset 0 instead of none; the max-timestamp query (-3) closes the connection.

use std::time::Duration;

use bus::admin::{Admin, AlterConfigOp, ConfigResource, IsolationLevel, NewTopic, OffsetSpec};
use bus::{Client, ClientConfig, Error, RequestError};
use bytes::BytesMut;
use integration_tests::{bootstrap, is_tansu, now_ms, produce_batch, unique_topic};
use kafka_proto::messages::CreatePartitionsRequest;
use kafka_proto::records::{BatchEncoder, BatchParams};
use kafka_proto::{ApiKey, ErrorCode, VersionError};

const T0: i64 = 1_710_000_000_000;

async fn admin(addr: &str) -> Admin {
    Client::connect(ClientConfig::new([addr]))
        .await
        .unwrap()
        .admin()
}

/// Produces one batch of `timestamps.len()` records to `partition`; returns its base offset.
async fn produce(client: &Client, topic: &str, partition: i32, timestamps: &[i64]) -> i64 {
    let mut buf = BytesMut::new();
    let mut batch = BatchEncoder::new(&mut buf, BatchParams::default());
    for (i, ts) in timestamps.iter().enumerate() {
        batch
            .append(*ts, None, Some(format!("r{i}").as_bytes()), &[])
            .unwrap();
    }
    produce_batch(client, topic, partition, batch.finish().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn topics_are_created_with_configs_and_per_topic_errors_are_typed() {
    let Some(addr) = bootstrap() else { return };
    let admin = admin(&addr).await;
    let topic = unique_topic("admin-create");

    let created = admin
        .create_topic(
            NewTopic::new(&topic)
                .partitions(3)
                .replication_factor(1)
                .config("retention.ms", "3600000"),
        )
        .await
        .unwrap();
    assert_eq!(created.name, topic);
    if let Some(n) = created.partitions {
        assert_eq!(n, 3);
    }
    let md = admin.client().topic(&topic).await.unwrap();
    assert_eq!(md.partition_count(), 3);

    // A batch where one topic exists: that topic fails with its code and name, the other is
    // created.
    let other = unique_topic("admin-create-other");
    let results = admin
        .create_topics(&[
            NewTopic::new(&topic).partitions(1).replication_factor(1),
            NewTopic::new(&other).partitions(2).replication_factor(1),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    let existing = results.iter().find(|(n, _)| *n == topic).unwrap();
    match &existing.1 {
        Err(Error::Broker { code, context, .. }) => {
            assert_eq!(*code, ErrorCode::TopicAlreadyExists);
            assert_eq!(context.as_deref(), Some(topic.as_str()));
        }
        other => panic!("expected TOPIC_ALREADY_EXISTS, got {other:?}"),
    }
    let fresh = results.iter().find(|(n, _)| *n == other).unwrap();
    assert!(fresh.1.is_ok(), "{fresh:?}");
    assert_eq!(
        admin
            .client()
            .topic(&other)
            .await
            .unwrap()
            .partition_count(),
        2
    );

    let err = admin
        .create_topic(NewTopic::new(&topic).partitions(1).replication_factor(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists), "{err}");
    assert!(err.to_string().contains("TOPIC_ALREADY_EXISTS"), "{err}");

    // An impossible partition count is the broker's typed error.
    let bad = unique_topic("admin-bad");
    let result = admin
        .create_topic(NewTopic::new(&bad).partitions(0).replication_factor(1))
        .await;
    if is_tansu(admin.client()) {
        assert_eq!(result.unwrap().partitions, Some(0));
        admin.delete_topic(&bad).await.unwrap();
    } else {
        let err = result.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidPartitions), "{err}");
    }

    admin.delete_topics(&[&topic, &other]).await.unwrap();
}

#[tokio::test]
async fn configs_are_described_and_changed_incrementally() {
    let Some(addr) = bootstrap() else { return };
    let admin = admin(&addr).await;
    let topic = unique_topic("admin-configs");
    admin
        .create_topic(
            NewTopic::new(&topic)
                .partitions(1)
                .replication_factor(1)
                .config("retention.ms", "3600000"),
        )
        .await
        .unwrap();

    let resource = ConfigResource::Topic(topic.clone());
    let configs = admin.describe_config(resource.clone()).await.unwrap();
    let retention = configs
        .get("retention.ms")
        .unwrap_or_else(|| panic!("retention.ms missing from {configs:?}"));
    assert_eq!(retention.value.as_deref(), Some("3600000"));

    admin
        .alter_configs(
            &resource,
            &[AlterConfigOp::Set("retention.ms".into(), "7200000".into())],
            false,
        )
        .await
        .unwrap();
    let configs = admin.describe_config(resource.clone()).await.unwrap();
    assert_eq!(
        configs.get("retention.ms").and_then(|e| e.value.as_deref()),
        Some("7200000"),
        "{configs:?}"
    );

    // Several resources in one call answer each on its own; an unknown topic is its error.
    let missing = ConfigResource::Topic(unique_topic("admin-configs-missing"));
    let answers = admin
        .describe_configs(&[resource.clone(), missing.clone()])
        .await
        .unwrap();
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().any(|(r, a)| *r == resource && a.is_ok()));
    let (_, missing_answer) = answers.iter().find(|(r, _)| *r == missing).unwrap();
    // Kafka answers UNKNOWN_TOPIC_OR_PARTITION; a broker that answers an empty config set
    // instead must at least not invent retention.ms for it.
    match missing_answer {
        Err(e) => assert!(e.code().is_some(), "{e}"),
        Ok(entries) => assert!(
            entries
                .iter()
                .all(|e| e.name != "retention.ms" || e.value.as_deref() != Some("7200000")),
            "{entries:?}"
        ),
    }

    admin.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn partitions_are_added_where_the_broker_offers_it() {
    let Some(addr) = bootstrap() else { return };
    let admin = admin(&addr).await;
    let topic = unique_topic("admin-partitions");
    admin
        .create_topic(NewTopic::new(&topic).partitions(1).replication_factor(1))
        .await
        .unwrap();
    let offered = admin
        .client()
        .any_broker()
        .await
        .unwrap()
        .version_for::<CreatePartitionsRequest>()
        .is_ok();
    let result = admin.create_partitions(&topic, 3, &[]).await;
    if offered {
        result.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            admin.client().invalidate();
            if admin
                .client()
                .topic(&topic)
                .await
                .unwrap()
                .partition_count()
                == 3
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "partitions never appeared"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let err = admin.create_partitions(&topic, 2, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidPartitions), "{err}");
    } else {
        match result {
            Err(Error::Request(RequestError::Version(VersionError::NotSupportedByBroker {
                api,
                ..
            }))) => assert_eq!(api, ApiKey::CreatePartitions),
            other => panic!("expected a typed unsupported-API error, got {other:?}"),
        }
    }
    admin.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn topics_are_listed_and_deleted_with_per_topic_errors() {
    let Some(addr) = bootstrap() else { return };
    let admin = admin(&addr).await;
    let topic = unique_topic("admin-list");
    admin
        .create_topic(NewTopic::new(&topic).partitions(2).replication_factor(1))
        .await
        .unwrap();
    let listed = admin.list_topics(false).await.unwrap();
    let entry = listed
        .iter()
        .find(|t| t.name == topic)
        .unwrap_or_else(|| panic!("{topic} not in {listed:?}"));
    assert_eq!(entry.partitions, 2);
    assert!(!entry.is_internal);
    assert!(listed.windows(2).all(|w| w[0].name <= w[1].name), "sorted");

    let missing = unique_topic("admin-never-existed");
    let results = admin.delete_topics(&[&topic, &missing]).await.unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    for (name, result) in &results {
        if *name == topic {
            assert!(result.is_ok(), "{result:?}");
        } else {
            assert_eq!(name, &missing);
            let err = result.as_ref().unwrap_err();
            assert_eq!(
                err.code(),
                Some(ErrorCode::UnknownTopicOrPartition),
                "{err}"
            );
        }
    }
    let listed = admin.list_topics(false).await.unwrap();
    assert!(
        listed.iter().all(|t| t.name != topic),
        "deleted topic still listed"
    );
}

#[tokio::test]
async fn offsets_are_listed_per_leader_by_earliest_latest_and_timestamp() {
    let Some(addr) = bootstrap() else { return };
    let admin = admin(&addr).await;
    let topic = unique_topic("admin-offsets");
    admin
        .create_topic(NewTopic::new(&topic).partitions(2).replication_factor(1))
        .await
        .unwrap();
    // Partition 0: offsets 0-2 in one batch, 3-4 in a later one; partition 1: empty.
    let t_first = now_ms();
    let base = produce(admin.client(), &topic, 0, &[t_first; 3]).await;
    assert_eq!(base, 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t_mid = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t_second = now_ms();
    let base = produce(admin.client(), &topic, 0, &[t_second, t_second + 1]).await;
    assert_eq!(base, 3);
    let tansu = is_tansu(admin.client());

    let t = topic.as_str();
    let earliest = admin
        .list_offset(t, 0, OffsetSpec::Earliest, IsolationLevel::ReadUncommitted)
        .await
        .unwrap();
    assert_eq!(earliest.offset, Some(0));

    let answers = admin
        .list_offsets(
            &[(t, 0, OffsetSpec::Latest), (t, 1, OffsetSpec::Latest)],
            IsolationLevel::ReadUncommitted,
        )
        .await
        .unwrap();
    let expected_latest = if tansu { 4 } else { 5 };
    assert_eq!(answers[0].as_ref().unwrap().offset, Some(expected_latest));
    assert_eq!(answers[1].as_ref().unwrap().offset, Some(0));

    let by_time = |ts| {
        admin.list_offset(
            t,
            0,
            OffsetSpec::Timestamp(ts),
            IsolationLevel::ReadUncommitted,
        )
    };
    assert_eq!(by_time(T0).await.unwrap().offset, Some(0));
    assert_eq!(by_time(t_first).await.unwrap().offset, Some(0));
    assert_eq!(by_time(t_mid).await.unwrap().offset, Some(3));
    let after_all = by_time(now_ms() + 3_600_000).await.unwrap();
    let expected = if tansu { Some(0) } else { None };
    assert_eq!(after_all.offset, expected, "{after_all:?}");
    if !tansu {
        let max = admin
            .list_offset(
                t,
                0,
                OffsetSpec::MaxTimestamp,
                IsolationLevel::ReadUncommitted,
            )
            .await
            .unwrap();
        assert_eq!(max.offset, Some(4), "{max:?}");
    }

    // A partition that does not exist is that entry's error; the others still answer.
    let answers = admin
        .list_offsets(
            &[(t, 0, OffsetSpec::Earliest), (t, 9, OffsetSpec::Earliest)],
            IsolationLevel::ReadUncommitted,
        )
        .await
        .unwrap();
    assert_eq!(answers[0].as_ref().unwrap().offset, Some(0));
    assert!(
        matches!(
            answers[1],
            Err(Error::UnknownPartition { partition: 9, .. })
        ),
        "{:?}",
        answers[1]
    );

    let err = admin
        .list_offsets(
            &[(t, 0, OffsetSpec::Earliest), (t, 0, OffsetSpec::Latest)],
            IsolationLevel::ReadUncommitted,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    admin.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn the_cluster_is_described() {
    let Some(addr) = bootstrap() else { return };
    let admin = admin(&addr).await;
    let cluster = admin.describe_cluster().await.unwrap();
    assert!(!cluster.brokers.is_empty());
    let port: i32 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        cluster.brokers.iter().any(|b| b.port == port),
        "the bootstrap broker is one of {:?}",
        cluster.brokers
    );
    assert!(
        cluster
            .cluster_id
            .as_deref()
            .is_some_and(|id| !id.is_empty())
    );
    if let Some(id) = cluster.controller_id {
        assert!(cluster.brokers.iter().any(|b| b.node_id == id));
    }
}
