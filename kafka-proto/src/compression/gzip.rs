//! gzip (RFC 1952) as Kafka's codec id 1, through flate2's pure-Rust miniz_oxide backend.
//!
//! Decoding accepts several concatenated gzip members, as `java.util.zip.GZIPInputStream`
//! does, so a payload written in pieces by some other client still decodes.

use std::io::Write;

use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;

use super::{Compression, CompressionError, read_bounded};

const CODEC: Compression = Compression::Gzip;

pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
    // Level 6 is what the Java client and librdkafka use when no level is configured.
    let mut encoder = GzEncoder::new(out, flate2::Compression::default());
    encoder
        .write_all(input)
        .and_then(|()| encoder.try_finish())
        .map_err(|e| CompressionError::compress_failed(CODEC, e))
}

pub(super) fn decompress(input: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
    if input.is_empty() {
        return Err(CompressionError::corrupt(CODEC, "empty payload"));
    }
    read_bounded(CODEC, max, input.len().saturating_mul(4), || {
        Ok(MultiGzDecoder::new(input))
    })
}
