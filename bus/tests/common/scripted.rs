//! The wire plumbing the scripted brokers in `bus/tests` share: reading whole request frames,
//! writing a response frame, and an ApiVersions answer offering given versions. Each test file
//! keeps only what its broker answers.

use bytes::{Bytes, BytesMut};
use kafka_proto::messages::api_versions_response::ApiVersion;
use kafka_proto::messages::{ApiVersionsResponse, ResponseHeader};
use kafka_proto::version::response_header_version;
use kafka_proto::{ApiKey, Encode, FrameSplitter, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Splits what a client sends into whole request frames.
pub struct FrameReader {
    splitter: FrameSplitter,
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader {
            splitter: FrameSplitter::new(),
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// The next request frame, or `None` once the client is gone.
    pub async fn next(&mut self, stream: &mut TcpStream) -> Option<Bytes> {
        loop {
            if let Some(f) = self.splitter.next_frame().unwrap() {
                return Some(f);
            }
            match stream.read(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.splitter.push(&self.buf[..n]),
            }
        }
    }
}

/// The API key of a request frame.
pub fn api_key(frame: &Bytes) -> i16 {
    i16::from_be_bytes([frame[0], frame[1]])
}

/// Writes `body` as the response to request `correlation_id` at `version`.
pub async fn reply<R: Response>(
    stream: &mut TcpStream,
    correlation_id: i32,
    version: i16,
    body: &R,
) {
    let mut frame = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut frame, response_header_version(R::API_KEY, version))
        .unwrap();
    body.encode(&mut frame, version).unwrap();
    let _ = stream.write_all(&(frame.len() as i32).to_be_bytes()).await;
    let _ = stream.write_all(&frame).await;
}

/// An ApiVersions answer offering `0..=max` of each listed API.
pub fn api_versions(apis: &[(ApiKey, i16)]) -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    for &(k, max) in apis {
        let mut v = ApiVersion::default();
        v.api_key = k as i16;
        v.max_version = max;
        resp.api_keys.push(v);
    }
    resp
}
