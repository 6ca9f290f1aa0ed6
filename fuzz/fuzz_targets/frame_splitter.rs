//! The frame splitter must yield the same frames (or the same error) however the stream is
//! chunked, and must never buffer an over-cap frame.
#![no_main]

use kafka_proto::FrameSplitter;
use libfuzzer_sys::fuzz_target;

const CAP: usize = 1 << 16;

fn drain(s: &mut FrameSplitter, out: &mut Vec<Vec<u8>>) -> Option<String> {
    loop {
        match s.next_frame() {
            Ok(Some(f)) => out.push(f.to_vec()),
            Ok(None) => return None,
            Err(e) => return Some(e.to_string()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&stride, stream)) = data.split_first() else { return };
    let stride = usize::from(stride % 17) + 1;

    let mut whole = FrameSplitter::with_max_frame_size(CAP);
    whole.push(stream);
    let mut expected = Vec::new();
    let expected_err = drain(&mut whole, &mut expected);

    let mut chunked = FrameSplitter::with_max_frame_size(CAP);
    let mut got = Vec::new();
    let mut got_err = None;
    for chunk in stream.chunks(stride) {
        chunked.push(chunk);
        if let Some(e) = drain(&mut chunked, &mut got) {
            got_err = Some(e);
            break;
        }
        assert!(chunked.buffered_len() <= CAP + 4 + stride, "buffered past the cap");
    }
    assert_eq!(got, expected, "chunking changed the frames");
    assert_eq!(got_err.is_some(), expected_err.is_some(), "chunking changed the outcome");
    for f in &got {
        assert!(f.len() <= CAP);
    }
});
