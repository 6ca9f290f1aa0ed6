//! Kafka's connection framing: every request and response travels as a 4-byte big-endian signed
//! size followed by that many bytes.
//!
//! The splitter is sans-IO: the caller feeds whatever chunks its transport produced and takes out
//! whole frames. The size prefix is attacker-controlled, so it is checked against a cap the moment
//! its 4 bytes are present, and memory is only ever grown by bytes that actually arrived, never by
//! what a prefix claims is coming.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::error::DecodeError;

/// Default cap on a frame body: 100 MiB, the same as the broker's default
/// `socket.request.max.bytes`, so any frame a stock broker would accept fits.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 104_857_600;

/// Length of the size prefix in bytes.
pub const FRAME_PREFIX_LEN: usize = 4;

/// The most capacity reserved ahead of data while a frame is incomplete. Reserving lets a large
/// frame arrive with fewer reallocations; bounding it means a hostile prefix cannot make us
/// allocate more than this beyond what was actually received.
const MAX_RESERVE_AHEAD: usize = 64 * 1024;

/// Reassembles size-prefixed frames from arbitrary byte chunks.
///
/// After a bad prefix (negative, or above the cap) the byte stream has lost its framing and can
/// never be trusted again, so the splitter stays poisoned: it drops further input and every later
/// [`next_frame`](Self::next_frame) returns the same error. The connection must be closed.
#[derive(Debug)]
pub struct FrameSplitter {
    buf: BytesMut,
    max_frame_size: usize,
    poisoned: Option<DecodeError>,
}

impl Default for FrameSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameSplitter {
    /// A splitter with the [`DEFAULT_MAX_FRAME_SIZE`] cap.
    pub fn new() -> Self {
        Self::with_max_frame_size(DEFAULT_MAX_FRAME_SIZE)
    }

    /// A splitter that rejects frame bodies longer than `max_frame_size` bytes.
    pub fn with_max_frame_size(max_frame_size: usize) -> Self {
        FrameSplitter {
            buf: BytesMut::new(),
            max_frame_size,
            poisoned: None,
        }
    }

    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Bytes received but not yet returned as frames (prefixes included).
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether a bad prefix has been seen; once true, it stays true.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Appends bytes from the transport. Chunk boundaries are irrelevant to the frames produced.
    ///
    /// If the prefix at the head of the buffer is bad, the splitter is poisoned right here and the
    /// buffered bytes are released, so a peer cannot make us hold data for a frame we will refuse.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.poisoned.is_some() || chunk.is_empty() {
            return;
        }
        self.buf.extend_from_slice(chunk);
        if let Err(error) = self.head_body_len() {
            self.poison(error);
        }
    }

    /// The receive buffer with room for at least `want` more bytes, for transports that read
    /// straight into it (tokio's `read_buf`) and so skip the copy [`push`](Self::push) makes.
    /// Append only. What is appended is checked by the next [`next_frame`](Self::next_frame),
    /// which poisons the splitter on a bad prefix exactly as `push` would.
    pub fn recv_buffer(&mut self, want: usize) -> &mut BytesMut {
        self.buf.reserve(want);
        &mut self.buf
    }

    /// Alias of [`push`](Self::push) for callers used to `BytesMut`'s vocabulary.
    pub fn extend_from_slice(&mut self, chunk: &[u8]) {
        self.push(chunk);
    }

    /// The next complete frame body (without its prefix), or `Ok(None)` if more bytes are needed.
    ///
    /// The frame is a zero-copy slice of the receive buffer.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        let body_len = match self.head_body_len() {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(None),
            Err(error) => {
                self.poison(error.clone());
                return Err(error);
            }
        };
        // body_len <= i32::MAX, so this cannot overflow even on a 32-bit target.
        let frame_len = FRAME_PREFIX_LEN + body_len;
        let missing = frame_len.saturating_sub(self.buf.len());
        if missing > 0 {
            self.buf.reserve(missing.min(MAX_RESERVE_AHEAD));
            return Ok(None);
        }
        self.buf.advance(FRAME_PREFIX_LEN);
        Ok(Some(self.buf.split_to(body_len).freeze()))
    }

    /// The body length declared by the prefix at the head of the buffer, `None` if the prefix is
    /// not complete yet, or the rejection if it is negative or over the cap.
    fn head_body_len(&self) -> Result<Option<usize>, DecodeError> {
        let Some(prefix) = self.buf.first_chunk::<FRAME_PREFIX_LEN>() else {
            return Ok(None);
        };
        let size = i32::from_be_bytes(*prefix);
        match usize::try_from(size) {
            Ok(len) if len <= self.max_frame_size => Ok(Some(len)),
            _ => Err(DecodeError::FrameTooLarge {
                size: i64::from(size),
                max: self.max_frame_size,
            }),
        }
    }

    fn poison(&mut self, error: DecodeError) {
        self.poisoned = Some(error);
        // Nothing after a bad prefix can be framed, so keeping it would only hold memory.
        self.buf = BytesMut::new();
    }
}

/// Why a frame could not be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameEncodeError {
    /// The body is longer than the signed 32-bit size prefix can express.
    #[error("frame body of {len} bytes does not fit a 4-byte size prefix (max {max})", max = i32::MAX)]
    BodyTooLarge { len: usize },
    /// [`finish_frame`] found no room for a prefix at the recorded offset: the buffer was
    /// truncated after [`begin_frame`], or is not the buffer the frame was begun in.
    #[error("no size prefix at offset {start}: the buffer holds only {buffered} bytes")]
    PrefixMissing { start: usize, buffered: usize },
}

/// The 4 prefix bytes for a body of `body_len` bytes, for callers that write the prefix and the
/// body separately (for example with vectored I/O) instead of copying the body.
pub fn frame_prefix(body_len: usize) -> Result<[u8; FRAME_PREFIX_LEN], FrameEncodeError> {
    i32::try_from(body_len)
        .map(i32::to_be_bytes)
        .map_err(|_| FrameEncodeError::BodyTooLarge { len: body_len })
}

/// Appends `body` as one frame. On error nothing is written.
pub fn write_frame(buf: &mut BytesMut, body: &[u8]) -> Result<(), FrameEncodeError> {
    let prefix = frame_prefix(body.len())?;
    buf.reserve(FRAME_PREFIX_LEN + body.len());
    buf.put_slice(&prefix);
    buf.put_slice(body);
    Ok(())
}

/// Where a frame begun by [`begin_frame`] starts. Opaque so that the only offsets
/// [`finish_frame`] sees are ones `begin_frame` produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "pass it to finish_frame, or the frame keeps a zero size prefix"]
pub struct FrameStart(usize);

/// Reserves a placeholder prefix so a message can be encoded straight into `buf` without knowing
/// its length in advance; [`finish_frame`] patches the real length in afterwards.
pub fn begin_frame(buf: &mut BytesMut) -> FrameStart {
    let start = buf.len();
    buf.put_slice(&[0; FRAME_PREFIX_LEN]);
    FrameStart(start)
}

/// Writes the length of everything appended since `start` into the placeholder prefix.
///
/// On error the placeholder is left as it is and the bytes from `start` on do not form a valid
/// frame; the caller should discard them.
pub fn finish_frame(buf: &mut BytesMut, start: FrameStart) -> Result<(), FrameEncodeError> {
    let missing = FrameEncodeError::PrefixMissing {
        start: start.0,
        buffered: buf.len(),
    };
    let Some(body_start) = start.0.checked_add(FRAME_PREFIX_LEN) else {
        return Err(missing);
    };
    let Some(body_len) = buf.len().checked_sub(body_start) else {
        return Err(missing);
    };
    let prefix = frame_prefix(body_len)?;
    match buf.get_mut(start.0..body_start) {
        Some(slot) => {
            slot.copy_from_slice(&prefix);
            Ok(())
        }
        None => Err(missing),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use partitioner::{RandomSource, SplitMix64};

    use super::*;

    fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for frame in frames {
            write_frame(&mut buf, frame).unwrap();
        }
        buf.to_vec()
    }

    /// Feeds `wire` in the given chunks, draining frames after every push as a real reader would.
    fn split<'a>(
        splitter: &mut FrameSplitter,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.push(chunk);
            while let Some(frame) = splitter.next_frame().unwrap() {
                out.push(frame.to_vec());
            }
        }
        out
    }

    /// A draw in `0..n` from the partitioner crate's fixed-seed SplitMix64, so the "random"
    /// chunking is the same on every run.
    fn below(rng: &mut SplitMix64, n: usize) -> usize {
        (rng.next_u64() % n as u64) as usize
    }

    #[test]
    fn reading_into_the_buffer_frames_like_push() {
        let mut stream = Vec::new();
        for f in sample_frames() {
            stream.extend_from_slice(&(f.len() as i32).to_be_bytes());
            stream.extend_from_slice(&f);
        }
        let mut direct = FrameSplitter::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(7) {
            direct.recv_buffer(chunk.len()).extend_from_slice(chunk);
            while let Some(f) = direct.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got, sample_frames());
        // A bad prefix appended this way poisons at the next call.
        direct
            .recv_buffer(4)
            .extend_from_slice(&(-5i32).to_be_bytes());
        assert!(direct.next_frame().is_err());
        assert!(direct.is_poisoned());
    }

    fn sample_frames() -> Vec<Vec<u8>> {
        vec![
            b"hello".to_vec(),
            Vec::new(),
            (0..=255).collect(),
            vec![0xff; 1000],
            b"x".to_vec(),
            Vec::new(),
        ]
    }

    #[test]
    fn byte_by_byte_yields_the_same_frames() {
        let frames = sample_frames();
        let wire = encode(&frames);
        let mut splitter = FrameSplitter::new();
        assert_eq!(split(&mut splitter, wire.chunks(1)), frames);
        assert_eq!(splitter.buffered_len(), 0);
    }

    #[test]
    fn every_single_cut_point_yields_the_same_frames() {
        let frames = sample_frames();
        let wire = encode(&frames);
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            let mut splitter = FrameSplitter::new();
            assert_eq!(split(&mut splitter, [a, b]), frames, "cut at {cut}");
            assert_eq!(splitter.buffered_len(), 0);
        }
    }

    #[test]
    fn seeded_random_chunking_yields_the_same_frames() {
        let frames = sample_frames();
        let wire = encode(&frames);
        let mut rng = SplitMix64::new(0x5eed);
        for _ in 0..200 {
            let mut chunks = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(1 + below(&mut rng, rest.len().min(40)));
                chunks.push(chunk);
                rest = tail;
            }
            let mut splitter = FrameSplitter::new();
            assert_eq!(split(&mut splitter, chunks), frames);
            assert_eq!(splitter.buffered_len(), 0);
        }
    }

    #[test]
    fn several_frames_in_one_chunk() {
        let frames = vec![b"a".to_vec(), b"bc".to_vec(), b"def".to_vec()];
        let mut splitter = FrameSplitter::new();
        splitter.push(&encode(&frames));
        assert_eq!(splitter.next_frame().unwrap().unwrap(), &b"a"[..]);
        assert_eq!(splitter.next_frame().unwrap().unwrap(), &b"bc"[..]);
        assert_eq!(splitter.next_frame().unwrap().unwrap(), &b"def"[..]);
        assert_eq!(splitter.next_frame(), Ok(None));
    }

    #[test]
    fn zero_length_frame_is_a_frame() {
        let mut splitter = FrameSplitter::new();
        splitter.push(&[0, 0, 0]);
        assert_eq!(splitter.next_frame(), Ok(None));
        splitter.push(&[0]);
        assert_eq!(splitter.next_frame(), Ok(Some(Bytes::new())));
        assert_eq!(splitter.buffered_len(), 0);
    }

    #[test]
    fn incomplete_input_is_not_an_error() {
        let mut splitter = FrameSplitter::new();
        assert_eq!(splitter.next_frame(), Ok(None));
        splitter.push(&[0, 0, 0, 5, b'a', b'b']);
        assert_eq!(splitter.next_frame(), Ok(None));
        assert_eq!(splitter.buffered_len(), 6);
        splitter.push(b"cde");
        assert_eq!(
            splitter.next_frame(),
            Ok(Some(Bytes::from_static(b"abcde")))
        );
    }

    #[test]
    fn frames_are_slices_of_the_receive_buffer() {
        let mut splitter = FrameSplitter::new();
        splitter.push(&encode(&[b"abc".to_vec(), b"defg".to_vec()]));
        let first = splitter.next_frame().unwrap().unwrap();
        let second = splitter.next_frame().unwrap().unwrap();
        // Both frames come from one allocation: the second starts 4 prefix bytes after the first ends.
        assert_eq!(
            second.as_ptr() as usize - first.as_ptr() as usize,
            first.len() + FRAME_PREFIX_LEN
        );
    }

    #[test]
    fn oversized_prefix_is_rejected_without_allocating_for_it() {
        let mut splitter = FrameSplitter::new();
        splitter.push(&i32::MAX.to_be_bytes());
        assert!(splitter.is_poisoned());
        assert_eq!(
            splitter.next_frame(),
            Err(DecodeError::FrameTooLarge {
                size: i64::from(i32::MAX),
                max: DEFAULT_MAX_FRAME_SIZE,
            })
        );
        assert_eq!(splitter.buffered_len(), 0);
        assert!(splitter.buf.capacity() < 1024);
    }

    #[test]
    fn large_but_allowed_prefix_only_reserves_a_bounded_amount() {
        let declared = DEFAULT_MAX_FRAME_SIZE;
        let mut splitter = FrameSplitter::new();
        splitter.push(&i32::try_from(declared).unwrap().to_be_bytes());
        splitter.push(&[7; 10]);
        for _ in 0..3 {
            assert_eq!(splitter.next_frame(), Ok(None));
        }
        let capacity = splitter.buf.capacity();
        assert!(
            capacity <= 4 * MAX_RESERVE_AHEAD,
            "reserved {capacity} bytes for a frame that has sent 14"
        );
    }

    #[test]
    fn cap_is_inclusive_and_configurable() {
        let mut splitter = FrameSplitter::with_max_frame_size(3);
        assert_eq!(splitter.max_frame_size(), 3);
        splitter.push(&encode(&[b"abc".to_vec()]));
        assert_eq!(splitter.next_frame(), Ok(Some(Bytes::from_static(b"abc"))));
        splitter.push(&4i32.to_be_bytes());
        assert_eq!(
            splitter.next_frame(),
            Err(DecodeError::FrameTooLarge { size: 4, max: 3 })
        );
    }

    #[test]
    fn negative_size_is_rejected() {
        let mut splitter = FrameSplitter::new();
        splitter.push(&(-1i32).to_be_bytes());
        assert_eq!(
            splitter.next_frame(),
            Err(DecodeError::FrameTooLarge {
                size: -1,
                max: DEFAULT_MAX_FRAME_SIZE,
            })
        );
        let mut splitter = FrameSplitter::new();
        splitter.push(&i32::MIN.to_be_bytes());
        assert!(matches!(
            splitter.next_frame(),
            Err(DecodeError::FrameTooLarge { size, .. }) if size == i64::from(i32::MIN)
        ));
    }

    #[test]
    fn poisoned_splitter_keeps_failing_and_drops_input() {
        let mut splitter = FrameSplitter::with_max_frame_size(8);
        splitter.push(&100i32.to_be_bytes());
        let error = splitter.next_frame().unwrap_err();
        splitter.push(&encode(&[b"ok".to_vec()]));
        assert_eq!(splitter.buffered_len(), 0);
        assert_eq!(splitter.next_frame(), Err(error.clone()));
        assert_eq!(splitter.next_frame(), Err(error));
    }

    #[test]
    fn frames_before_a_bad_prefix_are_still_delivered() {
        let mut wire = encode(&[b"good".to_vec()]);
        wire.extend_from_slice(&(-7i32).to_be_bytes());
        let mut splitter = FrameSplitter::new();
        splitter.extend_from_slice(&wire);
        assert_eq!(splitter.next_frame(), Ok(Some(Bytes::from_static(b"good"))));
        assert!(splitter.next_frame().is_err());
        assert!(splitter.is_poisoned());
    }

    #[test]
    fn begin_and_finish_patch_the_length_in_place() {
        let mut buf = BytesMut::new();
        buf.put_slice(b"already here");
        let start = begin_frame(&mut buf);
        buf.put_slice(b"body");
        finish_frame(&mut buf, start).unwrap();
        assert_eq!(&buf[12..], &[0, 0, 0, 4, b'b', b'o', b'd', b'y']);

        let start = begin_frame(&mut buf);
        finish_frame(&mut buf, start).unwrap();
        let mut splitter = FrameSplitter::new();
        splitter.push(&buf[12..]);
        assert_eq!(splitter.next_frame(), Ok(Some(Bytes::from_static(b"body"))));
        assert_eq!(splitter.next_frame(), Ok(Some(Bytes::new())));
    }

    #[test]
    fn finish_on_a_truncated_buffer_is_an_error_not_a_panic() {
        let mut buf = BytesMut::new();
        buf.put_slice(b"xy");
        let start = begin_frame(&mut buf);
        buf.truncate(3);
        assert_eq!(
            finish_frame(&mut buf, start),
            Err(FrameEncodeError::PrefixMissing {
                start: 2,
                buffered: 3,
            })
        );
        let far = FrameStart(usize::MAX - 1);
        assert!(matches!(
            finish_frame(&mut buf, far),
            Err(FrameEncodeError::PrefixMissing { .. })
        ));
    }

    #[test]
    fn prefix_limits() {
        assert_eq!(frame_prefix(0), Ok([0, 0, 0, 0]));
        assert_eq!(frame_prefix(258), Ok([0, 0, 1, 2]));
        let max = usize::try_from(i32::MAX).unwrap();
        assert_eq!(frame_prefix(max), Ok([0x7f, 0xff, 0xff, 0xff]));
        assert_eq!(
            frame_prefix(max + 1),
            Err(FrameEncodeError::BodyTooLarge { len: max + 1 })
        );
    }

    proptest! {
        #[test]
        fn any_split_of_any_frames_yields_the_same_frames(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let wire = encode(&frames);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let chunks = points.windows(2).map(|w| &wire[w[0]..w[1]]);
            let mut splitter = FrameSplitter::new();
            prop_assert_eq!(split(&mut splitter, chunks), frames);
            prop_assert_eq!(splitter.buffered_len(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_errors_stick(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
        ) {
            let mut splitter = FrameSplitter::with_max_frame_size(256);
            let mut first_error = None;
            for chunk in &chunks {
                splitter.push(chunk);
                loop {
                    match splitter.next_frame() {
                        Ok(Some(frame)) => prop_assert!(frame.len() <= 256),
                        Ok(None) => break,
                        Err(error) => {
                            if let Some(first) = &first_error {
                                prop_assert_eq!(first, &error);
                            }
                            first_error = Some(error);
                            break;
                        }
                    }
                }
            }
            if first_error.is_some() {
                prop_assert!(splitter.is_poisoned());
                prop_assert_eq!(splitter.buffered_len(), 0);
            }
        }
    }
}
