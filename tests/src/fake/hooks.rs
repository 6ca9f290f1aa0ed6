//! Fault injection: one hook per API key, consulted before the fake serves a request. A hook
//! sees the decoded request and where it arrived, and answers with an [`Action`]: serve it
//! normally, answer with an error code, answer late, drop the connection or never answer.

use std::collections::HashMap;
use std::time::Duration;

use kafka_proto::messages::RequestKind;
use kafka_proto::{ApiKey, ErrorCode};

/// What the fake does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Serve it as a broker would.
    Pass,
    /// Answer with this error in the response's error fields (top level and per item, as the
    /// API has them), without touching any state.
    Error(ErrorCode),
    /// Wait this long (tokio time), then serve it normally.
    Delay(Duration),
    /// Close the connection without answering; requests behind it on the socket are lost too.
    DropConnection,
    /// Swallow it: no answer, ever; the connection keeps serving later requests.
    NoReply,
}

/// What a hook sees of one request.
pub struct HookCtx<'a> {
    /// The broker it arrived at.
    pub node: i32,
    pub api: ApiKey,
    pub version: i16,
    /// 1 for the first request of this API key the cluster received, counting every node.
    pub call: u64,
    pub request: &'a RequestKind,
}

impl HookCtx<'_> {
    /// The group a group API request names (FindCoordinator: its first key).
    pub fn group(&self) -> Option<&str> {
        request_group(self.request)
    }

    /// The member id a group API request carries (LeaveGroup v3+: its first member).
    pub fn member(&self) -> Option<&str> {
        match self.request {
            RequestKind::JoinGroup(r) => Some(&r.member_id),
            RequestKind::SyncGroup(r) => Some(&r.member_id),
            RequestKind::Heartbeat(r) => Some(&r.member_id),
            RequestKind::OffsetCommit(r) => Some(&r.member_id),
            RequestKind::LeaveGroup(r) if self.version >= 3 => {
                r.members.first().map(|m| m.member_id.as_str())
            }
            RequestKind::LeaveGroup(r) => Some(&r.member_id),
            _ => None,
        }
    }
}

pub(crate) fn request_group(request: &RequestKind) -> Option<&str> {
    match request {
        RequestKind::JoinGroup(r) => Some(&r.group_id),
        RequestKind::SyncGroup(r) => Some(&r.group_id),
        RequestKind::Heartbeat(r) => Some(&r.group_id),
        RequestKind::LeaveGroup(r) => Some(&r.group_id),
        RequestKind::OffsetCommit(r) => Some(&r.group_id),
        RequestKind::OffsetFetch(r) => match r.groups.first() {
            Some(g) => Some(&g.group_id),
            None => Some(&r.group_id),
        },
        RequestKind::FindCoordinator(r) => match r.coordinator_keys.first() {
            Some(k) => Some(k),
            None => Some(&r.key),
        },
        _ => None,
    }
}

pub(crate) type HookFn = Box<dyn FnMut(&HookCtx<'_>) -> Action + Send>;

pub(crate) struct Hook {
    pub f: HookFn,
    /// Removed after the first time it answers something other than `Pass`.
    pub once: bool,
}

#[derive(Default)]
pub(crate) struct Hooks {
    pub by_key: HashMap<ApiKey, Hook>,
    pub calls: HashMap<ApiKey, u64>,
}

impl Hooks {
    /// Counts the call and asks the key's hook, if any.
    pub fn decide(
        &mut self,
        node: i32,
        api: ApiKey,
        version: i16,
        request: &RequestKind,
    ) -> Action {
        let call = self.calls.entry(api).or_insert(0);
        *call += 1;
        let ctx = HookCtx {
            node,
            api,
            version,
            call: *call,
            request,
        };
        let Some(hook) = self.by_key.get_mut(&api) else {
            return Action::Pass;
        };
        let action = (hook.f)(&ctx);
        if hook.once && action != Action::Pass {
            self.by_key.remove(&api);
        }
        action
    }
}
