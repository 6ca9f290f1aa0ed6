//! The wire plumbing the scripted brokers in `bus/tests` share: reading whole request frames,
//! writing a response frame, an ApiVersions answer offering given versions, and a dialer that
//! reaches a scripted broker over in-memory pipes (so its tests run in paused tokio time).
//! Each test file keeps only what its broker answers.

use bytes::{Bytes, BytesMut};
use kafka_proto::messages::api_versions_response::ApiVersion;
use kafka_proto::messages::{ApiVersionsResponse, ResponseHeader};
use kafka_proto::version::response_header_version;
use kafka_proto::{ApiKey, Encode, FrameSplitter, Response};
use std::future::Future;

use bus::backoff::Backoff;
use bus::connection::{BoxTransport, Dial, DialFuture, Dialer};
use bus::{ClientConfig, ConnectionConfig};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

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
    pub async fn next<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Option<Bytes> {
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
pub async fn reply<R: Response, S: AsyncWrite + Unpin>(
    stream: &mut S,
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

/// The port every piped node advertises (`node-N:9092`).
#[allow(dead_code)]
pub const PIPE_PORT: i32 = 9092;

/// A dialer for a scripted cluster served over in-memory pipes: a dial of `node-N:9092`
/// opens a pipe and spawns `serve(N, server end)`. Nothing touches a socket or the wall
/// clock, so the tests run in paused tokio time, free of scheduling windows.
#[allow(dead_code)]
pub fn pipe_dialer<F, Fut>(serve: F) -> Dialer
where
    F: Fn(i32, DuplexStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    struct Pipes<F>(F);
    impl<F, Fut> Dial for Pipes<F>
    where
        F: Fn(i32, DuplexStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a> {
            Box::pin(async move {
                let node = addr
                    .strip_prefix("node-")
                    .and_then(|rest| rest.strip_suffix(&format!(":{PIPE_PORT}")))
                    .and_then(|n| n.parse::<i32>().ok())
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("no scripted broker at {addr}"),
                        )
                    })?;
                let (client, server) = tokio::io::duplex(1 << 20);
                tokio::spawn((self.0)(node, server));
                Ok(Box::new(client) as BoxTransport)
            })
        }
    }
    Dialer::new(Pipes(serve))
}

/// A client of a piped cluster (see [`pipe_dialer`]) that bootstraps from node 1 and retries
/// after 5 to 20 ms.
#[allow(dead_code)]
pub fn pipe_client_config(dialer: Dialer) -> ClientConfig {
    ClientConfig::new([format!("node-1:{PIPE_PORT}")])
        .retry_backoff(Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(20),
        ))
        .connection(ConnectionConfig::default().dialer(dialer))
}
