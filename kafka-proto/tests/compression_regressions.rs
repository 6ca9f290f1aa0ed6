//! Inputs the fuzz targets once crashed on, kept as plain tests so the stable suite guards
//! them too. Each must decode without panicking, and the cap must be exact: whatever decodes
//! under a large cap decodes identically under a cap of exactly its length.

use kafka_proto::compression::{Compression, decompress};

fn input(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/regressions/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn cap_is_exact(codec: Compression, data: &[u8]) {
    if let Ok(out) = decompress(codec, data, 64 * 1024) {
        assert_eq!(decompress(codec, data, out.len()).as_ref(), Ok(&out));
    }
}

/// Concatenated lz4 frames with different block sizes: lz4_flex keeps buffers sized for the
/// first frame and asserts on the next, so each frame needs a fresh decoder.
#[test]
fn lz4_frames_with_different_block_sizes() {
    for name in ["lz4-mixed-block-sizes.bin", "lz4-mixed-block-sizes-2.bin"] {
        cap_is_exact(Compression::Lz4, &input(name));
    }
}

/// A zstd frame declaring 56 bytes of content that produces 1: corrupt, whatever the cap.
#[test]
fn zstd_frame_lying_about_its_content_size_is_corrupt() {
    let data = input("zstd-lying-content-size.bin");
    assert!(decompress(Compression::Zstd, &data, 64 * 1024).is_err());
    assert!(decompress(Compression::Zstd, &data, 1).is_err());
}

/// A frame header declaring 61 bytes, then nothing: lz4_flex took the missing block header as
/// a clean end. Truncated frames, with or without a declared size, are corrupt.
#[test]
fn truncated_lz4_frames_are_corrupt() {
    let data = input("lz4-truncated-frame.bin");
    assert!(decompress(Compression::Lz4, &data, 64 * 1024).is_err());
    assert!(decompress(Compression::Lz4, &data, 0).is_err());

    let mut frame = Vec::new();
    kafka_proto::compression::compress(Compression::Lz4, b"some payload", &mut frame).unwrap();
    assert_eq!(
        decompress(Compression::Lz4, &frame, 1024).unwrap(),
        b"some payload"
    );
    for cut in 1..=4 {
        let short = &frame[..frame.len() - cut];
        assert!(
            decompress(Compression::Lz4, short, 1024).is_err(),
            "EndMark cut by {cut} bytes accepted"
        );
    }
}
