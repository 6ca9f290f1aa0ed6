use bytes::BytesMut;
use kafka_proto::records::*;
use std::time::Instant;

#[test]
#[ignore]
fn perf() {
    // encode 100-byte records
    let value = vec![b'v'; 100];
    let key = b"key-0001";
    let mut buf = BytesMut::with_capacity(1 << 20);
    let n = 10_000;
    let iters = 200;
    let start = Instant::now();
    let mut total = 0usize;
    for _ in 0..iters {
        let mut enc = BatchEncoder::new(&mut buf, BatchParams::default());
        for i in 0..n {
            enc.append(1_700_000_000_000 + i as i64, Some(key), Some(&value), &[])
                .unwrap();
        }
        total += enc.encoded_len();
        drop(enc); // truncates: measures append only
    }
    let el = start.elapsed();
    eprintln!(
        "encode: {:.1} ns/record ({} bytes)",
        el.as_nanos() as f64 / (n * iters) as f64,
        total / iters
    );

    // finish cost (crc) per batch
    let mut enc = BatchEncoder::new(&mut buf, BatchParams::default());
    for i in 0..n {
        enc.append(i as i64, Some(key), Some(&value), &[]).unwrap();
    }
    let t = Instant::now();
    let b = enc.finish().unwrap();
    eprintln!("finish of {} bytes: {:?}", b.len(), t.elapsed());

    // decode 1 KiB records
    let value = vec![b'x'; 1024];
    let mut buf = BytesMut::new();
    let mut blob = BytesMut::new();
    for _ in 0..64 {
        let mut enc = BatchEncoder::new(&mut buf, BatchParams::default());
        for i in 0..64 {
            enc.append(i, Some(b"k"), Some(&value), &[]).unwrap();
        }
        blob.extend_from_slice(&enc.finish().unwrap());
    }
    let blob = blob.freeze();
    let len = blob.len();
    let iters = 200;
    let opts = DecodeOptions::default();
    let t = Instant::now();
    let mut count = 0;
    for _ in 0..iters {
        let d = decode_records(blob.clone(), &opts).unwrap();
        count += d.batches.len();
    }
    let el = t.elapsed();
    let dec_bw = (len * iters) as f64 / el.as_secs_f64() / 1e9;
    let mut dst = vec![0u8; len];
    let t = Instant::now();
    for _ in 0..iters {
        dst.copy_from_slice(&blob);
        std::hint::black_box(&mut dst);
    }
    let el2 = t.elapsed();
    let mc_bw = (len * iters) as f64 / el2.as_secs_f64() / 1e9;
    eprintln!(
        "decode: {dec_bw:.2} GB/s, memcpy {mc_bw:.2} GB/s, ratio {:.2} ({count})",
        dec_bw / mc_bw
    );
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(crc32c::crc32c(&blob));
    }
    eprintln!(
        "crc32c alone: {:.2} GB/s",
        (len * iters) as f64 / t.elapsed().as_secs_f64() / 1e9
    );
}
