//! Snappy as Kafka's codec id 2.
//!
//! Two framings arrive on the wire: raw snappy blocks (a varint uncompressed length, then the
//! compressed stream), which librdkafka writes and which we write too; and the xerial
//! `snappy-java` stream format the Java client writes: the magic `0x82 'S' 'N' 'A' 'P' 'P' 'Y'
//! 0x00`, a big-endian i32 version and i32 minimum-compatible version, then chunks, each a
//! big-endian i32 length followed by one raw snappy block. Decoding tells them apart by the
//! magic, as the Java client does.
//!
//! Snappy is not streamed: every raw block states its uncompressed length up front. That
//! length is checked against the cap and against the most that many input bytes can expand to
//! before anything is allocated.

use super::{Compression, CompressionError};

const CODEC: Compression = Compression::Snappy;
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic plus the two i32 version fields.
const XERIAL_HEADER_LEN: usize = 16;
/// The best ratio a snappy element achieves is a 3-byte copy producing 64 bytes, so a block
/// claiming more than 22 times its size cannot be honest.
const MAX_EXPANSION: usize = 22;

pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
    let bound = snap::raw::max_compress_len(input.len());
    if bound == 0 {
        return Err(CompressionError::compress_failed(
            CODEC,
            "input too large for snappy",
        ));
    }
    let start = out.len();
    out.resize(start + bound, 0);
    match snap::raw::Encoder::new().compress(input, &mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(CompressionError::compress_failed(CODEC, e))
        }
    }
}

pub(super) fn decompress(input: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
    if input.starts_with(&XERIAL_MAGIC) {
        decompress_xerial(input, max)
    } else {
        let len = block_len(input, max)?;
        let mut out = vec![0u8; len];
        decompress_block(input, &mut out)?;
        Ok(out)
    }
}

/// The uncompressed length a raw block declares, once it is known to be within the cap and
/// plausible for the block's size.
fn block_len(block: &[u8], max: usize) -> Result<usize, CompressionError> {
    if block.is_empty() {
        return Err(CompressionError::corrupt(CODEC, "empty block"));
    }
    let len = snap::raw::decompress_len(block).map_err(|e| CompressionError::corrupt(CODEC, e))?;
    if len > max {
        return Err(CompressionError::TooLarge { codec: CODEC, max });
    }
    if len > block.len().saturating_mul(MAX_EXPANSION) {
        return Err(CompressionError::corrupt(
            CODEC,
            format_args!("{}-byte block claims {len} uncompressed bytes", block.len()),
        ));
    }
    Ok(len)
}

fn decompress_block(block: &[u8], out: &mut [u8]) -> Result<(), CompressionError> {
    let n = snap::raw::Decoder::new()
        .decompress(block, out)
        .map_err(|e| CompressionError::corrupt(CODEC, e))?;
    if n != out.len() {
        return Err(CompressionError::corrupt(
            CODEC,
            "block shorter than its declared length",
        ));
    }
    Ok(())
}

/// Walks the xerial chunks, yielding each raw block after checking its length prefix against
/// the bytes that remain.
fn xerial_chunks(input: &[u8]) -> impl Iterator<Item = Result<&[u8], CompressionError>> {
    let mut rest = input.get(XERIAL_HEADER_LEN..);
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let Some(r) = rest else {
            failed = true;
            return Some(Err(CompressionError::corrupt(
                CODEC,
                "truncated xerial header",
            )));
        };
        if r.is_empty() {
            return None;
        }
        let chunk = r.get(..4).and_then(|len| {
            let len = i32::from_be_bytes(len.try_into().ok()?);
            let len = usize::try_from(len).ok()?;
            r.get(4..4 + len).map(|chunk| (chunk, &r[4 + len..]))
        });
        match chunk {
            Some((chunk, tail)) => {
                rest = Some(tail);
                Some(Ok(chunk))
            }
            None => {
                failed = true;
                Some(Err(CompressionError::corrupt(
                    CODEC,
                    "truncated or invalid xerial chunk",
                )))
            }
        }
    })
}

fn decompress_xerial(input: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
    // First pass sums the declared lengths (each already bounded by its chunk's size), so the
    // output is allocated once and only after the total is known to be under the cap.
    let mut total = 0usize;
    for chunk in xerial_chunks(input) {
        let chunk = chunk?;
        if chunk.is_empty() {
            continue;
        }
        total = total.saturating_add(block_len(chunk, max)?);
        if total > max {
            return Err(CompressionError::TooLarge { codec: CODEC, max });
        }
    }
    let mut out = vec![0u8; total];
    let mut at = 0;
    for chunk in xerial_chunks(input) {
        let chunk = chunk?;
        if chunk.is_empty() {
            continue;
        }
        let len = block_len(chunk, max)?;
        let dst = out
            .get_mut(at..at + len)
            .ok_or_else(|| CompressionError::corrupt(CODEC, "chunk lengths changed"))?;
        decompress_block(chunk, dst)?;
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames raw blocks the way snappy-java's `SnappyOutputStream` does.
    fn xerial(chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for c in chunks {
            let mut block = Vec::new();
            compress(c, &mut block).unwrap();
            out.extend_from_slice(&(block.len() as i32).to_be_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    #[test]
    fn xerial_frames_decode() {
        let framed = xerial(&[b"hello ", b"xerial ", b"world"]);
        assert_eq!(decompress(&framed, 1 << 20).unwrap(), b"hello xerial world");
        assert_eq!(decompress(&xerial(&[]), 1 << 20).unwrap(), b"");
        assert!(matches!(
            decompress(&framed, 10),
            Err(CompressionError::TooLarge { max: 10, .. })
        ));
        // A cut between chunks is indistinguishable from a shorter stream; any other cut errors.
        for cut in 0..framed.len() {
            if let Ok(prefix) = decompress(&framed[..cut], 1 << 20) {
                assert!(cut >= XERIAL_HEADER_LEN && b"hello xerial world".starts_with(&prefix));
            }
        }
        assert!(decompress(&framed[..framed.len() - 1], 1 << 20).is_err());
        assert!(decompress(&framed[..XERIAL_HEADER_LEN - 1], 1 << 20).is_err());
    }

    #[test]
    fn implausible_declared_length_is_refused_before_allocating() {
        // Preamble claiming 100 MiB for a 4-byte block.
        let mut block = Vec::new();
        let mut v = 100u32 << 20;
        while v >= 0x80 {
            block.push(v as u8 | 0x80);
            v >>= 7;
        }
        block.push(v as u8);
        assert!(matches!(
            decompress(&block, usize::MAX),
            Err(CompressionError::Corrupt { .. })
        ));
    }
}
