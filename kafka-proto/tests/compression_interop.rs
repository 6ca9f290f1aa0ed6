//! Interoperability with the reference command-line tools (gzip, lz4, zstd): what we compress
//! they decode, and what they compress (at high levels, with checksums, linked lz4 blocks,
//! concatenated frames) we decode. A tool missing from the machine skips its codec.

use std::path::PathBuf;
use std::process::Command;

use kafka_proto::compression::{Compression, compress, decompress};

fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kafka-proto-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(tool: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn reference_tools_agree() {
    let mut data = Vec::new();
    for i in 0..50_000u32 {
        data.extend_from_slice(format!("record {i} partition {}\n", i % 13).as_bytes());
    }
    let dir = scratch_dir();
    let plain = dir.join("plain");
    std::fs::write(&plain, &data).unwrap();
    let plain = plain.to_str().unwrap();

    let cases: [(Compression, &str, &[&str]); 3] = [
        (Compression::Gzip, "gzip", &["-9"]),
        (Compression::Lz4, "lz4", &["-9", "--content-size", "-BD"]),
        (Compression::Zstd, "zstd", &["-19", "--check", "-q"]),
    ];
    for (codec, tool, strong) in cases {
        if !tool_available(tool) {
            eprintln!("skipping {codec}: `{tool}` not installed");
            continue;
        }
        // Ours, decoded by the tool.
        let mut ours = Vec::new();
        compress(codec, &data, &mut ours).unwrap();
        let file = dir.join(format!("ours.{}", codec.name()));
        std::fs::write(&file, &ours).unwrap();
        assert_eq!(
            run(tool, &["-d", "-c", file.to_str().unwrap()]),
            data,
            "{tool} decoding ours"
        );

        // The tool's default and strongest settings, decoded by us.
        for args in [&[][..], strong] {
            let theirs = run(tool, &[args, &["-c", plain]].concat());
            assert_eq!(
                decompress(codec, &theirs, 1 << 30).unwrap(),
                data,
                "{tool} {args:?}"
            );

            let mut twice = theirs.clone();
            twice.extend_from_slice(&theirs);
            assert_eq!(
                decompress(codec, &twice, 1 << 30).unwrap(),
                [&data[..], &data[..]].concat(),
                "{tool} {args:?}: concatenated frames"
            );

            let mut junk = theirs.clone();
            junk.extend_from_slice(b"junk");
            assert!(
                decompress(codec, &junk, 1 << 30).is_err(),
                "{tool} {args:?}: trailing junk"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
