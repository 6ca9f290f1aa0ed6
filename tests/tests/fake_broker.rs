//! The in-process fake cluster (`integration_tests::fake`) checked two ways: the real `bus`
//! client produces and consumes through it, including under injected faults, and raw group
//! protocol exchanges follow Kafka's classic coordinator rules. Everything runs in paused
//! tokio time: no sockets, no sleeping.

use std::time::Duration;

use bus::consumer::{ConsumerConfig, Offset, PartitionConsumer};
use bus::producer::{Producer, ProducerConfig, Record};
use bus::{Client, Error};
use bytes::Bytes;
use integration_tests::fake::{Action, FakeCluster, GroupState, RawClient};
use kafka_proto::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_proto::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_proto::messages::leave_group_request::MemberIdentity;
use kafka_proto::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_proto::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_proto::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_proto::messages::*;
use kafka_proto::{ApiKey, ErrorCode};
use tokio::time::Instant;

async fn client(fake: &FakeCluster) -> Client {
    Client::connect(fake.client_config()).await.unwrap()
}

async fn consume_n(consumer: &mut PartitionConsumer, n: usize) -> Vec<(i32, i64, Bytes)> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.poll_batch())
            .await
            .unwrap_or_else(|_| panic!("stuck after {} records", out.len()));
        for r in batch.unwrap() {
            out.push((r.partition, r.offset, r.value.unwrap_or_default()));
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn produce_and_consume_through_the_fake() {
    let fake = FakeCluster::with_topics(3, &[("t", 3)]);
    let client = client(&fake).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..90 {
        let rec = Record::new("t").partition(i % 3).value(format!("v{i}"));
        deliveries.push(producer.send(rec).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut next = [0i64; 3];
    for (i, d) in deliveries.into_iter().enumerate() {
        let md = d.await.unwrap();
        assert_eq!(md.partition, (i % 3) as i32);
        assert_eq!(
            md.offset,
            Some(next[i % 3]),
            "offsets are dense per partition"
        );
        next[i % 3] += 1;
    }
    for p in 0..3 {
        assert_eq!(fake.high_watermark("t", p), Some(30));
        // Each partition's produce went to its leader (p % 3).
        assert_eq!(fake.leader("t", p), Some(p));
    }

    let mut consumer = PartitionConsumer::new(client, ConsumerConfig::default()).unwrap();
    consumer
        .assign((0..3).map(|p| ("t", p, Offset::Earliest)))
        .unwrap();
    let got = consume_n(&mut consumer, 90).await;
    for p in 0..3 {
        let values: Vec<_> = got.iter().filter(|r| r.0 == p).collect();
        assert_eq!(values.len(), 30);
        for (k, r) in values.iter().enumerate() {
            assert_eq!(r.1, k as i64);
            assert_eq!(r.2, Bytes::from(format!("v{}", p as usize + 3 * k)));
        }
    }
    // Nothing else arrives.
    let more = tokio::time::timeout(Duration::from_secs(5), consumer.poll_batch()).await;
    assert!(more.is_err() || more.unwrap().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn produce_retries_not_leader_after_a_metadata_refresh() {
    let fake = FakeCluster::with_topics(2, &[("t", 1)]);
    let client = client(&fake).await;
    let producer = Producer::new(client, ProducerConfig::default())
        .await
        .unwrap();
    fake.fail_next(ApiKey::Produce, 2, ErrorCode::NotLeaderOrFollower);
    let metadata_before = fake.count(ApiKey::Metadata);
    let md = producer
        .send(Record::new("t").value("x"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(md.offset, Some(0));
    assert_eq!(fake.count(ApiKey::Produce), 3, "two refused, one written");
    assert!(
        fake.count(ApiKey::Metadata) > metadata_before,
        "NOT_LEADER refreshes metadata"
    );
    assert_eq!(fake.batches("t", 0), vec![(0, 0)], "written once");
}

#[tokio::test(start_paused = true)]
async fn produce_follows_a_moved_leader() {
    let fake = FakeCluster::with_topics(2, &[("t", 1)]);
    let client = client(&fake).await;
    let producer = Producer::new(client, ProducerConfig::default())
        .await
        .unwrap();
    producer
        .send(Record::new("t").value("a"))
        .await
        .unwrap()
        .await
        .unwrap();
    fake.move_leader("t", 0, 1);
    let md = producer
        .send(Record::new("t").value("b"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(md.offset, Some(1));
    let produce_nodes: Vec<i32> = fake
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::Produce)
        .map(|r| r.node)
        .collect();
    assert_eq!(produce_nodes.first(), Some(&0));
    assert_eq!(produce_nodes.last(), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn a_delayed_produce_answers_late_in_virtual_time() {
    let fake = FakeCluster::with_topics(1, &[("t", 1)]);
    let client = client(&fake).await;
    let producer = Producer::new(client, ProducerConfig::default())
        .await
        .unwrap();
    fake.hook_once(ApiKey::Produce, |_| Action::Delay(Duration::from_secs(7)));
    let start = Instant::now();
    producer
        .send(Record::new("t").value("x"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_secs(7));
    assert!(start.elapsed() < Duration::from_secs(8));
}

#[tokio::test(start_paused = true)]
async fn consumer_survives_a_dropped_fetch_connection() {
    let fake = FakeCluster::with_topics(1, &[("t", 1)]);
    let client = client(&fake).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..5 {
        // Delivery is checked through the consumer below.
        drop(
            producer
                .send(Record::new("t").value(format!("{i}")))
                .await
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    let connections = fake.connections(0);
    fake.hook_once(ApiKey::Fetch, |_| Action::DropConnection);
    let mut consumer = PartitionConsumer::new(client, ConsumerConfig::default()).unwrap();
    consumer.assign([("t", 0, Offset::Earliest)]).unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        match consumer.poll_batch().await {
            Ok(batch) => got.extend(batch.into_iter().map(|r| r.offset)),
            // The cut may surface once; the consumer carries on after it.
            Err(Error::Request(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert!(fake.connections(0) > connections, "the client redialed");
}

#[tokio::test(start_paused = true)]
async fn fetch_waits_for_data_or_max_wait() {
    let fake = FakeCluster::with_topics(1, &[("t", 1)]);
    let mut raw = fake.raw(0).await;
    let fetch = |offset: i64| {
        let mut req = FetchRequest::default();
        req.replica_id = -1;
        req.max_wait_ms = 5000;
        req.min_bytes = 1;
        req.max_bytes = 1 << 20;
        let mut t = FetchTopic::default();
        t.topic = "t".into();
        let mut p = FetchPartition::default();
        p.partition = 0;
        p.fetch_offset = offset;
        p.partition_max_bytes = 1 << 20;
        t.partitions.push(p);
        req.topics.push(t);
        req
    };
    let start = Instant::now();
    let resp = raw.send(&fetch(0), 12).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "empty log: the whole max_wait"
    );
    assert_eq!(
        resp.responses[0].partitions[0].records.as_deref(),
        Some(&[][..])
    );

    // A produce during the wait answers the fetch at once.
    let fake2 = fake.clone();
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let client = client(&fake2).await;
        let producer = Producer::new(client, ProducerConfig::default())
            .await
            .unwrap();
        producer
            .send(Record::new("t").value("late"))
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let start = Instant::now();
    let resp = raw.send(&fetch(0), 12).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert!(start.elapsed() < Duration::from_secs(5));
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 1);
    assert!(!p.records.as_ref().unwrap().is_empty());
    producer.await.unwrap();

    // Past the end: OFFSET_OUT_OF_RANGE at once.
    let resp = raw.send(&fetch(7), 12).await.unwrap();
    assert_eq!(
        resp.responses[0].partitions[0].error_code,
        ErrorCode::OffsetOutOfRange.code()
    );
}

#[tokio::test(start_paused = true)]
async fn hooks_see_node_and_group_and_can_swallow() {
    let fake = FakeCluster::new(3);
    fake.move_coordinator("g", 2);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    fake.hook(ApiKey::FindCoordinator, move |ctx| {
        log.lock()
            .unwrap()
            .push((ctx.node, ctx.call, ctx.group().map(str::to_string)));
        if ctx.call == 1 {
            Action::Error(ErrorCode::CoordinatorNotAvailable)
        } else {
            Action::Pass
        }
    });
    let mut raw = fake.raw(1).await;
    let mut req = FindCoordinatorRequest::default();
    req.coordinator_keys = vec!["g".into()];
    let resp = raw.send(&req, 4).await.unwrap();
    assert_eq!(
        resp.coordinators[0].error_code,
        ErrorCode::CoordinatorNotAvailable.code()
    );
    let resp = raw.send(&req, 4).await.unwrap();
    assert_eq!(resp.coordinators[0].error_code, 0);
    assert_eq!(resp.coordinators[0].node_id, 2);
    assert_eq!(resp.coordinators[0].host, "fake-2");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(1, 1, Some("g".to_string())), (1, 2, Some("g".to_string()))]
    );

    // NoReply: the request is swallowed, the connection keeps serving.
    fake.hook_once(ApiKey::Heartbeat, |_| Action::NoReply);
    let mut hb = HeartbeatRequest::default();
    hb.group_id = "g".into();
    let mut raw2 = fake.raw(2).await;
    let swallowed = tokio::time::timeout(Duration::from_secs(60), raw2.send(&hb, 4)).await;
    assert!(swallowed.is_err(), "no answer to a swallowed request");
    assert_eq!(fake.count(ApiKey::Heartbeat), 1);
    let after = raw2.send(&hb, 4).await.unwrap();
    assert_eq!(
        after.error_code,
        ErrorCode::UnknownMemberId.code(),
        "the connection still serves"
    );
}

// ---- raw classic group protocol ----

const SESSION_MS: i32 = 10_000;

fn join_req(
    group: &str,
    member: &str,
    instance: Option<&str>,
    protocols: &[(&str, &[u8])],
) -> JoinGroupRequest {
    let mut req = JoinGroupRequest::default();
    req.group_id = group.into();
    req.session_timeout_ms = SESSION_MS;
    req.rebalance_timeout_ms = 30_000;
    req.member_id = member.into();
    req.group_instance_id = instance.map(str::to_string);
    req.protocol_type = "consumer".into();
    req.protocols = protocols
        .iter()
        .map(|(n, m)| {
            let mut p = JoinGroupRequestProtocol::default();
            p.name = n.to_string();
            p.metadata = Bytes::copy_from_slice(m);
            p
        })
        .collect();
    req
}

/// Joins a new dynamic member at v9: MEMBER_ID_REQUIRED, then the real join.
async fn join_new(
    raw: &mut RawClient,
    group: &str,
    protocols: &[(&str, &[u8])],
) -> JoinGroupResponse {
    let first = raw
        .send(&join_req(group, "", None, protocols), 9)
        .await
        .unwrap();
    assert_eq!(first.error_code, ErrorCode::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    raw.send(&join_req(group, &first.member_id, None, protocols), 9)
        .await
        .unwrap()
}

fn heartbeat(group: &str, member: &str, generation: i32) -> HeartbeatRequest {
    let mut req = HeartbeatRequest::default();
    req.group_id = group.into();
    req.member_id = member.into();
    req.generation_id = generation;
    req
}

fn sync_req(
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &[u8])],
) -> SyncGroupRequest {
    let mut req = SyncGroupRequest::default();
    req.group_id = group.into();
    req.member_id = member.into();
    req.generation_id = generation;
    req.protocol_type = Some("consumer".into());
    req.assignments = assignments
        .iter()
        .map(|(m, a)| {
            let mut x = SyncGroupRequestAssignment::default();
            x.member_id = m.to_string();
            x.assignment = Bytes::copy_from_slice(a);
            x
        })
        .collect();
    req
}

fn commit_req(group: &str, member: &str, generation: i32, offset: i64) -> OffsetCommitRequest {
    let mut req = OffsetCommitRequest::default();
    req.group_id = group.into();
    req.member_id = member.into();
    req.generation_id_or_member_epoch = generation;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = "t".into();
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_leader_epoch = -1;
    t.partitions.push(p);
    req.topics.push(t);
    req
}

#[tokio::test(start_paused = true)]
async fn classic_group_join_sync_heartbeat_leave_and_expiry() {
    let fake = FakeCluster::new(1);
    let mut a = fake.raw(0).await;
    let mut b = fake.raw(0).await;

    // First member: alone, joins generation 1 as leader at once.
    let ja = join_new(
        &mut a,
        "g",
        &[("roundrobin", b"a-rr"), ("range", b"a-range")],
    )
    .await;
    assert_eq!(ja.error_code, 0);
    assert_eq!(ja.generation_id, 1);
    assert_eq!(ja.leader, ja.member_id);
    assert_eq!(ja.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(ja.members.len(), 1);
    let sa = a
        .send(
            &sync_req("g", &ja.member_id, 1, &[(&ja.member_id, b"all")]),
            5,
        )
        .await
        .unwrap();
    assert_eq!((sa.error_code, &sa.assignment[..]), (0, &b"all"[..]));
    assert_eq!(fake.group_state("g").unwrap().state, GroupState::Stable);

    // Second member joins: its join waits until the leader rejoins.
    let second = tokio::spawn(async move {
        let jb = join_new(
            &mut b,
            "g",
            &[("range", b"b-range"), ("roundrobin", b"b-rr")],
        )
        .await;
        (b, jb)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fake.group_state("g").unwrap().state,
        GroupState::PreparingRebalance
    );
    let hb = a.send(&heartbeat("g", &ja.member_id, 1), 4).await.unwrap();
    assert_eq!(hb.error_code, ErrorCode::RebalanceInProgress.code());
    let ja2 = a
        .send(
            &join_req(
                "g",
                &ja.member_id,
                None,
                &[("roundrobin", b"a-rr"), ("range", b"a-range")],
            ),
            9,
        )
        .await
        .unwrap();
    let (mut b, jb) = second.await.unwrap();
    assert_eq!((ja2.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja2.leader, ja.member_id, "the leader stays leader");
    assert_eq!(jb.leader, ja.member_id);
    // The leader's first choice that both support.
    assert_eq!(ja2.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(ja2.members.len(), 2);
    assert!(jb.members.is_empty(), "followers get no member list");
    let b_meta = ja2
        .members
        .iter()
        .find(|m| m.member_id == jb.member_id)
        .unwrap();
    assert_eq!(
        &b_meta.metadata[..],
        b"b-rr",
        "metadata of the chosen protocol"
    );

    // Follower syncs first and waits for the leader's assignment.
    let bid = jb.member_id.clone();
    let follower = tokio::spawn(async move {
        let s = b.send(&sync_req("g", &bid, 2, &[]), 5).await.unwrap();
        (b, s)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sa = a
        .send(
            &sync_req(
                "g",
                &ja.member_id,
                2,
                &[(&ja.member_id, b"p0"), (&jb.member_id, b"p1")],
            ),
            5,
        )
        .await
        .unwrap();
    let (mut b, sb) = follower.await.unwrap();
    assert_eq!(&sa.assignment[..], b"p0");
    assert_eq!(&sb.assignment[..], b"p1");
    assert_eq!(sb.protocol_name.as_deref(), Some("roundrobin"));

    // Stale generation, unknown member.
    let hb = a.send(&heartbeat("g", &ja.member_id, 1), 4).await.unwrap();
    assert_eq!(hb.error_code, ErrorCode::IllegalGeneration.code());
    let hb = a.send(&heartbeat("g", "nobody", 2), 4).await.unwrap();
    assert_eq!(hb.error_code, ErrorCode::UnknownMemberId.code());
    let hb = b.send(&heartbeat("g", &jb.member_id, 2), 4).await.unwrap();
    assert_eq!(hb.error_code, 0);

    // Commits: the current generation may commit; a stale one may not; nor may an admin.
    let c = a
        .send(&commit_req("g", &ja.member_id, 2, 42), 9)
        .await
        .unwrap();
    assert_eq!(c.topics[0].partitions[0].error_code, 0);
    let c = a
        .send(&commit_req("g", &ja.member_id, 1, 43), 9)
        .await
        .unwrap();
    assert_eq!(
        c.topics[0].partitions[0].error_code,
        ErrorCode::IllegalGeneration.code()
    );
    let c = a.send(&commit_req("g", "", -1, 44), 9).await.unwrap();
    assert_eq!(
        c.topics[0].partitions[0].error_code,
        ErrorCode::IllegalGeneration.code()
    );
    assert_eq!(fake.group_state("g").unwrap().committed("t", 0), Some(42));

    // DeleteGroups refuses a group with members.
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec!["g".into(), "nope".into()];
    let d = a.send(&del, 2).await.unwrap();
    assert_eq!(d.results[0].error_code, ErrorCode::NonEmptyGroup.code());
    assert_eq!(d.results[1].error_code, ErrorCode::GroupIdNotFound.code());

    // The follower leaves (v5 batch form): the leader is told to rejoin.
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = "g".into();
    let mut who = MemberIdentity::default();
    who.member_id = jb.member_id.clone();
    leave.members.push(who);
    let l = b.send(&leave, 5).await.unwrap();
    assert_eq!((l.error_code, l.members[0].error_code), (0, 0));
    // Alone, the leader completes the rebalance the moment it rejoins.
    let hb = a.send(&heartbeat("g", &ja.member_id, 2), 4).await.unwrap();
    assert_eq!(hb.error_code, ErrorCode::RebalanceInProgress.code());
    let ja3 = a
        .send(&join_req("g", &ja.member_id, None, &[("range", b"x")]), 9)
        .await
        .unwrap();
    assert_eq!((ja3.error_code, ja3.generation_id), (0, 3));
    assert_eq!(ja3.protocol_name.as_deref(), Some("range"));
    a.send(&sync_req("g", &ja.member_id, 3, &[]), 5)
        .await
        .unwrap();

    // The leader stops heartbeating: after the session timeout it is gone.
    tokio::time::sleep(Duration::from_millis(SESSION_MS as u64 - 100)).await;
    assert_eq!(fake.group_state("g").unwrap().members.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let g = fake.group_state("g").unwrap();
    assert_eq!(
        (g.state, g.members.len(), g.generation),
        (GroupState::Empty, 0, 4)
    );

    // Now an admin commit is allowed, and OffsetFetch (both forms) reads it back.
    let c = a.send(&commit_req("g", "", -1, 50), 9).await.unwrap();
    assert_eq!(c.topics[0].partitions[0].error_code, 0);
    let mut of = OffsetFetchRequest::default();
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = "g".into();
    let mut t = OffsetFetchRequestTopics::default();
    t.name = "t".into();
    t.partition_indexes = vec![0, 1];
    g.topics = Some(vec![t]);
    of.groups.push(g);
    let r = a.send(&of, 9).await.unwrap();
    let parts = &r.groups[0].topics[0].partitions;
    assert_eq!(
        (parts[0].committed_offset, parts[1].committed_offset),
        (50, -1)
    );
    let mut of = OffsetFetchRequest::default();
    of.group_id = "g".into();
    let mut t = OffsetFetchRequestTopic::default();
    t.name = "t".into();
    t.partition_indexes = vec![0];
    of.topics = Some(vec![t]);
    let r = a.send(&of, 7).await.unwrap();
    assert_eq!(r.topics[0].partitions[0].committed_offset, 50);

    let d = a.send(&del, 2).await.unwrap();
    assert_eq!(d.results[0].error_code, 0);
    assert!(fake.group_state("g").is_none());
}

#[tokio::test(start_paused = true)]
async fn static_member_restart_keeps_the_generation_and_fences_the_old_id() {
    let fake = FakeCluster::new(1);
    let mut a = fake.raw(0).await;
    let proto: &[(&str, &[u8])] = &[("range", b"m")];
    // Static members skip MEMBER_ID_REQUIRED.
    let j = a
        .send(&join_req("s", "", Some("inst-1"), proto), 9)
        .await
        .unwrap();
    assert_eq!((j.error_code, j.generation_id), (0, 1));
    a.send(
        &sync_req("s", &j.member_id, 1, &[(&j.member_id, b"mine")]),
        5,
    )
    .await
    .unwrap();

    // Restart: a new connection, empty member id, same instance, same metadata.
    let mut a2 = fake.raw(0).await;
    let j2 = a2
        .send(&join_req("s", "", Some("inst-1"), proto), 9)
        .await
        .unwrap();
    assert_eq!(j2.error_code, 0);
    assert_ne!(j2.member_id, j.member_id);
    assert_eq!(j2.generation_id, 1, "no rebalance");
    assert!(
        j2.skip_assignment,
        "the leader keeps the assignment in place"
    );
    let mut s = sync_req("s", &j2.member_id, 1, &[]);
    s.group_instance_id = Some("inst-1".into());
    let s2 = a2.send(&s, 5).await.unwrap();
    assert_eq!(&s2.assignment[..], b"mine");
    let g = fake.group_state("s").unwrap();
    assert_eq!(
        (g.generation, g.state, g.member_ids()),
        (1, GroupState::Stable, vec![j2.member_id.clone()])
    );

    // The old incarnation is fenced.
    let mut hb = heartbeat("s", &j.member_id, 1);
    hb.group_instance_id = Some("inst-1".into());
    let r = a.send(&hb, 4).await.unwrap();
    assert_eq!(r.error_code, ErrorCode::FencedInstanceId.code());
    let mut c = commit_req("s", &j.member_id, 1, 5);
    c.group_instance_id = Some("inst-1".into());
    let r = a.send(&c, 9).await.unwrap();
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ErrorCode::FencedInstanceId.code()
    );
}

#[tokio::test(start_paused = true)]
async fn group_requests_at_the_old_coordinator_get_not_coordinator() {
    let fake = FakeCluster::new(3);
    fake.move_coordinator("g", 1);
    let mut at1 = fake.raw(1).await;
    let j = join_new(&mut at1, "g", &[("range", b"")]).await;
    assert_eq!(j.error_code, 0);
    fake.move_coordinator("g", 2);
    let r = at1.send(&heartbeat("g", &j.member_id, 1), 4).await.unwrap();
    assert_eq!(r.error_code, ErrorCode::NotCoordinator.code());
    let mut at2 = fake.raw(2).await;
    let r = at2.send(&heartbeat("g", &j.member_id, 1), 4).await.unwrap();
    assert_eq!(r.error_code, 0, "group state moved with the coordinator");

    let mut lg = ListGroupsRequest::default();
    lg.states_filter = vec!["CompletingRebalance".into()];
    let r = at2.send(&lg, 4).await.unwrap();
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].group_state, "CompletingRebalance");
    assert!(at1.send(&lg, 4).await.unwrap().groups.is_empty());
    let mut dg = DescribeGroupsRequest::default();
    dg.groups = vec!["g".into()];
    let r = at2.send(&dg, 5).await.unwrap();
    assert_eq!(r.groups[0].members.len(), 1);
    assert_eq!(r.groups[0].protocol_data, "range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_mode_serves_a_client_without_a_dialer() {
    let fake = FakeCluster::with_topics(2, &[("t", 2)]);
    let bootstrap = fake.listen_tcp().await.unwrap();
    let client = Client::connect(bus::ClientConfig::new([bootstrap]))
        .await
        .unwrap();
    let producer = Producer::new(client, ProducerConfig::default())
        .await
        .unwrap();
    for p in 0..2 {
        let md = producer
            .send(Record::new("t").partition(p).value("over tcp"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(md.offset, Some(0));
    }
    assert_eq!(fake.high_watermark("t", 1), Some(1));
    assert!(
        fake.connections(1) >= 1,
        "the client reached node 1 at its advertised port"
    );
}

#[tokio::test(start_paused = true)]
async fn admin_creates_topics_and_lists_offsets() {
    use bus::admin::NewTopic;
    let fake = FakeCluster::new(3);
    let client = client(&fake).await;
    let admin = client.admin();
    let created = admin
        .create_topics(&[
            NewTopic::new("fresh").partitions(5),
            NewTopic::new("fresh2"),
        ])
        .await
        .unwrap();
    let first = created[0].1.as_ref().unwrap();
    assert_eq!(first.partitions, Some(5));
    assert!(first.topic_id.is_some());
    assert_eq!(
        created[1].1.as_ref().unwrap().partitions,
        Some(1),
        "Kafka's default num.partitions"
    );
    let again = admin
        .create_topics(&[NewTopic::new("fresh")])
        .await
        .unwrap();
    assert_eq!(
        again[0].1.as_ref().unwrap_err().code(),
        Some(ErrorCode::TopicAlreadyExists)
    );
    assert_eq!(client.topic("fresh").await.unwrap().partitions.len(), 5);

    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for _ in 0..3 {
        producer
            .send(Record::new("fresh").partition(4).value("x"))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut consumer = PartitionConsumer::new(client, ConsumerConfig::default()).unwrap();
    // Latest (the default reset) starts at the end: only what comes after is read.
    consumer.assign([("fresh", 4, Offset::Latest)]).unwrap();
    let fake2 = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let producer = Producer::new(
            Client::connect(fake2.client_config()).await.unwrap(),
            ProducerConfig::default(),
        )
        .await
        .unwrap();
        producer
            .send(Record::new("fresh").partition(4).value("new"))
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let got = consume_n(&mut consumer, 1).await;
    assert_eq!((got[0].1, &got[0].2[..]), (3, &b"new"[..]));
}

/// CreateTopics' partition count comes off the wire: above the fake's cap it is refused with
/// INVALID_PARTITIONS before anything is allocated (i32::MAX partitions would be ~100 GB).
#[tokio::test(start_paused = true)]
async fn create_topics_refuses_a_partition_count_above_the_cap() {
    use integration_tests::fake::MAX_PARTITIONS;
    let fake = FakeCluster::new(1);
    let mut raw = fake.raw(0).await;
    let create = |name: &str, n: i32| {
        let mut req = CreateTopicsRequest::default();
        let mut t = create_topics_request::CreatableTopic::default();
        t.name = name.into();
        t.num_partitions = n;
        t.replication_factor = 1;
        req.topics.push(t);
        req.timeout_ms = 1000;
        req
    };
    for (name, n) in [
        ("huge", i32::MAX),
        ("over", MAX_PARTITIONS + 1),
        ("zero", 0),
    ] {
        let resp = raw.send(&create(name, n), 7).await.unwrap();
        assert_eq!(
            ErrorCode::from_code(resp.topics[0].error_code),
            ErrorCode::InvalidPartitions,
            "{name}: {n}"
        );
        assert_eq!(fake.high_watermark(name, 0), None, "{name} was not created");
    }
    let resp = raw
        .send(&create("at-cap", MAX_PARTITIONS), 7)
        .await
        .unwrap();
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].num_partitions, MAX_PARTITIONS);
    assert_eq!(fake.high_watermark("at-cap", MAX_PARTITIONS - 1), Some(0));
}
