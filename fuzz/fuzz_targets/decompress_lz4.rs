//! Lz4: decompressing arbitrary bytes under a small cap never panics and respects the cap, and
//! compress-then-decompress gives the input back (see `common/decompress.rs`).
#![no_main]

#[path = "common/decompress.rs"]
mod common;

use kafka_proto::compression::Compression;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::check(Compression::Lz4, data));
