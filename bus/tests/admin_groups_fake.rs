//! Group administration against a scripted two-broker cluster over in-memory pipes, in paused
//! tokio time (the API timeout and backoffs are exact), for what
//! the test broker will not do on demand: a coordinator that moves (NOT_COORDINATOR from the
//! old one, then FindCoordinator names the new one), COORDINATOR_LOAD_IN_PROGRESS, and
//! members whose assignments carry real consumer-protocol bytes (tansu 0.6 describes members
//! without them).

mod common;

use common::scripted::{
    FrameReader, PIPE_PORT, api_key, api_versions, pipe_client_config, pipe_dialer, reply,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::admin::{GroupState, MemberAssignment};
use bus::{Client, Error};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_proto::envelope::decode_request;
use kafka_proto::messages::consumer_protocol_assignment::TopicPartition;
use kafka_proto::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_proto::messages::find_coordinator_response::Coordinator;
use kafka_proto::messages::metadata_response::MetadataResponseBroker;
use kafka_proto::messages::{
    ApiVersionsRequest, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    MetadataRequest, MetadataResponse,
};
use kafka_proto::{ApiKey, Encode, ErrorCode};
use tokio::io::DuplexStream;

#[derive(Default)]
struct State {
    /// The node FindCoordinator names.
    coordinator: i32,
    /// Once FindCoordinator has named `coordinator`, the group moves here (so the named node
    /// answers NOT_COORDINATOR).
    move_to: Option<i32>,
    /// Errors the coordinator answers DescribeGroups with before it answers properly.
    describe_errors: Vec<ErrorCode>,
    /// (node, api) of every FindCoordinator and DescribeGroups, in arrival order.
    log: Vec<(i32, &'static str)>,
}

fn versioned(version: i16, body: &impl Encode) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    body.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn member() -> DescribedGroupMember {
    let mut a = ConsumerProtocolAssignment::default();
    let mut tp = TopicPartition::default();
    tp.topic = "orders".into();
    tp.partitions = vec![2, 0];
    a.assigned_partitions.push(tp);
    let mut s = ConsumerProtocolSubscription::default();
    s.topics = vec!["orders".into()];
    let mut m = DescribedGroupMember::default();
    m.member_id = "m-1".into();
    m.client_id = "app".into();
    m.client_host = "/10.0.0.1".into();
    m.group_instance_id = Some("pod-1".into());
    m.member_metadata = versioned(1, &s);
    m.member_assignment = versioned(1, &a);
    m
}

async fn serve(node: i32, mut stream: DuplexStream, state: Arc<Mutex<State>>) {
    let mut reader = FrameReader::new();
    while let Some(frame) = reader.next(&mut stream).await {
        let key = api_key(&frame);
        match key {
            k if k == ApiKey::ApiVersions as i16 => {
                let (h, _) = decode_request::<ApiVersionsRequest>(frame).unwrap();
                let resp = api_versions(&[
                    (ApiKey::ApiVersions, 3),
                    (ApiKey::Metadata, 12),
                    (ApiKey::FindCoordinator, 4),
                    (ApiKey::DescribeGroups, 5),
                ]);
                reply(&mut stream, h.correlation_id, h.request_api_version, &resp).await;
            }
            k if k == ApiKey::Metadata as i16 => {
                let (h, _) = decode_request::<MetadataRequest>(frame).unwrap();
                let mut resp = MetadataResponse::default();
                resp.cluster_id = Some("fake".into());
                resp.controller_id = 1;
                for id in [1, 2] {
                    let mut b = MetadataResponseBroker::default();
                    b.node_id = id;
                    b.host = format!("node-{id}");
                    b.port = PIPE_PORT;
                    resp.brokers.push(b);
                }
                reply(&mut stream, h.correlation_id, h.request_api_version, &resp).await;
            }
            k if k == ApiKey::FindCoordinator as i16 => {
                let (h, req) = decode_request::<FindCoordinatorRequest>(frame).unwrap();
                assert_eq!(req.key_type, 0, "a group coordinator is asked for");
                let coordinator = {
                    let mut st = state.lock().unwrap();
                    st.log.push((node, "FindCoordinator"));
                    let named = st.coordinator;
                    if let Some(to) = st.move_to.take() {
                        st.coordinator = to;
                    }
                    named
                };
                let mut resp = FindCoordinatorResponse::default();
                for key in &req.coordinator_keys {
                    let mut c = Coordinator::default();
                    c.key = key.clone();
                    c.node_id = coordinator;
                    c.host = format!("node-{coordinator}");
                    c.port = PIPE_PORT;
                    resp.coordinators.push(c);
                }
                reply(&mut stream, h.correlation_id, h.request_api_version, &resp).await;
            }
            k if k == ApiKey::DescribeGroups as i16 => {
                let (h, req) = decode_request::<DescribeGroupsRequest>(frame).unwrap();
                let error = {
                    let mut st = state.lock().unwrap();
                    st.log.push((node, "DescribeGroups"));
                    if node != st.coordinator {
                        Some(ErrorCode::NotCoordinator)
                    } else if st.describe_errors.is_empty() {
                        None
                    } else {
                        Some(st.describe_errors.remove(0))
                    }
                };
                let mut resp = DescribeGroupsResponse::default();
                for g in &req.groups {
                    let mut d = DescribedGroup::default();
                    d.group_id = g.clone();
                    match error {
                        Some(code) => d.error_code = code.code(),
                        None => {
                            d.group_state = "Stable".into();
                            d.protocol_type = "consumer".into();
                            d.protocol_data = "range".into();
                            d.members.push(member());
                        }
                    }
                    resp.groups.push(d);
                }
                reply(&mut stream, h.correlation_id, h.request_api_version, &resp).await;
            }
            other => panic!("the fake cluster does not serve API key {other}"),
        }
    }
}

async fn cluster(state: State) -> (Client, Arc<Mutex<State>>) {
    let state = Arc::new(Mutex::new(state));
    let served = state.clone();
    let dialer = pipe_dialer(move |node, stream| serve(node, stream, served.clone()));
    let client = Client::connect(pipe_client_config(dialer)).await.unwrap();
    (client, state)
}

#[tokio::test(start_paused = true)]
async fn a_moved_coordinator_is_rediscovered_and_assignments_are_decoded() {
    let (client, state) = cluster(State {
        coordinator: 2,
        describe_errors: vec![ErrorCode::CoordinatorLoadInProgress],
        ..State::default()
    })
    .await;
    let admin = client.admin();
    let d = tokio::time::timeout(Duration::from_secs(10), admin.describe_group("g"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.coordinator, 2);
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(
        (d.protocol_type.as_str(), d.protocol.as_str()),
        ("consumer", "range")
    );
    let m = &d.members[0];
    assert_eq!(
        (
            m.member_id.as_str(),
            m.client_id.as_str(),
            m.client_host.as_str()
        ),
        ("m-1", "app", "/10.0.0.1")
    );
    assert_eq!(m.group_instance_id.as_deref(), Some("pod-1"));
    assert_eq!(m.subscription.as_deref(), Some(&["orders".to_string()][..]));
    match &m.assignment {
        MemberAssignment::Consumer(parts) => assert_eq!(parts["orders"], [0, 2]),
        other => panic!("{other:?}"),
    }
    // Still loading: one retry at the same coordinator, found again first.
    let log = state.lock().unwrap().log.clone();
    assert_eq!(
        log.iter()
            .filter(|(_, api)| *api == "DescribeGroups")
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        [2, 2]
    );
    assert_eq!(
        log.iter()
            .filter(|(_, api)| *api == "FindCoordinator")
            .count(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn not_coordinator_sends_the_next_attempt_to_the_new_coordinator() {
    // FindCoordinator names node 1, and the group moves to node 2 right after.
    let (client, state) = cluster(State {
        coordinator: 1,
        move_to: Some(2),
        ..State::default()
    })
    .await;
    let admin = client.admin();
    let d = tokio::time::timeout(Duration::from_secs(10), admin.describe_group("g"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.coordinator, 2);
    let described: Vec<i32> = state
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|(_, api)| *api == "DescribeGroups")
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(described, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_that_never_loads_fails_with_its_code_after_the_api_timeout() {
    let (client, _state) = cluster(State {
        coordinator: 2,
        describe_errors: vec![ErrorCode::CoordinatorLoadInProgress; 10_000],
        ..State::default()
    })
    .await;
    let admin = bus::admin::Admin::new(
        client,
        bus::admin::AdminConfig::default().api_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    match admin.describe_group("g").await {
        Err(Error::Broker { code, context, .. }) => {
            assert_eq!(code, ErrorCode::CoordinatorLoadInProgress);
            assert_eq!(context.as_deref(), Some("group g"));
        }
        other => panic!("{other:?}"),
    }
}
