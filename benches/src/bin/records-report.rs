//! Prints the record codec's speed next to memcpy and CRC32C baselines measured in the same
//! run, and the two goal ratios:
//!
//! (a) encode overhead per 100 B record = (encode time - memcpy time of the same bytes) /
//!     records, goal <= 25 ns;
//! (b) uncompressed decode with CRC verification of 1 KiB records, as a fraction of memcpy
//!     bandwidth, goal >= 0.6x.
//!
//! Both are given against an in-cache memcpy (the batch, about 100 KiB, copied within L2: the
//! fair comparison, as the codec works on that same in-cache batch) and an out-of-cache one
//! (64 MiB copies, DRAM bandwidth). Times are the fastest of several samples, the least
//! disturbed by other processes; medians are printed too.
//!
//! `cargo run --release -p benches --bin records-report [-- --quick]`

use std::hint::black_box;
use std::time::Duration;

use benches::{Fixture, OUT_OF_CACHE_BYTES, SHAPES, Timing, decode, memcpy, time};
use bytes::BytesMut;
use kafka_proto::records::Compression;

const ENCODE_OVERHEAD_GOAL_NS: f64 = 25.0;
const DECODE_FRACTION_GOAL: f64 = 0.6;

struct Row {
    shape: &'static str,
    case: String,
    bytes: usize,
    records: usize,
    timing: Timing,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.timing.min_ns
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (sample_time, samples) = if quick {
        (Duration::from_millis(10), 7)
    } else {
        (Duration::from_millis(25), 21)
    };
    let run = |f: &mut dyn FnMut()| time(sample_time, samples, f);

    let mut rows: Vec<Row> = Vec::new();
    for shape in SHAPES {
        let fixture = Fixture::new(shape);
        let plain = fixture.encoded(Compression::None);
        let bytes = plain.len();
        let mut row = |case: String, timing: Timing| {
            rows.push(Row {
                shape: shape.name,
                case,
                bytes,
                records: shape.records,
                timing,
            })
        };

        let mut dst = vec![0u8; bytes];
        row(
            "memcpy (in cache)".into(),
            run(&mut || memcpy(black_box(&mut dst), black_box(&plain))),
        );
        row(
            "crc32c".into(),
            run(&mut || {
                black_box(crc32c::crc32c(black_box(&plain)));
            }),
        );
        for codec in Compression::ALL {
            let mut buf = BytesMut::new();
            let mut scratch = Vec::new();
            row(
                format!("encode {codec}"),
                run(&mut || drop(black_box(fixture.encode(codec, &mut buf, &mut scratch)))),
            );
        }
        for codec in Compression::ALL {
            let batch = fixture.encoded(codec);
            row(
                format!("decode {codec} (crc)"),
                run(&mut || drop(black_box(decode(black_box(&batch), true)))),
            );
        }
        row(
            "decode none (no crc)".into(),
            run(&mut || drop(black_box(decode(black_box(&plain), false)))),
        );
    }

    let src = vec![0x5Au8; OUT_OF_CACHE_BYTES];
    let mut dst = vec![0u8; OUT_OF_CACHE_BYTES];
    let big = time(sample_time * 4, samples.min(11), || {
        memcpy(black_box(&mut dst), black_box(&src))
    });
    let dram_gbps = OUT_OF_CACHE_BYTES as f64 / big.min_ns;

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "record batch v2, release build; load average: {}",
        load.trim()
    );
    println!("throughput = bytes of the uncompressed batch / fastest sample time");
    println!();
    println!(
        "| {:<9} | {:<22} | {:>7} | {:>11} | {:>13} | {:>9} | {:>6} |",
        "shape", "case", "bytes", "ns/batch", "median ns", "ns/record", "GB/s"
    );
    println!(
        "|{:-<11}|{:-<24}|{:->9}|{:->13}|{:->15}|{:->11}|{:->8}|",
        "", "", "", "", "", "", ""
    );
    for r in &rows {
        println!(
            "| {:<9} | {:<22} | {:>7} | {:>11.0} | {:>13.0} | {:>9.1} | {:>6.2} |",
            r.shape,
            r.case,
            r.bytes,
            r.timing.min_ns,
            r.timing.median_ns,
            r.timing.min_ns / r.records as f64,
            r.gbps()
        );
    }
    println!(
        "| {:<9} | {:<22} | {:>7} | {:>11.0} | {:>13.0} | {:>9} | {:>6.2} |",
        "64MiB",
        "memcpy (out of cache)",
        OUT_OF_CACHE_BYTES,
        big.min_ns,
        big.median_ns,
        "-",
        dram_gbps
    );

    let find = |shape: &str, case: &str| -> &Row {
        rows.iter()
            .find(|r| r.shape == shape && r.case == case)
            .expect("measured above")
    };

    println!();
    let encode = find("1000x100B", "encode none");
    let copy = find("1000x100B", "memcpy (in cache)");
    let per_record = |memcpy_ns: f64| (encode.timing.min_ns - memcpy_ns) / encode.records as f64;
    let in_cache = per_record(copy.timing.min_ns);
    let out_of_cache = per_record(encode.bytes as f64 / dram_gbps);
    println!(
        "(a) encode overhead per 100 B record, uncompressed: {in_cache:.1} ns vs in-cache memcpy, \
         {out_of_cache:.1} ns vs out-of-cache memcpy of the same {} bytes (goal <= {ENCODE_OVERHEAD_GOAL_NS} ns): {}",
        encode.bytes,
        verdict(in_cache <= ENCODE_OVERHEAD_GOAL_NS)
    );

    let decode = find("100x1KiB", "decode none (crc)");
    let copy = find("100x1KiB", "memcpy (in cache)");
    let crc = find("100x1KiB", "crc32c");
    let no_crc = find("100x1KiB", "decode none (no crc)");
    let vs_cache = decode.gbps() / copy.gbps();
    let vs_dram = decode.gbps() / dram_gbps;
    println!(
        "(b) decode of 1 KiB records with CRC: {:.2} GB/s = {vs_cache:.2}x in-cache memcpy ({:.2} GB/s), \
         {vs_dram:.2}x out-of-cache memcpy ({dram_gbps:.2} GB/s) (goal >= {DECODE_FRACTION_GOAL}x in cache): {}",
        decode.gbps(),
        copy.gbps(),
        verdict(vs_cache >= DECODE_FRACTION_GOAL)
    );
    println!(
        "    of which CRC32C {:.0} ns ({:.0}%), the rest {:.0} ns = {:.1} ns/record (decode without CRC: {:.0} ns)",
        crc.timing.min_ns,
        100.0 * crc.timing.min_ns / decode.timing.min_ns,
        decode.timing.min_ns - crc.timing.min_ns,
        (decode.timing.min_ns - crc.timing.min_ns) / decode.records as f64,
        no_crc.timing.min_ns
    );
    println!(
        "    ceiling with this CRC32C and a free parser: {:.2}x in-cache memcpy",
        crc.gbps() / copy.gbps()
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
