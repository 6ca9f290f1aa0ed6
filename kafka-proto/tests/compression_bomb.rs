//! Decompression bombs: small payloads that would expand to gigabytes must be rejected with
//! the typed cap error, for every codec and through the record-batch decoder, while the
//! process's peak resident memory stays under 128 MiB.
//!
//! Everything runs in ONE test so no other test shares the process (and its `VmHWM`). The
//! bombs are assembled cheaply from a small compressed unit repeated many times, never by
//! compressing gigabytes of input.

use std::io::Write;

use bytes::Bytes;
use kafka_proto::compression::{
    self, Compression, CompressionError, DEFAULT_MAX_DECOMPRESSED_SIZE,
};
use kafka_proto::records::{DecodeOptions, RecordsError, decode_records};

const MIB: usize = 1024 * 1024;

/// gzip: deflate tops out near 1032:1, so one member holding 1 MiB of zeros compresses to
/// about 1 KiB. Kafka's gzip reader (like `GZIPInputStream`) decodes concatenated members, so
/// 1024 copies of that member make a ~1 MiB payload that expands to 1 GiB, four times the
/// default cap.
fn gzip_bomb() -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; MIB]).unwrap();
    let member = enc.finish().unwrap();
    member.repeat(1024)
}

/// snappy (raw): the preamble is a varint of the uncompressed length; declare 2^32 - 1 bytes
/// (the format's maximum) in front of 1 MiB of filler. It must be refused from the preamble
/// alone, before anything is allocated or decoded.
fn snappy_raw_bomb() -> Vec<u8> {
    let mut out = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    // Filler: copy-2 elements (tag 0b10, length 64, offset 1), the format's densest.
    for _ in 0..(MIB / 3) {
        out.extend_from_slice(&[(63 << 2) | 0b10, 1, 0]);
    }
    out
}

/// snappy (xerial framing, as the Java client writes it): snappy's best ratio is ~21:1 (a
/// 3-byte copy of 64 bytes), so no 1 MiB snappy payload can pass the default cap; this one
/// expands to ~21 MiB and is checked against an 8 MiB cap. Built from one raw block holding
/// 64 KiB of zeros, repeated as chunks.
fn snappy_xerial_bomb() -> Vec<u8> {
    let mut block = Vec::new();
    compression::compress(Compression::Snappy, &vec![0u8; 64 * 1024], &mut block).unwrap();
    let mut out = vec![0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    while out.len() < MIB {
        out.extend_from_slice(&(block.len() as i32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// lz4 frame: LZ4's ratio tops out near 255:1, so 4 MiB of zeros compress to one ~16 KiB
/// block. The frame header (magic, FLG, BD with 4 MiB blocks, header checksum) does not
/// depend on the block count, so the frame is the header, 256 copies of that block and the
/// end mark: ~4 MiB of input, 1 GiB of output.
fn lz4_bomb() -> Vec<u8> {
    let info = lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max4MB);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(&vec![0u8; 4 * MIB]).unwrap();
    let frame = enc.finish().unwrap();
    // magic(4) FLG BD HC, then one block (4-byte size + data), then the 4-byte end mark.
    let header = &frame[..7];
    let block_len = u32::from_le_bytes(frame[7..11].try_into().unwrap()) as usize;
    assert_eq!(block_len & 0x8000_0000, 0, "block should be compressed");
    assert_eq!(
        7 + 4 + block_len + 4,
        frame.len(),
        "expected a single block"
    );
    let block = &frame[7..11 + block_len];
    let mut out = header.to_vec();
    for _ in 0..256 {
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// zstd, hand-built: a frame header with no content size and a 128 KiB window (descriptor
/// 0x38: exponent 7, windowLog 17), then RLE blocks. An RLE block is a 3-byte header
/// (last-block bit, type 1 = RLE, size 128 KiB) plus the one byte to repeat, so 32768 blocks
/// (128 KiB of input) regenerate 4 GiB.
fn zstd_rle_bomb() -> Vec<u8> {
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
    let blocks = 32768;
    for i in 0..blocks {
        let last = u32::from(i == blocks - 1);
        let header = (128 * 1024u32) << 3 | 1 << 1 | last;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0xAB);
    }
    out
}

/// zstd single-segment frame declaring 4 GiB of content (8-byte content size field): must be
/// reported as over the cap from the header, not as a bad window.
fn zstd_declared_bomb() -> Vec<u8> {
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
    out.extend_from_slice(&(4u64 << 30).to_le_bytes());
    out.extend_from_slice(&[0x03, 0x00, 0x00, 0x00]); // last RLE block of size 0
    out
}

/// A v2 batch whose compressed records section is `payload`.
fn v2_batch(codec: Compression, payload: &[u8]) -> Vec<u8> {
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&i16::from(codec.id()).to_be_bytes());
    after_crc.extend_from_slice(&0i32.to_be_bytes());
    after_crc.extend_from_slice(&0i64.to_be_bytes());
    after_crc.extend_from_slice(&0i64.to_be_bytes());
    after_crc.extend_from_slice(&(-1i64).to_be_bytes());
    after_crc.extend_from_slice(&(-1i16).to_be_bytes());
    after_crc.extend_from_slice(&(-1i32).to_be_bytes());
    after_crc.extend_from_slice(&1i32.to_be_bytes());
    after_crc.extend_from_slice(payload);
    let mut batch = Vec::new();
    batch.extend_from_slice(&777i64.to_be_bytes());
    batch.extend_from_slice(&((9 + after_crc.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes());
    batch.push(2);
    batch.extend_from_slice(&crc32c::crc32c(&after_crc).to_be_bytes());
    batch.extend_from_slice(&after_crc);
    batch
}

/// A magic 1 gzip wrapper message whose value is `payload`.
fn v1_wrapper(payload: &[u8]) -> Vec<u8> {
    let mut body = vec![1u8, Compression::Gzip.id()];
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&(-1i32).to_be_bytes());
    body.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    body.extend_from_slice(payload);
    let mut entry = Vec::new();
    entry.extend_from_slice(&888i64.to_be_bytes());
    entry.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
    entry.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    entry.extend_from_slice(&body);
    entry
}

fn assert_capped(codec: Compression, payload: &[u8], max: usize) {
    let result = compression::decompress(codec, payload, max);
    assert_eq!(
        result.as_ref().map(Vec::len),
        Err(&CompressionError::TooLarge { codec, max }),
        "{codec} bomb of {} bytes",
        payload.len()
    );
}

fn peak_rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn bombs_are_rejected_with_bounded_memory() {
    let cap = DEFAULT_MAX_DECOMPRESSED_SIZE;

    let gzip = gzip_bomb();
    assert!(gzip.len() < 2 * MIB, "gzip bomb is {} bytes", gzip.len());
    assert_capped(Compression::Gzip, &gzip, cap);

    let snappy = snappy_raw_bomb();
    assert_capped(Compression::Snappy, &snappy, cap);
    assert_capped(Compression::Snappy, &snappy_xerial_bomb(), 8 * MIB);

    let lz4 = lz4_bomb();
    assert_capped(Compression::Lz4, &lz4, cap);

    let zstd = zstd_rle_bomb();
    assert_capped(Compression::Zstd, &zstd, cap);
    assert_capped(Compression::Zstd, &zstd_declared_bomb(), cap);

    // The same bombs through the record-batch decoder, with its default options.
    let options = DecodeOptions::default();
    for (codec, payload) in [
        (Compression::Gzip, &gzip),
        (Compression::Snappy, &snappy),
        (Compression::Lz4, &lz4),
        (Compression::Zstd, &zstd),
    ] {
        let err = decode_records(Bytes::from(v2_batch(codec, payload)), &options).unwrap_err();
        assert_eq!(
            err,
            RecordsError::Decompression {
                base_offset: 777,
                source: CompressionError::TooLarge { codec, max: cap },
            }
        );
    }
    // A smaller configured cap is honoured too.
    let err = decode_records(
        Bytes::from(v2_batch(Compression::Zstd, &zstd)),
        &options.with_max_decompressed_size(MIB),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        RecordsError::Decompression {
            source: CompressionError::TooLarge { max: MIB, .. },
            ..
        }
    ));
    // And a legacy (magic 1) compressed wrapper.
    let err = decode_records(Bytes::from(v1_wrapper(&gzip)), &options).unwrap_err();
    assert_eq!(
        err,
        RecordsError::Decompression {
            base_offset: 888,
            source: CompressionError::TooLarge {
                codec: Compression::Gzip,
                max: cap
            },
        }
    );

    let peak = peak_rss_bytes();
    eprintln!("peak RSS after all bombs: {} MiB", peak / MIB);
    assert!(peak < 128 * MIB, "peak RSS {} MiB", peak / MIB);
}
