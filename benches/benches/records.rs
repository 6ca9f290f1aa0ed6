//! Record batch v2 encode and decode, per codec, against two baselines measured in the same
//! run over the same bytes: CRC32C (which every encode and every verified decode pays) and
//! memcpy (the floor for anything that touches every byte).
//!
//! Throughput is always in bytes of the *uncompressed* batch, so codecs compare with each other
//! and with the baselines. `cargo bench -p benches --bench records -- --warm-up-time 1
//! --measurement-time 3`; `cargo run --release -p benches --bin records-report` prints the
//! goal ratios.

use std::hint::black_box;

use benches::{Fixture, OUT_OF_CACHE_BYTES, SHAPES, decode, memcpy};
use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kafka_proto::records::Compression;

fn records(c: &mut Criterion) {
    for shape in SHAPES {
        let fixture = Fixture::new(shape);
        let plain = fixture.encoded(Compression::None);
        let mut group = c.benchmark_group(format!("records/{}", shape.name));
        group.throughput(Throughput::Bytes(plain.len() as u64));

        group.bench_function("baseline/memcpy", |b| {
            let mut dst = vec![0u8; plain.len()];
            b.iter(|| memcpy(black_box(&mut dst), black_box(&plain)));
        });
        group.bench_function("baseline/crc32c", |b| {
            b.iter(|| crc32c::crc32c(black_box(&plain)));
        });

        for codec in Compression::ALL {
            group.bench_function(BenchmarkId::new("encode", codec), |b| {
                let mut buf = BytesMut::new();
                let mut scratch = Vec::new();
                b.iter(|| fixture.encode(codec, &mut buf, &mut scratch));
            });
        }
        for codec in Compression::ALL {
            let batch = fixture.encoded(codec);
            group.bench_function(BenchmarkId::new("decode", codec), |b| {
                b.iter(|| decode(black_box(&batch), true));
            });
        }
        group.bench_function("decode-no-crc/none", |b| {
            b.iter(|| decode(black_box(&plain), false));
        });
        group.finish();
    }

    let mut group = c.benchmark_group("baseline/memcpy-out-of-cache");
    group.throughput(Throughput::Bytes(OUT_OF_CACHE_BYTES as u64));
    group.sample_size(10);
    group.bench_function("64MiB", |b| {
        let src = vec![0x5Au8; OUT_OF_CACHE_BYTES];
        let mut dst = vec![0u8; OUT_OF_CACHE_BYTES];
        b.iter(|| memcpy(black_box(&mut dst), black_box(&src)));
    });
    group.finish();
}

criterion_group!(benches, records);
criterion_main!(benches);
