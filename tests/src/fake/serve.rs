//! One connection's session and the answer to each API. Requests on a connection are served
//! one at a time, in order, as Kafka does (it mutes a channel until its response is sent), so
//! a JoinGroup parked in the join phase holds back the requests behind it on that socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_proto::messages::api_versions_response::ApiVersion;
use kafka_proto::messages::create_topics_response::CreatableTopicResult;
use kafka_proto::messages::delete_groups_response::DeletableGroupResult;
use kafka_proto::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_proto::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_proto::messages::find_coordinator_response::Coordinator as FoundCoordinator;
use kafka_proto::messages::leave_group_response::MemberResponse;
use kafka_proto::messages::list_groups_response::ListedGroup;
use kafka_proto::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_proto::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_proto::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_proto::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_proto::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_proto::messages::*;
use kafka_proto::version::{request_header_version, response_header_version};
use kafka_proto::{ApiKey, Decode, Encode, EncodeError, ErrorCode, FrameSplitter, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::group::{Committed, GroupState};
use super::hooks::{Action, request_group};
use super::{Inner, LoggedRequest, SERVED};

/// Serves one connection to `node` until the peer closes it, a hook drops it, or the test
/// kills the node's connections.
pub(crate) async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    inner: Arc<Inner>,
    node: i32,
    mut stream: S,
) {
    let mut kill = inner.kill[node as usize].subscribe();
    kill.borrow_and_update();
    let mut splitter = FrameSplitter::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let frame: Bytes = loop {
            match splitter.next_frame() {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(_) => return,
            }
            tokio::select! {
                r = stream.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => splitter.push(&buf[..n]),
                },
                _ = kill.changed() => return,
            }
        };
        let served = tokio::select! {
            r = serve_frame(&inner, node, frame) => r,
            _ = kill.changed() => return,
        };
        match served {
            Served::Reply(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Served::Nothing => {}
            Served::Close => return,
        }
    }
}

enum Served {
    Reply(Bytes),
    Nothing,
    Close,
}

async fn serve_frame(inner: &Arc<Inner>, node: i32, frame: Bytes) -> Served {
    if frame.len() < 8 {
        return Served::Close;
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Some(api) = ApiKey::from_i16(key).filter(|k| SERVED.iter().any(|(s, _)| s == k)) else {
        // Kafka closes the connection on an API it does not serve.
        return Served::Close;
    };
    let max = SERVED.iter().find(|(k, _)| *k == api).map(|(_, m)| *m);
    if api == ApiKey::ApiVersions && Some(version) > max {
        // KIP-511: an unknown ApiVersions version is answered in the v0 layout.
        let mut body = api_versions();
        body.error_code = ErrorCode::UnsupportedVersion.code();
        return reply(correlation_id, api, 0, encode(&body, 0));
    }
    let mut rest = frame;
    let header = match RequestHeader::decode(&mut rest, request_header_version(api, version)) {
        Ok(h) => h,
        Err(_) => return Served::Close,
    };
    let request = match RequestKind::decode(key, version, &mut rest) {
        Ok(r) if rest.is_empty() => r,
        _ => {
            eprintln!("fake broker: undecodable {api:?} v{version}; closing");
            return Served::Close;
        }
    };
    inner.log.lock().unwrap().push(LoggedRequest {
        node,
        api,
        version,
        at: Instant::now(),
        group: request_group(&request).map(str::to_string),
        client_id: header.client_id.clone(),
    });
    let action = inner
        .hooks
        .lock()
        .unwrap()
        .decide(node, api, version, &request);
    let body = match action {
        Action::Pass => answer(inner, node, version, header.client_id.as_deref(), &request).await,
        Action::Delay(d) => {
            tokio::time::sleep(d).await;
            answer(inner, node, version, header.client_id.as_deref(), &request).await
        }
        Action::Error(code) => error_answer(&request, version, code).map(Some),
        Action::DropConnection => return Served::Close,
        Action::NoReply => return Served::Nothing,
    };
    match body {
        Ok(Some(body)) => reply(correlation_id, api, version, Ok(body)),
        Ok(None) => Served::Nothing,
        Err(e) => {
            eprintln!("fake broker: cannot encode {api:?} v{version} answer: {e}; closing");
            Served::Close
        }
    }
}

fn encode<M: Message>(m: &M, version: i16) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

fn reply(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: Result<Bytes, EncodeError>,
) -> Served {
    let Ok(body) = body else {
        return Served::Close;
    };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let mut h = BytesMut::new();
    if header
        .encode(&mut h, response_header_version(api, version))
        .is_err()
    {
        return Served::Close;
    }
    let mut out = BytesMut::with_capacity(4 + h.len() + body.len());
    out.extend_from_slice(&((h.len() + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&body);
    Served::Reply(out.freeze())
}

pub(crate) fn api_versions() -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    for (k, max) in SERVED {
        let mut v = ApiVersion::default();
        v.api_key = *k as i16;
        v.min_version = 0;
        v.max_version = *max;
        resp.api_keys.push(v);
    }
    resp
}

type Answer = Result<Option<Bytes>, EncodeError>;

/// `(topic, [(partition, committed)])` as OffsetFetch answers them.
type TopicOffsets = Vec<(String, Vec<(i32, Option<Committed>)>)>;

fn some<M: Message>(m: &M, version: i16) -> Answer {
    encode(m, version).map(Some)
}

async fn answer(
    inner: &Arc<Inner>,
    node: i32,
    v: i16,
    client_id: Option<&str>,
    req: &RequestKind,
) -> Answer {
    // Group APIs are answered only by the group's coordinator.
    let group_api = matches!(
        req,
        RequestKind::JoinGroup(_)
            | RequestKind::SyncGroup(_)
            | RequestKind::Heartbeat(_)
            | RequestKind::LeaveGroup(_)
            | RequestKind::OffsetCommit(_)
    ) || (matches!(req, RequestKind::OffsetFetch(_)) && v < 8);
    if group_api
        && let Some(g) = request_group(req)
        && inner.coordinator_for(g) != node
    {
        return error_answer(req, v, ErrorCode::NotCoordinator).map(Some);
    }
    let now = Instant::now();
    match req {
        RequestKind::ApiVersions(_) => some(&api_versions(), v),
        RequestKind::Metadata(r) => some(&metadata(inner, v, r), v),
        RequestKind::CreateTopics(r) => some(&create_topics(inner, v, r), v),
        RequestKind::InitProducerId(_) => {
            let mut resp = InitProducerIdResponse::default();
            resp.producer_id = inner
                .producer_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            resp.producer_epoch = 0;
            some(&resp, v)
        }
        RequestKind::Produce(r) => {
            let resp = produce(inner, node, v, r);
            if r.acks == 0 {
                Ok(None)
            } else {
                some(&resp, v)
            }
        }
        RequestKind::Fetch(r) => some(&fetch(inner, node, v, r).await, v),
        RequestKind::ListOffsets(r) => some(&list_offsets(inner, node, v, r), v),
        RequestKind::FindCoordinator(r) => some(&find_coordinator(inner, v, r), v),
        RequestKind::JoinGroup(r) => {
            let pending =
                inner
                    .coord
                    .lock()
                    .unwrap()
                    .join(r, v, client_id.unwrap_or_default(), now);
            inner.wake.notify_one();
            let Some(mut resp) = pending.resolve().await else {
                return Ok(None);
            };
            if v < 7 {
                resp.protocol_type = None;
            }
            if v < 9 {
                resp.skip_assignment = false;
            }
            if v < 5 {
                resp.members
                    .iter_mut()
                    .for_each(|m| m.group_instance_id = None);
            }
            some(&resp, v)
        }
        RequestKind::SyncGroup(r) => {
            let pending = inner.coord.lock().unwrap().sync(r, now);
            inner.wake.notify_one();
            let Some(a) = pending.resolve().await else {
                return Ok(None);
            };
            let mut resp = SyncGroupResponse::default();
            resp.error_code = a.error.code();
            resp.assignment = a.assignment;
            if v >= 5 {
                resp.protocol_type = a.protocol_type;
                resp.protocol_name = a.protocol;
            }
            some(&resp, v)
        }
        RequestKind::Heartbeat(r) => {
            let code = inner.coord.lock().unwrap().heartbeat(r, now);
            inner.wake.notify_one();
            let mut resp = HeartbeatResponse::default();
            resp.error_code = code.code();
            some(&resp, v)
        }
        RequestKind::LeaveGroup(r) => {
            let mut resp = LeaveGroupResponse::default();
            {
                let mut coord = inner.coord.lock().unwrap();
                if v >= 3 {
                    for m in &r.members {
                        let code = coord.leave(
                            &r.group_id,
                            &m.member_id,
                            m.group_instance_id.as_deref(),
                            now,
                        );
                        let mut mr = MemberResponse::default();
                        mr.member_id = m.member_id.clone();
                        mr.group_instance_id = m.group_instance_id.clone();
                        mr.error_code = code.code();
                        resp.members.push(mr);
                    }
                } else {
                    resp.error_code = coord.leave(&r.group_id, &r.member_id, None, now).code();
                }
            }
            inner.wake.notify_one();
            some(&resp, v)
        }
        RequestKind::OffsetCommit(r) => {
            let mut coord = inner.coord.lock().unwrap();
            let code = coord.check_commit(
                &r.group_id,
                r.generation_id_or_member_epoch,
                &r.member_id,
                r.group_instance_id.as_deref(),
                now,
            );
            let group = coord.groups.get_mut(&r.group_id);
            let mut resp = OffsetCommitResponse::default();
            if let Some(group) = group {
                for t in &r.topics {
                    let mut rt = OffsetCommitResponseTopic::default();
                    rt.name = t.name.clone();
                    for p in &t.partitions {
                        if code == ErrorCode::None {
                            group.offsets.insert(
                                (t.name.clone(), p.partition_index),
                                Committed {
                                    offset: p.committed_offset,
                                    leader_epoch: p.committed_leader_epoch,
                                    metadata: p.committed_metadata.clone(),
                                },
                            );
                        }
                        let mut rp = OffsetCommitResponsePartition::default();
                        rp.partition_index = p.partition_index;
                        rp.error_code = code.code();
                        rt.partitions.push(rp);
                    }
                    resp.topics.push(rt);
                }
            }
            drop(coord);
            inner.wake.notify_one();
            some(&resp, v)
        }
        RequestKind::OffsetFetch(r) => some(&offset_fetch(inner, node, v, r), v),
        RequestKind::ListGroups(r) => {
            let coord = inner.coord.lock().unwrap();
            let mut resp = ListGroupsResponse::default();
            for (id, g) in &coord.groups {
                if inner.coordinator_for(id) != node || g.state() == GroupState::Dead {
                    continue;
                }
                if !r.states_filter.is_empty()
                    && !r
                        .states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state().name()))
                {
                    continue;
                }
                if !r.types_filter.is_empty()
                    && !r
                        .types_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case("classic"))
                {
                    continue;
                }
                let mut lg = ListedGroup::default();
                lg.group_id = id.clone();
                lg.protocol_type = g.protocol_type().unwrap_or_default().to_string();
                if v >= 4 {
                    lg.group_state = g.state().name().to_string();
                }
                if v >= 5 {
                    lg.group_type = "classic".into();
                }
                resp.groups.push(lg);
            }
            some(&resp, v)
        }
        RequestKind::DescribeGroups(r) => {
            let coord = inner.coord.lock().unwrap();
            let mut resp = DescribeGroupsResponse::default();
            for id in &r.groups {
                let mut dg = DescribedGroup::default();
                dg.group_id = id.clone();
                if inner.coordinator_for(id) != node {
                    dg.error_code = ErrorCode::NotCoordinator.code();
                    resp.groups.push(dg);
                    continue;
                }
                match coord.groups.get(id) {
                    None => dg.group_state = GroupState::Dead.name().into(),
                    Some(g) => {
                        let s = g.snapshot();
                        dg.group_state = s.state.name().into();
                        dg.protocol_type = s.protocol_type.clone().unwrap_or_default();
                        dg.protocol_data = s.protocol.clone().unwrap_or_default();
                        for m in &s.members {
                            let mut dm = DescribedGroupMember::default();
                            dm.member_id = m.member_id.clone();
                            if v >= 4 {
                                dm.group_instance_id = m.instance_id.clone();
                            }
                            dm.client_id = m.client_id.clone();
                            dm.client_host = "/127.0.0.1".into();
                            dm.member_metadata = m
                                .protocols
                                .iter()
                                .find(|(n, _)| Some(n) == s.protocol.as_ref())
                                .map(|(_, md)| md.clone())
                                .unwrap_or_default();
                            dm.member_assignment = m.assignment.clone();
                            dg.members.push(dm);
                        }
                    }
                }
                resp.groups.push(dg);
            }
            some(&resp, v)
        }
        RequestKind::DeleteGroups(r) => {
            let mut coord = inner.coord.lock().unwrap();
            let mut resp = DeleteGroupsResponse::default();
            for id in &r.groups_names {
                let code = if inner.coordinator_for(id) != node {
                    ErrorCode::NotCoordinator
                } else {
                    match coord.groups.get(id) {
                        None => ErrorCode::GroupIdNotFound,
                        Some(g) if g.state() == GroupState::Dead => ErrorCode::GroupIdNotFound,
                        Some(g) if g.has_members() => ErrorCode::NonEmptyGroup,
                        Some(_) => {
                            coord.groups.remove(id);
                            ErrorCode::None
                        }
                    }
                };
                let mut dr = DeletableGroupResult::default();
                dr.group_id = id.clone();
                dr.error_code = code.code();
                resp.results.push(dr);
            }
            some(&resp, v)
        }
        _ => Ok(None),
    }
}

fn metadata(inner: &Inner, v: i16, r: &MetadataRequest) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    for node in 0..inner.nodes {
        let mut b = MetadataResponseBroker::default();
        b.node_id = node;
        (b.host, b.port) = inner.address(node);
        resp.brokers.push(b);
    }
    if v >= 2 {
        resp.cluster_id = Some("fake-cluster".into());
    }
    resp.controller_id = 0;
    let logs = inner.logs.lock().unwrap();
    let describe = |name: &str, resp: &mut MetadataResponse| {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(name.to_string());
        match logs.topics.get(name) {
            None => t.error_code = ErrorCode::UnknownTopicOrPartition.code(),
            Some(topic) => {
                if v >= 10 {
                    t.topic_id = topic.id;
                }
                for (i, p) in topic.partitions.iter().enumerate() {
                    let mut mp = MetadataResponsePartition::default();
                    mp.partition_index = i as i32;
                    mp.leader_id = p.leader;
                    if v >= 7 {
                        mp.leader_epoch = p.leader_epoch;
                    }
                    mp.replica_nodes = vec![p.leader];
                    mp.isr_nodes = vec![p.leader];
                    t.partitions.push(mp);
                }
            }
        }
        resp.topics.push(t);
    };
    match &r.topics {
        Some(list) if !(v == 0 && list.is_empty()) => {
            for t in list {
                let name = match &t.name {
                    Some(n) => n.clone(),
                    None => logs
                        .by_id(t.topic_id)
                        .map(|(n, _)| n.clone())
                        .unwrap_or_default(),
                };
                describe(&name, &mut resp);
            }
        }
        _ => {
            for name in logs.topics.keys() {
                describe(name, &mut resp);
            }
        }
    }
    resp
}

fn create_topics(inner: &Inner, v: i16, r: &CreateTopicsRequest) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    let mut logs = inner.logs.lock().unwrap();
    for t in &r.topics {
        let mut rt = CreatableTopicResult::default();
        rt.name = t.name.clone();
        let partitions = if t.num_partitions == -1 {
            if t.assignments.is_empty() {
                1
            } else {
                t.assignments.len() as i32
            }
        } else {
            t.num_partitions
        };
        let result = if r.validate_only {
            if logs.topics.contains_key(&t.name) {
                Err(ErrorCode::TopicAlreadyExists)
            } else {
                Ok(kafka_proto::Uuid([0; 16]))
            }
        } else {
            logs.create(&t.name, partitions, inner.nodes)
        };
        match result {
            Ok(id) => {
                if v >= 7 {
                    rt.topic_id = id;
                }
                if v >= 5 {
                    rt.num_partitions = partitions;
                    rt.replication_factor = 1;
                    rt.configs = Some(Vec::new());
                }
            }
            Err(code) => {
                rt.error_code = code.code();
                if v >= 1 {
                    rt.error_message = Some(code.name().to_string());
                }
            }
        }
        resp.topics.push(rt);
    }
    resp
}

fn produce(inner: &Inner, node: i32, v: i16, r: &ProduceRequest) -> ProduceResponse {
    let mut resp = ProduceResponse::default();
    let mut appended = false;
    {
        let mut logs = inner.logs.lock().unwrap();
        for t in &r.topic_data {
            let mut rt = TopicProduceResponse::default();
            rt.name = t.name.clone();
            for p in &t.partition_data {
                let mut rp = PartitionProduceResponse::default();
                rp.index = p.index;
                rp.base_offset = -1;
                match logs.partition_mut(&t.name, p.index) {
                    None => rp.error_code = ErrorCode::UnknownTopicOrPartition.code(),
                    Some(part) if part.leader != node => {
                        rp.error_code = ErrorCode::NotLeaderOrFollower.code()
                    }
                    Some(part) => match p.records.as_ref().map(|rec| part.append(rec)) {
                        Some(Ok(base)) => {
                            rp.base_offset = base;
                            if v >= 5 {
                                rp.log_start_offset = part.log_start;
                            }
                            appended = true;
                        }
                        Some(Err(code)) => rp.error_code = code.code(),
                        None => rp.error_code = ErrorCode::CorruptMessage.code(),
                    },
                }
                rt.partition_responses.push(rp);
            }
            resp.responses.push(rt);
        }
    }
    if appended {
        inner.appended.send_modify(|n| *n += 1);
    }
    resp
}

async fn fetch(inner: &Inner, node: i32, v: i16, r: &FetchRequest) -> FetchResponse {
    let deadline = Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64);
    let mut appended = inner.appended.subscribe();
    loop {
        appended.borrow_and_update();
        let (resp, bytes, failed) = fetch_once(inner, node, v, r);
        if bytes >= r.min_bytes.max(0) as usize || failed || Instant::now() >= deadline {
            return resp;
        }
        tokio::select! {
            _ = appended.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// One pass over the requested partitions: the answer, its record bytes, and whether any
/// partition failed (Kafka answers at once then).
fn fetch_once(inner: &Inner, node: i32, v: i16, r: &FetchRequest) -> (FetchResponse, usize, bool) {
    let logs = inner.logs.lock().unwrap();
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut failed = false;
    let max_bytes = if v >= 3 {
        r.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    for t in &r.topics {
        let name = if v >= 13 {
            logs.by_id(t.topic_id).map(|(n, _)| n.clone())
        } else {
            Some(t.topic.clone())
        };
        let mut rt = FetchableTopicResponse::default();
        if v >= 13 {
            rt.topic_id = t.topic_id;
        } else {
            rt.topic = t.topic.clone();
        }
        for p in &t.partitions {
            let mut d = PartitionData::default();
            d.partition_index = p.partition;
            let part = name.as_deref().and_then(|n| logs.partition(n, p.partition));
            match part {
                None => {
                    failed = true;
                    d.error_code = if v >= 13 && name.is_none() {
                        ErrorCode::UnknownTopicId.code()
                    } else {
                        ErrorCode::UnknownTopicOrPartition.code()
                    };
                }
                Some(part) => {
                    d.high_watermark = part.high_watermark;
                    d.last_stable_offset = part.high_watermark;
                    d.log_start_offset = part.log_start;
                    if part.leader != node {
                        failed = true;
                        d.error_code = ErrorCode::NotLeaderOrFollower.code();
                        if v >= 12 {
                            d.current_leader.leader_id = part.leader;
                            d.current_leader.leader_epoch = part.leader_epoch;
                        }
                    } else if p.fetch_offset < part.log_start
                        || p.fetch_offset > part.high_watermark
                    {
                        failed = true;
                        d.error_code = ErrorCode::OffsetOutOfRange.code();
                    } else {
                        let room = max_bytes
                            .saturating_sub(total)
                            .min(p.partition_max_bytes.max(0) as usize);
                        let records = if total > 0 && room == 0 {
                            Bytes::new()
                        } else {
                            part.read(p.fetch_offset, room)
                        };
                        total += records.len();
                        d.records = Some(records);
                    }
                }
            }
            if d.records.is_none() {
                d.records = Some(Bytes::new());
            }
            rt.partitions.push(d);
        }
        resp.responses.push(rt);
    }
    (resp, total, failed)
}

fn list_offsets(inner: &Inner, node: i32, v: i16, r: &ListOffsetsRequest) -> ListOffsetsResponse {
    let logs = inner.logs.lock().unwrap();
    let mut resp = ListOffsetsResponse::default();
    for t in &r.topics {
        let mut rt = ListOffsetsTopicResponse::default();
        rt.name = t.name.clone();
        for p in &t.partitions {
            let mut rp = ListOffsetsPartitionResponse::default();
            rp.partition_index = p.partition_index;
            match logs.partition(&t.name, p.partition_index) {
                None => rp.error_code = ErrorCode::UnknownTopicOrPartition.code(),
                Some(part) if part.leader != node => {
                    rp.error_code = ErrorCode::NotLeaderOrFollower.code()
                }
                Some(part) => {
                    let (offset, ts) = part.offset_for(p.timestamp);
                    if v == 0 {
                        rp.old_style_offsets = vec![offset];
                    } else {
                        rp.offset = offset;
                        rp.timestamp = ts;
                    }
                    if v >= 4 {
                        rp.leader_epoch = part.leader_epoch;
                    }
                }
            }
            rt.partitions.push(rp);
        }
        resp.topics.push(rt);
    }
    resp
}

fn find_coordinator(inner: &Inner, v: i16, r: &FindCoordinatorRequest) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    if v >= 4 {
        for key in &r.coordinator_keys {
            let node = inner.coordinator_for(key);
            let mut c = FoundCoordinator::default();
            c.key = key.clone();
            c.node_id = node;
            (c.host, c.port) = inner.address(node);
            resp.coordinators.push(c);
        }
    } else {
        let node = inner.coordinator_for(&r.key);
        resp.node_id = node;
        (resp.host, resp.port) = inner.address(node);
    }
    resp
}

fn offset_fetch(inner: &Inner, node: i32, v: i16, r: &OffsetFetchRequest) -> OffsetFetchResponse {
    let coord = inner.coord.lock().unwrap();
    let lookup = |group: &str, topics: Option<Vec<(String, Vec<i32>)>>| -> TopicOffsets {
        let offsets = coord.groups.get(group).map(|g| &g.offsets);
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(name, parts)| {
                    let ps = parts
                        .into_iter()
                        .map(|p| (p, offsets.and_then(|o| o.get(&(name.clone(), p)).cloned())))
                        .collect();
                    (name, ps)
                })
                .collect(),
            None => {
                let mut out: TopicOffsets = Vec::new();
                for ((t, p), c) in offsets.into_iter().flatten() {
                    match out.last_mut() {
                        Some((name, ps)) if name == t => ps.push((*p, Some(c.clone()))),
                        _ => out.push((t.clone(), vec![(*p, Some(c.clone()))])),
                    }
                }
                out
            }
        }
    };
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        for g in &r.groups {
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            if inner.coordinator_for(&g.group_id) != node {
                rg.error_code = ErrorCode::NotCoordinator.code();
                resp.groups.push(rg);
                continue;
            }
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.clone(), t.partition_indexes.clone()))
                    .collect()
            });
            for (name, parts) in lookup(&g.group_id, topics) {
                let mut rt = OffsetFetchResponseTopics::default();
                rt.name = name;
                for (p, c) in parts {
                    let mut rp = OffsetFetchResponsePartitions::default();
                    rp.partition_index = p;
                    rp.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                    rp.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
                    rp.metadata = Some(c.and_then(|c| c.metadata).unwrap_or_default());
                    rt.partitions.push(rp);
                }
                rg.topics.push(rt);
            }
            resp.groups.push(rg);
        }
    } else {
        let topics = r.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.clone(), t.partition_indexes.clone()))
                .collect()
        });
        for (name, parts) in lookup(&r.group_id, topics) {
            let mut rt = OffsetFetchResponseTopic::default();
            rt.name = name;
            for (p, c) in parts {
                let mut rp = OffsetFetchResponsePartition::default();
                rp.partition_index = p;
                rp.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
                if v >= 5 {
                    rp.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
                }
                rp.metadata = Some(c.and_then(|c| c.metadata).unwrap_or_default());
                rt.partitions.push(rp);
            }
            resp.topics.push(rt);
        }
    }
    resp
}

/// The answer a broker gives when it fails `req` with `code`: the code in every error field
/// the API has (top level, per topic, per partition, per member), nothing else changed.
pub(crate) fn error_answer(
    req: &RequestKind,
    v: i16,
    code: ErrorCode,
) -> Result<Bytes, EncodeError> {
    let c = code.code();
    match req {
        RequestKind::ApiVersions(_) => {
            let mut resp = api_versions();
            resp.error_code = c;
            encode(&resp, v)
        }
        RequestKind::Metadata(r) => {
            let mut resp = MetadataResponse::default();
            for t in r.topics.iter().flatten() {
                let mut mt = MetadataResponseTopic::default();
                mt.name = t.name.clone();
                mt.topic_id = t.topic_id;
                mt.error_code = c;
                resp.topics.push(mt);
            }
            encode(&resp, v)
        }
        RequestKind::CreateTopics(r) => {
            let mut resp = CreateTopicsResponse::default();
            for t in &r.topics {
                let mut rt = CreatableTopicResult::default();
                rt.name = t.name.clone();
                rt.error_code = c;
                resp.topics.push(rt);
            }
            encode(&resp, v)
        }
        RequestKind::InitProducerId(_) => {
            let mut resp = InitProducerIdResponse::default();
            resp.error_code = c;
            resp.producer_id = -1;
            resp.producer_epoch = -1;
            encode(&resp, v)
        }
        RequestKind::Produce(r) => {
            let mut resp = ProduceResponse::default();
            for t in &r.topic_data {
                let mut rt = TopicProduceResponse::default();
                rt.name = t.name.clone();
                for p in &t.partition_data {
                    let mut rp = PartitionProduceResponse::default();
                    rp.index = p.index;
                    rp.error_code = c;
                    rp.base_offset = -1;
                    rt.partition_responses.push(rp);
                }
                resp.responses.push(rt);
            }
            encode(&resp, v)
        }
        RequestKind::Fetch(r) => {
            let mut resp = FetchResponse::default();
            if v >= 7 {
                resp.error_code = c;
            }
            for t in &r.topics {
                let mut rt = FetchableTopicResponse::default();
                rt.topic = t.topic.clone();
                rt.topic_id = t.topic_id;
                for p in &t.partitions {
                    let mut d = PartitionData::default();
                    d.partition_index = p.partition;
                    d.error_code = c;
                    d.high_watermark = -1;
                    d.last_stable_offset = -1;
                    d.log_start_offset = -1;
                    d.records = Some(Bytes::new());
                    rt.partitions.push(d);
                }
                resp.responses.push(rt);
            }
            encode(&resp, v)
        }
        RequestKind::ListOffsets(r) => {
            let mut resp = ListOffsetsResponse::default();
            for t in &r.topics {
                let mut rt = ListOffsetsTopicResponse::default();
                rt.name = t.name.clone();
                for p in &t.partitions {
                    let mut rp = ListOffsetsPartitionResponse::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = c;
                    rp.offset = -1;
                    rp.timestamp = -1;
                    rt.partitions.push(rp);
                }
                resp.topics.push(rt);
            }
            encode(&resp, v)
        }
        RequestKind::FindCoordinator(r) => {
            let mut resp = FindCoordinatorResponse::default();
            if v >= 4 {
                for key in &r.coordinator_keys {
                    let mut co = FoundCoordinator::default();
                    co.key = key.clone();
                    co.node_id = -1;
                    co.port = -1;
                    co.error_code = c;
                    resp.coordinators.push(co);
                }
            } else {
                resp.error_code = c;
                resp.node_id = -1;
                resp.port = -1;
            }
            encode(&resp, v)
        }
        RequestKind::JoinGroup(r) => {
            let mut resp = JoinGroupResponse::default();
            resp.error_code = c;
            resp.generation_id = -1;
            resp.member_id = r.member_id.clone();
            resp.protocol_name = Some(String::new());
            encode(&resp, v)
        }
        RequestKind::SyncGroup(_) => {
            let mut resp = SyncGroupResponse::default();
            resp.error_code = c;
            encode(&resp, v)
        }
        RequestKind::Heartbeat(_) => {
            let mut resp = HeartbeatResponse::default();
            resp.error_code = c;
            encode(&resp, v)
        }
        RequestKind::LeaveGroup(r) => {
            let mut resp = LeaveGroupResponse::default();
            resp.error_code = c;
            if v >= 3 {
                for m in &r.members {
                    let mut mr = MemberResponse::default();
                    mr.member_id = m.member_id.clone();
                    mr.group_instance_id = m.group_instance_id.clone();
                    mr.error_code = c;
                    resp.members.push(mr);
                }
            }
            encode(&resp, v)
        }
        RequestKind::OffsetCommit(r) => {
            let mut resp = OffsetCommitResponse::default();
            for t in &r.topics {
                let mut rt = OffsetCommitResponseTopic::default();
                rt.name = t.name.clone();
                for p in &t.partitions {
                    let mut rp = OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = c;
                    rt.partitions.push(rp);
                }
                resp.topics.push(rt);
            }
            encode(&resp, v)
        }
        RequestKind::OffsetFetch(r) => {
            let mut resp = OffsetFetchResponse::default();
            if v >= 8 {
                for g in &r.groups {
                    let mut rg = OffsetFetchResponseGroup::default();
                    rg.group_id = g.group_id.clone();
                    rg.error_code = c;
                    resp.groups.push(rg);
                }
            } else {
                if v >= 2 {
                    resp.error_code = c;
                }
                for t in r.topics.iter().flatten() {
                    let mut rt = OffsetFetchResponseTopic::default();
                    rt.name = t.name.clone();
                    for p in &t.partition_indexes {
                        let mut rp = OffsetFetchResponsePartition::default();
                        rp.partition_index = *p;
                        rp.committed_offset = -1;
                        rp.error_code = c;
                        rt.partitions.push(rp);
                    }
                    resp.topics.push(rt);
                }
            }
            encode(&resp, v)
        }
        RequestKind::ListGroups(_) => {
            let mut resp = ListGroupsResponse::default();
            resp.error_code = c;
            encode(&resp, v)
        }
        RequestKind::DescribeGroups(r) => {
            let mut resp = DescribeGroupsResponse::default();
            for g in &r.groups {
                let mut dg = DescribedGroup::default();
                dg.group_id = g.clone();
                dg.error_code = c;
                resp.groups.push(dg);
            }
            encode(&resp, v)
        }
        RequestKind::DeleteGroups(r) => {
            let mut resp = DeleteGroupsResponse::default();
            for g in &r.groups_names {
                let mut dr = DeletableGroupResult::default();
                dr.group_id = g.clone();
                dr.error_code = c;
                resp.results.push(dr);
            }
            encode(&resp, v)
        }
        _ => Ok(Bytes::new()),
    }
}
