//! Zstandard (RFC 8878) as Kafka's codec id 4, added by KIP-110 for magic 2 only, through the
//! pure-Rust ruzstd.
//!
//! Decoding handles concatenated and skippable frames as the reference decoder does, checks
//! each frame's content checksum when present, and refuses a frame whose declared content size
//! or window exceeds the cap before decoding it.

use std::io::{self, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use ruzstd::encoding::CompressionLevel;

use super::{CapExceeded, Compression, CompressionError, read_bounded};

const CODEC: Compression = Compression::Zstd;
/// The reference decoder's default window limit (`ZSTD_WINDOWLOG_LIMIT_DEFAULT` = 27). Any
/// Kafka producer's frames fit, even at level 22 with an unknown source size.
const MAX_WINDOW: u64 = 128 * 1024 * 1024;

pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
    // Only the fastest level is implemented by ruzstd's encoder; it is roughly zstd level 1.
    ruzstd::encoding::compress(input, out, CompressionLevel::Fastest);
    Ok(())
}

pub(super) fn decompress(input: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
    if input.is_empty() {
        return Err(CompressionError::corrupt(CODEC, "empty payload"));
    }
    read_bounded(CODEC, max, input.len().saturating_mul(4), || {
        Ok(Frames {
            rest: input,
            decoder: FrameDecoder::new(),
            in_frame: false,
            max,
            declared: None,
            produced: 0,
        })
    })
}

/// A `Read` over every frame of the input in turn.
struct Frames<'a> {
    rest: &'a [u8],
    decoder: FrameDecoder,
    in_frame: bool,
    max: usize,
    /// The current frame's declared content size, if its header has one.
    declared: Option<u64>,
    /// Bytes the current frame has produced so far.
    produced: u64,
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

const FRAME_MAGIC: u32 = 0xFD2F_B528;

/// The content size a zstd frame header at the front of `input` declares, if it declares one.
/// Read here rather than through the decoder so that a single-segment frame (whose window *is*
/// its content size) claiming gigabytes is reported as over the cap, not as a bad window.
fn declared_content_size(input: &[u8]) -> Option<u64> {
    if u32::from_le_bytes(input.get(..4)?.try_into().ok()?) != FRAME_MAGIC {
        return None;
    }
    let descriptor = *input.get(4)?;
    let single_segment = descriptor & 0x20 != 0;
    let dict_id_len = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let fcs_len = match descriptor >> 6 {
        0 if single_segment => 1,
        0 => return None,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let at = 5 + usize::from(!single_segment) + dict_id_len;
    let field = input.get(at..at + fcs_len)?;
    let mut le = [0u8; 8];
    le[..fcs_len].copy_from_slice(field);
    let value = u64::from_le_bytes(le);
    // The two-byte form is offset by 256 (RFC 8878, section 3.1.1.1.4).
    Some(if fcs_len == 2 { value + 256 } else { value })
}

impl Frames<'_> {
    fn start_frame(&mut self) -> io::Result<()> {
        self.declared = declared_content_size(self.rest);
        self.produced = 0;
        if self.declared.is_some_and(|size| size > self.max as u64) {
            return Err(io::Error::other(CapExceeded));
        }
        self.decoder.set_max_window_size(MAX_WINDOW);
        match self.decoder.reset(&mut self.rest) {
            Ok(()) => {}
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                self.rest = self
                    .rest
                    .get(length as usize..)
                    .ok_or_else(|| invalid("truncated skippable frame"))?;
                return Ok(());
            }
            Err(e) => return Err(other(e)),
        }
        self.in_frame = true;
        Ok(())
    }

    fn end_frame(&mut self) -> io::Result<()> {
        if let (Some(stored), Some(computed)) = (
            self.decoder.get_checksum_from_data(),
            self.decoder.get_calculated_checksum(),
        ) && stored != computed
        {
            return Err(invalid("zstd content checksum mismatch"));
        }
        // ruzstd does not hold a frame to its declared size; RFC 8878 does (3.1.1.1.4). A
        // frame that lies about it is corrupt, and must not be judged by the lie against the cap.
        if self.declared.is_some_and(|d| d != self.produced) {
            return Err(invalid("zstd frame content size does not match its header"));
        }
        self.in_frame = false;
        Ok(())
    }
}

impl Read for Frames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.rest.is_empty() {
                    return Ok(0);
                }
                self.start_frame()?;
                continue;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                self.produced += n as u64;
                return Ok(n);
            }
            if self.decoder.is_finished() {
                self.end_frame()?;
                continue;
            }
            // Every block consumes at least its 3-byte header, so this loop always advances.
            self.decoder
                .decode_blocks(&mut self.rest, BlockDecodingStrategy::UptoBlocks(1))
                .map_err(other)?;
        }
    }
}
