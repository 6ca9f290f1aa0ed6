//! LZ4 as Kafka's codec id 3: the LZ4 *frame* format (lz4_Frame_format.md), which is what the
//! Java client (`KafkaLZ4BlockOutputStream`, KIP-57) and librdkafka write for magic 1 and 2.
//!
//! Not handled: the broken header checksum that Kafka clients before 0.10 wrote for magic 0
//! messages (KAFKA-3160); such payloads fail with a checksum error.

use std::io::{self, Read, Write};

use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::{Compression, CompressionError, read_bounded};

const CODEC: Compression = Compression::Lz4;
const FRAME_MAGIC: u32 = 0x184D_2204;
/// The pre-frame-format "legacy" stream some old tools write; lz4_flex decodes it too.
const LEGACY_MAGIC: u32 = 0x184C_2102;
/// Magic, FLG, BD and the header checksum.
const MIN_FRAME_HEADER: usize = 7;
/// FLG bit announcing an 8-byte content size after the BD byte.
const FLG_CONTENT_SIZE: u8 = 0x08;

pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
    // 64 KiB independent blocks: the Java client's default, and the smallest decoder memory.
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent);
    let mut encoder = FrameEncoder::with_frame_info(info, out);
    encoder
        .write_all(input)
        .map_err(|e| CompressionError::compress_failed(CODEC, e))?;
    encoder
        .finish()
        .map(|_| ())
        .map_err(|e| CompressionError::compress_failed(CODEC, e))
}

pub(super) fn decompress(input: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
    if input.is_empty() {
        return Err(CompressionError::corrupt(CODEC, "empty payload"));
    }
    // A frame that announces more content than the cap is refused before decoding a block.
    if let Some(declared) = declared_content_size(input)
        && declared > max as u64
    {
        return Err(CompressionError::TooLarge { codec: CODEC, max });
    }
    read_bounded(CODEC, max, input.len().saturating_mul(4), || {
        Ok(Frames {
            decoder: FrameDecoder::new(Tracked::new(input)),
            at_boundary: true,
            declared: None,
            produced: 0,
            legacy: false,
        })
    })
}

/// The input slice, remembering whether a read ever came up short. lz4_flex takes running
/// out of input where a block header should be as a clean end of frame, so a frame cut
/// before its EndMark would otherwise decode as complete.
struct Tracked<'a> {
    data: &'a [u8],
    ran_out: bool,
}

impl<'a> Tracked<'a> {
    fn new(data: &'a [u8]) -> Self {
        Tracked {
            data,
            ran_out: false,
        }
    }
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.data.len());
        if n < buf.len() {
            self.ran_out = true;
        }
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads every frame of the input in turn. lz4_flex's decoder reports end-of-stream at the end
/// of each frame, leaving its input positioned just past it; whatever follows must be another
/// frame (a non-frame is an error), never silently ignored. The magic and minimum header size
/// are checked here because the decoder treats a stream ending right after a magic as a clean
/// end.
struct Frames<'a> {
    decoder: FrameDecoder<Tracked<'a>>,
    at_boundary: bool,
    /// The current frame's declared content size, if its header has one.
    declared: Option<u64>,
    /// Bytes the current frame has produced so far.
    produced: u64,
    /// A legacy stream has no EndMark: it ends where the input does.
    legacy: bool,
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Read for Frames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.at_boundary {
                let rest = self.decoder.get_ref().data;
                if rest.is_empty() {
                    return Ok(0);
                }
                let magic = rest
                    .get(..4)
                    .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
                match magic {
                    Some(FRAME_MAGIC) if rest.len() >= MIN_FRAME_HEADER => {}
                    Some(LEGACY_MAGIC) if rest.len() > 4 => {}
                    Some(FRAME_MAGIC | LEGACY_MAGIC) => {
                        return Err(invalid("truncated lz4 frame header"));
                    }
                    _ => return Err(invalid("bytes after the last lz4 frame are not a frame")),
                }
                // A fresh decoder per frame: lz4_flex sizes its buffers from the first frame's
                // block size and asserts that invariant on the next frame, so reusing one
                // across concatenated frames with different block sizes is not sound.
                self.decoder = FrameDecoder::new(Tracked::new(rest));
                self.declared = declared_content_size(rest);
                self.legacy = magic == Some(LEGACY_MAGIC);
                self.produced = 0;
                self.at_boundary = false;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                self.produced += n as u64;
                return Ok(n);
            }
            // End of frame, as lz4_flex sees it: only real if the EndMark was there, and the
            // frame produced what its header declared (lz4_Frame_format.md, "Content Size").
            if self.decoder.get_ref().ran_out && !self.legacy {
                return Err(invalid(
                    "truncated lz4 frame: input ended before its EndMark",
                ));
            }
            if self.declared.is_some_and(|d| d != self.produced) {
                return Err(invalid("lz4 frame content size does not match its header"));
            }
            self.at_boundary = true;
        }
    }
}

/// The first frame's content size, when its header carries one.
fn declared_content_size(input: &[u8]) -> Option<u64> {
    let magic = u32::from_le_bytes(input.get(..4)?.try_into().ok()?);
    let flg = *input.get(4)?;
    if magic != FRAME_MAGIC || flg & FLG_CONTENT_SIZE == 0 {
        return None;
    }
    Some(u64::from_le_bytes(input.get(6..14)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_bytes_are_not_an_empty_stream() {
        let mut frame = Vec::new();
        compress(b"payload", &mut frame).unwrap();
        // The decoder alone would take a bare magic, or a short non-frame, as a clean end.
        for tail in [&FRAME_MAGIC.to_le_bytes()[..], b"junk", b"ab", &frame[..6]] {
            let mut input = frame.clone();
            input.extend_from_slice(tail);
            assert!(decompress(&input, 1 << 20).is_err(), "{tail:?}");
            assert!(decompress(tail, 1 << 20).is_err(), "{tail:?} alone");
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        assert_eq!(decompress(&two, 1 << 20).unwrap(), b"payloadpayload");
    }
}
