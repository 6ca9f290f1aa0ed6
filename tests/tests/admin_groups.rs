//! Consumer group administration against the broker: offsets committed from outside a group,
//! the group listed, described and deleted, its lag after producing, and its offsets reset to
//! earliest, latest, a timestamp and an explicit offset (dry run first). An active group (a
//! confluent-kafka consumer in a subprocess) is described with its member and decoded
//! assignment, and resetting it fails with the typed `GroupNotEmpty` error; so is a group of
//! our own `GroupConsumer`, described beside an idle one in one call.
//!
//! Records are produced in multi-record batches on purpose: tansu 0.6 answers ListOffsets
//! "latest" with the last batch's base offset + 1, so a lag computed from it would be short;
//! the admin client takes the high watermark from a Fetch and must get the full count.
//! tansu also looks up timestamps by append time, so the timestamp test stamps records with
//! the wall clock, where both agree. Other tansu 0.6 departures, asserted exactly on tansu:
//! ListGroups reports a group that only holds offsets as state "Unknown"; DescribeGroups
//! leaves the protocol name, client id, host, subscription and assignment of members empty;
//! and DeleteGroups deletes a group under its live members (the admin client refuses first).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bus::Error;
use bus::admin::{Admin, GroupState, ResetSpec};
use bytes::BytesMut;
use integration_tests::{
    bootstrap, client_with_topic, confluent_available, is_tansu, now_ms, produce_batch,
    unique_topic,
};
use kafka_proto::ErrorCode;
use kafka_proto::records::{BatchEncoder, BatchParams};

/// Produces one batch of `n` records stamped with the wall clock; returns its base offset.
async fn batch(client: &bus::Client, topic: &str, partition: i32, n: usize) -> i64 {
    let mut buf = BytesMut::new();
    let mut b = BatchEncoder::new(&mut buf, BatchParams::default());
    for i in 0..n {
        b.append(now_ms(), None, Some(format!("r{i}").as_bytes()), &[])
            .unwrap();
    }
    produce_batch(client, topic, partition, b.finish().unwrap())
        .await
        .unwrap()
}

/// (partition, offset) of every committed offset of `group` on `topic`.
async fn committed(admin: &Admin, group: &str, topic: &str) -> Vec<(i32, i64)> {
    admin
        .group_offsets(group)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.topic == topic)
        .map(|c| (c.partition, c.offset))
        .collect()
}

/// Commits `offsets` for `group` from outside; every partition must be accepted.
async fn alter(admin: &Admin, group: &str, offsets: &[(&str, i32, i64)]) {
    for (t, p, r) in admin.alter_group_offsets(group, offsets).await.unwrap() {
        r.unwrap_or_else(|e| panic!("{t}-{p}: {e}"));
    }
}

#[tokio::test]
async fn offsets_lag_reset_and_delete_of_an_empty_group() {
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "groups-admin", 2).await;
    let admin = client.admin();
    let group = unique_topic("group-admin");

    // p0: 5 records, then (after `mid`) 7 more; p1: 4 records after `mid`.
    assert_eq!(batch(&client, &topic, 0, 5).await, 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mid = now_ms();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(batch(&client, &topic, 0, 7).await, 5);
    assert_eq!(batch(&client, &topic, 1, 4).await, 0);

    let hwms = admin
        .high_watermarks(&[(topic.as_str(), 0), (topic.as_str(), 1)])
        .await
        .unwrap();
    let hwms: Vec<i64> = hwms.into_iter().map(Result::unwrap).collect();
    assert_eq!(hwms, [12, 4]);

    // Commit from outside, as a tool would: p0 first. p1 has no commit yet, and the lag
    // table shows it all the same, without a committed offset or a lag.
    alter(&admin, &group, &[(&topic, 0, 3)]).await;
    let lag: Vec<(i32, Option<i64>, i64, Option<i64>)> = admin
        .group_lag(&group)
        .await
        .unwrap()
        .iter()
        .map(|l| (l.partition, l.committed, l.high_watermark, l.lag))
        .collect();
    assert_eq!(lag, [(0, Some(3), 12, Some(9)), (1, None, 4, None)]);
    alter(&admin, &group, &[(&topic, 1, 4)]).await;
    assert_eq!(committed(&admin, &group, &topic).await, [(0, 3), (1, 4)]);

    let listed = admin.list_groups().await.unwrap();
    let ours = listed
        .iter()
        .find(|g| g.group_id == group)
        .unwrap_or_else(|| panic!("{group} not in {listed:?}"));
    match &ours.state {
        Some(state) if is_tansu(&client) => {
            assert_eq!(*state, GroupState::Other("Unknown".into()))
        }
        Some(state) => assert!(state.is_inactive(), "{state}"),
        None => {}
    }

    let d = admin.describe_group(&group).await.unwrap();
    assert!(d.state.is_inactive(), "{d:?}");
    assert!(d.members.is_empty(), "{d:?}");
    assert_eq!(d.group_id, group);

    let lag = admin.group_lag(&group).await.unwrap();
    let lag: Vec<(i32, Option<i64>, i64, Option<i64>)> = lag
        .iter()
        .map(|l| (l.partition, l.committed, l.high_watermark, l.lag))
        .collect();
    assert_eq!(lag, [(0, Some(3), 12, Some(9)), (1, Some(4), 4, Some(0))]);

    // Dry run: a plan, nothing written.
    let plan = admin
        .reset_group_offsets(&group, &[&topic], ResetSpec::Earliest, true)
        .await
        .unwrap();
    let plan: Vec<(i32, Option<i64>, i64)> = plan
        .iter()
        .map(|r| (r.partition, r.previous, r.new_offset))
        .collect();
    assert_eq!(plan, [(0, Some(3), 0), (1, Some(4), 0)]);
    assert_eq!(committed(&admin, &group, &topic).await, [(0, 3), (1, 4)]);

    let cases = [
        (ResetSpec::Earliest, [(0, 0), (1, 0)]),
        (ResetSpec::Latest, [(0, 12), (1, 4)]),
        // p0's second batch is the first at or after `mid`; all of p1 is.
        (ResetSpec::Timestamp(mid), [(0, 5), (1, 0)]),
        (ResetSpec::Offset(100), [(0, 12), (1, 4)]),
        (ResetSpec::Offset(2), [(0, 2), (1, 2)]),
    ];
    for (spec, want) in cases {
        let applied = admin
            .reset_group_offsets(&group, &[&topic], spec, false)
            .await
            .unwrap();
        assert_eq!(applied.len(), 2, "{spec:?}");
        assert_eq!(committed(&admin, &group, &topic).await, want, "{spec:?}");
    }
    let lag = admin.group_lag(&group).await.unwrap();
    assert_eq!(lag.iter().map(|l| l.lag.unwrap()).sum::<i64>(), 10 + 2);

    // Delete: ours goes, an unknown group is that group's typed error.
    let missing = unique_topic("no-such-group");
    let deleted = admin.delete_groups(&[&group, &missing]).await.unwrap();
    assert_eq!(deleted[0].0, group);
    deleted[0].1.as_ref().unwrap();
    assert_eq!(deleted[1].0, missing);
    match &deleted[1].1 {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::GroupIdNotFound), "{e}"),
        Ok(()) => assert!(is_tansu(&client), "Kafka reports GROUP_ID_NOT_FOUND"),
    }
    assert!(
        !admin
            .list_groups()
            .await
            .unwrap()
            .iter()
            .any(|g| g.group_id == group)
    );
    assert!(committed(&admin, &group, &topic).await.is_empty());
}

/// A confluent-kafka group member: prints `assigned` once it has partitions, then polls until
/// its stdin closes, then leaves the group cleanly.
const CONFLUENT_MEMBER: &str = r#"
import sys, select
import confluent_kafka
boot, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
c = confluent_kafka.Consumer({
    'bootstrap.servers': boot, 'group.id': group, 'client.id': 'cfk-admin-test',
    'auto.offset.reset': 'earliest', 'partition.assignment.strategy': 'range',
    'session.timeout.ms': 10000, 'heartbeat.interval.ms': 500,
})
def on_assign(consumer, partitions):
    sys.stdout.write('assigned %s\n' % ','.join(str(p.partition) for p in partitions))
    sys.stdout.flush()
c.subscribe([topic], on_assign=on_assign)
while True:
    c.poll(0.1)
    r, _, _ = select.select([sys.stdin], [], [], 0)
    if r and not sys.stdin.read(1):
        break
c.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_group_is_described_with_its_member_and_cannot_be_reset() {
    let Some(addr) = bootstrap() else { return };
    if !confluent_available() {
        return;
    }
    let (client, topic) = client_with_topic(&addr, "groups-active", 3).await;
    let admin = client.admin();
    let group = unique_topic("group-active");
    for p in 0..3 {
        batch(&client, &topic, p, 3).await;
    }

    let mut child = Command::new("python3")
        .arg("-c")
        .arg(CONFLUENT_MEMBER)
        .args([&addr, &topic, &group])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .expect("the confluent member never got an assignment")
        .unwrap();
    assert_eq!(line.trim(), "assigned 0,1,2");

    // The coordinator may still be completing the rebalance; wait for Stable.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let d = loop {
        let d = admin.describe_group(&group).await.unwrap();
        if d.state == GroupState::Stable || tokio::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(d.state, GroupState::Stable, "{d:?}");
    assert_eq!(d.protocol_type, "consumer");
    assert_eq!(d.members.len(), 1, "{d:?}");
    let m = &d.members[0];
    assert!(m.member_id.starts_with("cfk-admin-test"), "{m:?}");
    let partitions = m.assignment.partitions().expect("a decoded assignment");
    if is_tansu(&client) {
        // tansu 0.6 describes members bare: no protocol name, client id, host, subscription
        // or assignment.
        assert_eq!(d.protocol, "");
        assert_eq!((m.client_id.as_str(), m.client_host.as_str()), ("", ""));
        assert_eq!(m.subscription, None);
        assert!(partitions.is_empty(), "{m:?}");
    } else {
        assert_eq!(d.protocol, "range");
        assert_eq!(m.client_id, "cfk-admin-test");
        assert_eq!(m.subscription.as_deref(), Some(&[topic.clone()][..]));
        assert_eq!(
            partitions.get(&topic).map(Vec::as_slice),
            Some(&[0, 1, 2][..])
        );
    }

    match admin
        .reset_group_offsets(&group, &[&topic], ResetSpec::Earliest, false)
        .await
    {
        Err(Error::GroupNotEmpty {
            group: g, members, ..
        }) => {
            assert_eq!(g, group);
            assert_eq!(members, 1);
        }
        other => panic!("reset of an active group: {other:?}"),
    }
    // The dry run refuses too: its plan could not be applied.
    assert!(matches!(
        admin
            .reset_group_offsets(&group, &[&topic], ResetSpec::Latest, true)
            .await,
        Err(Error::GroupNotEmpty { .. })
    ));
    let deleted = admin.delete_groups(&[&group]).await.unwrap();
    match &deleted[0].1 {
        Err(Error::GroupNotEmpty { group: g, .. }) => assert_eq!(*g, group),
        other => panic!("deleting an active group: {other:?}"),
    }

    // Once the member leaves, the group is Empty and can be reset.
    drop(child.stdin.take());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = admin.describe_group(&group).await.unwrap();
        if d.members.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member never left: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin
        .reset_group_offsets(&group, &[&topic], ResetSpec::Latest, false)
        .await
        .unwrap();
    assert_eq!(
        committed(&admin, &group, &topic).await,
        [(0, 3), (1, 3), (2, 3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_our_own_consumer_is_described_and_protected() {
    use bus::consumer::{AutoOffsetReset, ConsumerConfig};
    use bus::{AssignorKind, GroupConfig, GroupConsumer};
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "groups-ours", 2).await;
    let admin = client.admin();
    let group = unique_topic("group-ours");
    let idle = unique_topic("group-idle");
    batch(&client, &topic, 0, 3).await;
    batch(&client, &topic, 1, 2).await;
    admin
        .alter_group_offsets(&idle, &[(&topic, 0, 1)])
        .await
        .unwrap();

    let mut member = GroupConsumer::new(
        client.clone(),
        GroupConfig::new(&group)
            .session_timeout(Duration::from_secs(6))
            .heartbeat_interval(Duration::from_millis(300))
            .assignors([AssignorKind::Range]),
        ConsumerConfig::default()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(100)),
    )
    .unwrap();
    member.subscribe([topic.as_str()]).unwrap();
    let mut got = 0;
    while got < 5 {
        got += tokio::time::timeout(Duration::from_secs(30), member.poll())
            .await
            .expect("our member got no records")
            .unwrap()
            .len();
    }
    member.commit().await.unwrap();

    // Two groups in one call, answered in the order asked.
    let described = admin.describe_groups(&[&group, &idle]).await.unwrap();
    assert_eq!(described[0].0, group);
    assert_eq!(described[1].0, idle);
    let active = described[0].1.as_ref().unwrap();
    assert_eq!(active.state, GroupState::Stable, "{active:?}");
    assert_eq!(active.members.len(), 1, "{active:?}");
    assert_eq!(active.members[0].member_id, member.member_id());
    if !is_tansu(&client) {
        assert_eq!(active.protocol, "range");
        let parts = active.members[0].assignment.partitions().unwrap();
        assert_eq!(parts.get(&topic).map(Vec::as_slice), Some(&[0, 1][..]));
    }
    let idle_d = described[1].1.as_ref().unwrap();
    assert!(
        idle_d.members.is_empty() && idle_d.state.is_inactive(),
        "{idle_d:?}"
    );

    // Lag of the active group: all read and committed.
    let lag = admin.group_lag(&group).await.unwrap();
    assert_eq!(
        lag.iter().map(|l| (l.partition, l.lag)).collect::<Vec<_>>(),
        [(0, Some(0)), (1, Some(0))]
    );

    for result in [
        admin
            .reset_group_offsets(&group, &[&topic], ResetSpec::Earliest, false)
            .await
            .map(|_| ()),
        admin.delete_groups(&[&group]).await.unwrap().remove(0).1,
    ] {
        match result {
            Err(Error::GroupNotEmpty {
                group: g, members, ..
            }) => {
                assert_eq!((g.as_str(), members), (group.as_str(), 1))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(committed(&admin, &group, &topic).await, [(0, 3), (1, 2)]);
    member.close().await.unwrap();
}
