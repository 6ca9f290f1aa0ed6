//! An event as it travels: payload bytes plus the headers every consumer can read without
//! decoding the payload (id, type, timestamp, content type), so routing, de-duplication,
//! tracing and dead-lettering work for any payload format.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::handler::HandlerError;

/// Header names. Plain ASCII so Java, librdkafka and kafka-python consumers read them as is.
pub const H_EVENT_ID: &str = "event-id";
pub const H_EVENT_TYPE: &str = "event-type";
/// Milliseconds since the Unix epoch, decimal ASCII.
pub const H_TIMESTAMP: &str = "event-timestamp";
pub const H_CONTENT_TYPE: &str = "content-type";
pub const H_DOMAIN: &str = "domain";
pub const H_ROOT: &str = "root";

pub const CONTENT_JSON: &str = "application/json";
pub const CONTENT_BYTES: &str = "application/octet-stream";

/// One event to publish, or one received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique per event (UUID v4): the de-duplication and tracing key.
    pub id: Uuid,
    /// The application's name for the event, e.g. `PlayerJoined`.
    pub event_type: String,
    /// Milliseconds since the Unix epoch, set when the event is built.
    pub timestamp_ms: i64,
    pub content_type: String,
    pub payload: Bytes,
}

/// Why an event could not be built or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("cannot serialise event {event_type:?}: {source}")]
    Serialise {
        event_type: String,
        source: serde_json::Error,
    },
    #[error("record at {topic}-{partition}@{offset} is not a bus event: {reason}")]
    NotAnEvent {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Event {
    /// A JSON event (the default format).
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
    ) -> Result<Event, EnvelopeError> {
        let event_type = event_type.into();
        let payload = serde_json::to_vec(value).map_err(|source| EnvelopeError::Serialise {
            event_type: event_type.clone(),
            source,
        })?;
        Ok(Event::raw(event_type, CONTENT_JSON, payload))
    }

    /// An event whose payload the bus passes through untouched (protobuf, Avro, anything).
    pub fn raw(
        event_type: impl Into<String>,
        content_type: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Event {
        Event {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            timestamp_ms: now_ms(),
            content_type: content_type.into(),
            payload: payload.into(),
        }
    }

    /// Decodes a JSON payload. A failure is [`HandlerError::Permanent`]: retrying cannot
    /// make bad bytes decode, so the event goes straight to the dead-letter topic.
    pub fn decode_json<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            HandlerError::Permanent(format!("event {} ({}): {e}", self.id, self.event_type))
        })
    }

    pub(crate) fn headers(&self, domain: &str, root: &str) -> Vec<(Cow<'static, str>, Bytes)> {
        vec![
            (H_EVENT_ID.into(), Bytes::from(self.id.to_string())),
            (H_EVENT_TYPE.into(), Bytes::from(self.event_type.clone())),
            (
                H_TIMESTAMP.into(),
                Bytes::from(self.timestamp_ms.to_string()),
            ),
            (
                H_CONTENT_TYPE.into(),
                Bytes::from(self.content_type.clone()),
            ),
            (H_DOMAIN.into(), Bytes::from(domain.to_owned())),
            (H_ROOT.into(), Bytes::from(root.to_owned())),
        ]
    }
}

/// A record as a backend delivers it, before it is read as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Cow<'static, str>, Bytes)>,
}

impl InRecord {
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// An event handed to a handler, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    pub domain: String,
    pub root: String,
    pub event: Event,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// 1 on the first attempt, counting up on retries.
    pub attempt: u32,
}

impl ReceivedEvent {
    /// Reads a record as an event. A record without a parseable event id is not a bus event
    /// (some other producer wrote to the topic); the caller dead-letters it.
    pub(crate) fn from_record(r: &InRecord) -> Result<ReceivedEvent, EnvelopeError> {
        let not = |reason: String| EnvelopeError::NotAnEvent {
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            reason,
        };
        let text = |name: &str| -> Result<String, EnvelopeError> {
            let v = r
                .header(name)
                .ok_or_else(|| not(format!("no {name} header")))?;
            String::from_utf8(v.to_vec()).map_err(|_| not(format!("{name} is not UTF-8")))
        };
        let id = text(H_EVENT_ID)?;
        let id = Uuid::parse_str(&id).map_err(|e| not(format!("event-id {id:?}: {e}")))?;
        let timestamp_ms = text(H_TIMESTAMP)?
            .parse()
            .map_err(|e| not(format!("event-timestamp: {e}")))?;
        Ok(ReceivedEvent {
            domain: text(H_DOMAIN)?,
            root: text(H_ROOT)?,
            event: Event {
                id,
                event_type: text(H_EVENT_TYPE)?,
                timestamp_ms,
                content_type: text(H_CONTENT_TYPE).unwrap_or_else(|_| CONTENT_BYTES.into()),
                payload: r.value.clone().unwrap_or_default(),
            },
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            attempt: 1,
        })
    }
}

/// Where a published event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub event_id: Uuid,
    pub topic: Arc<str>,
    pub partition: i32,
    /// `None` when the broker confirmed without an offset (see `RecordMetadata::offset`).
    pub offset: Option<i64>,
}
