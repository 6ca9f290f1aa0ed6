//! The protocol state of one broker connection, with no sockets, no tasks and no clock of its
//! own (quinn-proto's shape). The tokio layer in `mod.rs` feeds it bytes read from the socket
//! and the current time, writes what [`ConnectionState::poll_transmit`] hands out, and wakes
//! callers on the [`Event`]s it yields; every protocol edge case (out-of-order replies, late
//! replies to timed-out requests, throttling, a bad frame) is therefore testable by calling
//! methods with chosen bytes and instants.
//!
//! Invariants:
//! - Correlation ids are assigned in the order frames are queued for transmission, so the
//!   broker's replies can always be matched.
//! - A request leaves the in-flight set exactly once: answered, timed out, cancelled or failed.
//! - Once failed, the state stays failed with one shared cause; no further bytes are sent.
//! - While the broker throttles the connection (KIP-219), nothing is transmitted until the
//!   throttle ends; requests stay queued in order.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_proto::FrameSplitter;
use kafka_proto::envelope::peek_correlation_id;

use crate::error::ConnectionFailure;

/// Size prefix (4), api key (2), api version (2), then the correlation id, in every request
/// header version.
pub const CORRELATION_ID_OFFSET: usize = 8;

/// What happened to one request.
#[derive(Debug)]
pub enum Event {
    /// The broker answered; the frame body starts with the response header.
    Response { correlation_id: i32, frame: Bytes },
    /// No answer arrived before the request's deadline. The connection stays usable; a late
    /// answer is discarded.
    TimedOut { correlation_id: i32 },
    /// The connection failed while the request was in flight.
    Failed {
        correlation_id: i32,
        cause: Arc<ConnectionFailure>,
    },
}

#[derive(Debug)]
struct Pending {
    deadline: Instant,
}

/// The sans-IO state of one connection.
#[derive(Debug)]
pub struct ConnectionState {
    next_correlation_id: i32,
    in_flight: HashMap<i32, Pending>,
    /// Deadlines ordered by time, for `poll_timeout` and `handle_timeout`.
    deadlines: BTreeSet<(Instant, i32)>,
    transmit: VecDeque<Bytes>,
    splitter: FrameSplitter,
    events: VecDeque<Event>,
    failed: Option<Arc<ConnectionFailure>>,
    throttled_until: Option<Instant>,
    /// Frames queued since the start, and frames handed to the transport: a caller that
    /// queued frame number `n` knows it has left once `transmitted >= n`.
    queued_total: u64,
    transmitted_total: u64,
}

impl ConnectionState {
    /// A fresh connection whose receive side accepts frames up to `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Self {
        ConnectionState {
            next_correlation_id: 0,
            in_flight: HashMap::new(),
            deadlines: BTreeSet::new(),
            transmit: VecDeque::new(),
            splitter: FrameSplitter::with_max_frame_size(max_frame_size),
            events: VecDeque::new(),
            failed: None,
            throttled_until: None,
            queued_total: 0,
            transmitted_total: 0,
        }
    }

    /// Queues an encoded request frame (size prefix included, any correlation id) and returns
    /// the correlation id it now carries.
    pub fn start_request(
        &mut self,
        now: Instant,
        mut frame: BytesMut,
        timeout: Duration,
    ) -> Result<i32, Arc<ConnectionFailure>> {
        if let Some(cause) = &self.failed {
            return Err(cause.clone());
        }
        if frame.len() < CORRELATION_ID_OFFSET + 4 {
            // Only our own encoder builds frames, so this is a bug, not a peer problem; refuse
            // rather than send a frame the broker would mis-parse.
            return Err(self.fail(ConnectionFailure::Dropped));
        }
        let id = self.next_correlation_id;
        // Ids wrap after 2^31 requests; a reply for a wrapped id can only be confused with a
        // request still in flight 2^31 requests earlier, which the request timeout rules out.
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1) & i32::MAX;
        frame[CORRELATION_ID_OFFSET..CORRELATION_ID_OFFSET + 4].copy_from_slice(&id.to_be_bytes());
        let deadline = now + timeout;
        self.in_flight.insert(id, Pending { deadline });
        self.deadlines.insert((deadline, id));
        self.transmit.push_back(frame.freeze());
        self.queued_total += 1;
        Ok(id)
    }

    /// How many frames have been queued so far; the number of the last one queued.
    pub fn queued_total(&self) -> u64 {
        self.queued_total
    }

    /// How many frames have been handed to the transport so far.
    pub fn transmitted_total(&self) -> u64 {
        self.transmitted_total
    }

    /// Forgets a request whose caller gave up. Its frame may already be on the wire; the
    /// answer, if one comes, is dropped.
    pub fn cancel(&mut self, correlation_id: i32) {
        if let Some(p) = self.in_flight.remove(&correlation_id) {
            self.deadlines.remove(&(p.deadline, correlation_id));
        }
    }

    /// The next frame to write, unless the broker is throttling us or nothing is queued.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if self.failed.is_some() || self.is_throttled(now) {
            return None;
        }
        let frame = self.transmit.pop_front()?;
        self.transmitted_total += 1;
        Some(frame)
    }

    /// True while a throttle from the broker is in force.
    pub fn is_throttled(&self, now: Instant) -> bool {
        self.throttled_until.is_some_and(|t| now < t)
    }

    /// Frames queued and not yet handed to the transport.
    pub fn queued(&self) -> usize {
        self.transmit.len()
    }

    /// Records the broker's `throttle_time_ms` from a response (KIP-219: the broker answers at
    /// once and expects the client to stay quiet on this connection for that long).
    pub fn throttle(&mut self, now: Instant, throttle_time_ms: i32) {
        if throttle_time_ms <= 0 {
            return;
        }
        let until = now + Duration::from_millis(throttle_time_ms as u64);
        if self.throttled_until.is_none_or(|t| t < until) {
            self.throttled_until = Some(until);
        }
    }

    /// Feeds bytes read from the socket.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.splitter.push(bytes);
        self.handle_received(now);
    }

    /// The receive buffer, for a transport that reads straight into it (no copy); call
    /// [`handle_received`](Self::handle_received) after appending.
    ///
    /// Room is made for at least `want` bytes, and for the rest of a frame whose (already
    /// checked) size prefix has arrived: a multi-megabyte fetch response is then read into one
    /// allocation instead of being regrown and copied chunk by chunk.
    pub fn recv_buffer(&mut self, want: usize) -> &mut BytesMut {
        let max = self.splitter.max_frame_size();
        let buf = self.splitter.recv_buffer(0);
        let mut want = want;
        if let Some(prefix) = buf.get(..4) {
            let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            if let Ok(len) = usize::try_from(len)
                && len <= max
            {
                want = want.max((4 + len).saturating_sub(buf.len()));
            }
        }
        self.splitter.recv_buffer(want)
    }

    /// Processes whatever complete frames the receive buffer holds.
    pub fn handle_received(&mut self, _now: Instant) {
        while self.failed.is_none() {
            match self.splitter.next_frame() {
                Ok(Some(frame)) => self.handle_frame(frame),
                Ok(None) => return,
                Err(e) => {
                    self.fail(ConnectionFailure::Frame(e));
                }
            }
        }
    }

    fn handle_frame(&mut self, frame: Bytes) {
        let Some(id) = peek_correlation_id(&frame) else {
            self.fail(ConnectionFailure::Frame(
                kafka_proto::DecodeError::UnexpectedEof {
                    needed: 4,
                    remaining: frame.len(),
                },
            ));
            return;
        };
        match self.in_flight.remove(&id) {
            Some(p) => {
                self.deadlines.remove(&(p.deadline, id));
                self.events.push_back(Event::Response {
                    correlation_id: id,
                    frame,
                });
            }
            // Cancelled or timed out earlier: the broker is merely late.
            None if self.was_issued(id) => {}
            None => {
                self.fail(ConnectionFailure::UnknownCorrelationId(id));
            }
        }
    }

    /// Whether `id` was handed out (and so may legitimately be answered late).
    fn was_issued(&self, id: i32) -> bool {
        id >= 0 && id < self.next_correlation_id
    }

    /// Expires every request whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.in_flight.remove(&id);
            self.events
                .push_back(Event::TimedOut { correlation_id: id });
        }
    }

    /// When `handle_timeout` (or `poll_transmit`, after a throttle) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|&(d, _)| d);
        let throttle = self.throttled_until.filter(|_| !self.transmit.is_empty());
        match (deadline, throttle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next outcome for a caller.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Fails the connection: every request in flight gets the same cause, queued frames are
    /// discarded. Returns the cause in force (the first one, if already failed).
    pub fn fail(&mut self, cause: ConnectionFailure) -> Arc<ConnectionFailure> {
        if let Some(existing) = &self.failed {
            return existing.clone();
        }
        let cause = Arc::new(cause);
        self.failed = Some(cause.clone());
        self.transmit.clear();
        self.deadlines.clear();
        let mut ids: Vec<i32> = self.in_flight.drain().map(|(id, _)| id).collect();
        ids.sort_unstable();
        for correlation_id in ids {
            self.events.push_back(Event::Failed {
                correlation_id,
                cause: cause.clone(),
            });
        }
        cause
    }

    /// The cause, once failed.
    pub fn failure(&self) -> Option<&Arc<ConnectionFailure>> {
        self.failed.as_ref()
    }

    /// Requests queued or sent and not yet resolved.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_frame(api_key: i16) -> BytesMut {
        let mut f = BytesMut::new();
        f.extend_from_slice(&8i32.to_be_bytes());
        f.extend_from_slice(&api_key.to_be_bytes());
        f.extend_from_slice(&0i16.to_be_bytes());
        f.extend_from_slice(&(-1i32).to_be_bytes());
        f
    }

    fn response(id: i32, body: &[u8]) -> Vec<u8> {
        let mut out = ((4 + body.len()) as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn ids_are_patched_in_order_and_replies_match_out_of_order() {
        let now = Instant::now();
        let mut s = ConnectionState::new(1 << 20);
        let a = s.start_request(now, request_frame(3), T).unwrap();
        let b = s.start_request(now, request_frame(3), T).unwrap();
        assert_eq!((a, b), (0, 1));
        let f0 = s.poll_transmit(now).unwrap();
        assert_eq!(&f0[8..12], &0i32.to_be_bytes());
        assert_eq!(&s.poll_transmit(now).unwrap()[8..12], &1i32.to_be_bytes());
        assert!(s.poll_transmit(now).is_none());

        // Reply to b first, split across two reads.
        let bytes = [response(1, b"bee"), response(0, b"ay")].concat();
        s.handle_bytes(now, &bytes[..5]);
        assert!(s.poll_event().is_none());
        s.handle_bytes(now, &bytes[5..]);
        match s.poll_event() {
            Some(Event::Response {
                correlation_id: 1,
                frame,
            }) => assert_eq!(&frame[4..], b"bee"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.poll_event(),
            Some(Event::Response {
                correlation_id: 0,
                ..
            })
        ));
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn timeouts_expire_in_deadline_order_and_late_replies_are_dropped() {
        let t0 = Instant::now();
        let mut s = ConnectionState::new(1 << 20);
        let a = s
            .start_request(t0, request_frame(1), Duration::from_secs(5))
            .unwrap();
        let b = s
            .start_request(t0, request_frame(1), Duration::from_secs(1))
            .unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        s.handle_timeout(t0 + Duration::from_millis(999));
        assert!(s.poll_event().is_none());
        s.handle_timeout(t0 + Duration::from_secs(1));
        assert!(
            matches!(s.poll_event(), Some(Event::TimedOut { correlation_id }) if correlation_id == b)
        );
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        // The late reply to b is ignored; a is still answered normally.
        s.handle_bytes(t0, &response(b, b""));
        s.handle_bytes(t0, &response(a, b""));
        assert!(s.failure().is_none());
        assert!(
            matches!(s.poll_event(), Some(Event::Response { correlation_id, .. }) if correlation_id == a)
        );
    }

    #[test]
    fn a_reply_nobody_asked_for_fails_every_request_with_one_cause() {
        let now = Instant::now();
        let mut s = ConnectionState::new(1 << 20);
        s.start_request(now, request_frame(0), T).unwrap();
        s.start_request(now, request_frame(0), T).unwrap();
        s.handle_bytes(now, &response(77, b""));
        let causes: Vec<_> = std::iter::from_fn(|| s.poll_event())
            .map(|e| match e {
                Event::Failed { cause, .. } => cause,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(causes.len(), 2);
        assert!(Arc::ptr_eq(&causes[0], &causes[1]));
        assert!(matches!(
            *causes[0],
            ConnectionFailure::UnknownCorrelationId(77)
        ));
        assert!(s.start_request(now, request_frame(0), T).is_err());
        assert!(s.poll_transmit(now).is_none());
    }

    #[test]
    fn oversized_frame_fails_before_its_body_arrives() {
        let now = Instant::now();
        let mut s = ConnectionState::new(1024);
        s.start_request(now, request_frame(0), T).unwrap();
        s.handle_bytes(now, &(1_000_000i32).to_be_bytes());
        assert!(matches!(s.poll_event(), Some(Event::Failed { .. })));
    }

    #[test]
    fn throttle_holds_back_transmission_until_it_ends() {
        let t0 = Instant::now();
        let mut s = ConnectionState::new(1 << 20);
        s.throttle(t0, 250);
        s.start_request(t0, request_frame(0), T).unwrap();
        assert!(s.poll_transmit(t0).is_none());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(250)));
        assert!(s.poll_transmit(t0 + Duration::from_millis(249)).is_none());
        assert!(s.poll_transmit(t0 + Duration::from_millis(250)).is_some());
        // A shorter throttle never shortens one in force.
        s.throttle(t0, 500);
        s.throttle(t0, 10);
        s.start_request(t0, request_frame(0), T).unwrap();
        assert!(s.poll_transmit(t0 + Duration::from_millis(499)).is_none());
    }

    #[test]
    fn cancelled_request_is_forgotten_and_its_reply_ignored() {
        let now = Instant::now();
        let mut s = ConnectionState::new(1 << 20);
        let id = s.start_request(now, request_frame(0), T).unwrap();
        s.cancel(id);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.poll_timeout(), None);
        s.handle_bytes(now, &response(id, b"x"));
        assert!(s.poll_event().is_none());
        assert!(s.failure().is_none());
    }
}
