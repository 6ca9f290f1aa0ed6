//! LZ4 as Kafka's codec id 3: the LZ4 *frame* format (lz4_Frame_format.md), which is what the
//! Java client (`KafkaLZ4BlockOutputStream`, KIP-57) and librdkafka write for magic 1 and 2.
//!
//! Not handled: the broken header checksum that Kafka clients before 0.10 wrote for magic 0
//! messages (KAFKA-3160); such payloads fail with a checksum error.

use std::io::Write;

use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::{Compression, CompressionError, read_bounded};

const CODEC: Compression = Compression::Lz4;
const FRAME_MAGIC: u32 = 0x184D_2204;
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
        Ok(FrameDecoder::new(input))
    })
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
