//! Requests and responses as they travel: size prefix, header at the right header version,
//! body. This is the only place that pairs a body with its header, so header-version rules
//! (see [`crate::version`]) cannot be applied inconsistently.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::error_code::ErrorCode;
use crate::frame::{begin_frame, finish_frame};
use crate::message::{Message, Request, Response};
use crate::messages::{ApiKey, RequestHeader, ResponseHeader};
use crate::version::{request_header_version, response_header_version};
use crate::wire::{Decode, Encode};

/// Appends one complete request frame (size prefix, header, body) to `buf`. On error, `buf` is
/// restored to its previous length.
pub fn encode_request<R: Request>(
    buf: &mut BytesMut,
    version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
    body: &R,
) -> Result<(), EncodeError> {
    let rollback = buf.len();
    let result = (|| {
        let start = begin_frame(buf);
        let mut header = RequestHeader::default();
        header.request_api_key = R::API_KEY as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = client_id.map(str::to_owned);
        header.encode(buf, request_header_version(R::API_KEY, version))?;
        body.encode(buf, version)?;
        finish_frame(buf, start).map_err(|_| EncodeError::TooLong {
            field: "frame",
            len: buf.len() - rollback,
        })
    })();
    if result.is_err() {
        buf.truncate(rollback);
    }
    result
}

/// The correlation id of a response frame (without its size prefix). It is the first field of
/// every response header version, so it can be read before knowing which request it answers.
pub fn peek_correlation_id(frame: &[u8]) -> Option<i32> {
    frame
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a response frame (without its size prefix) to request `R` sent at `version`,
/// requiring the body to use every byte.
pub fn decode_response<R: Response>(
    mut frame: Bytes,
    version: i16,
) -> Result<(ResponseHeader, R), DecodeError> {
    let header = ResponseHeader::decode(&mut frame, response_header_version(R::API_KEY, version))?;
    // KIP-511: a broker that does not know the ApiVersions version it was sent answers
    // UNSUPPORTED_VERSION in the v0 layout, whatever the version, so that body is read as v0.
    let version = if R::API_KEY == ApiKey::ApiVersions
        && frame.get(..2) == Some(&ErrorCode::UnsupportedVersion.code().to_be_bytes()[..])
    {
        0
    } else {
        version
    };
    let body = decode_exact::<R>(frame, version)?;
    Ok((header, body))
}

/// Decodes a request frame (without its size prefix), as a broker or a test peer would.
pub fn decode_request<R: Request>(mut frame: Bytes) -> Result<(RequestHeader, R), DecodeError> {
    // The key and version sit at fixed offsets in every request header version.
    let version = frame
        .get(2..4)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(-1);
    let header = RequestHeader::decode(&mut frame, request_header_version(R::API_KEY, version))?;
    let body = decode_exact::<R>(frame, header.request_api_version)?;
    Ok((header, body))
}

/// Decodes `M` at `version` from all of `buf`; leftover bytes are an error.
pub fn decode_exact<M: Message>(mut buf: Bytes, version: i16) -> Result<M, DecodeError> {
    let value = M::decode(&mut buf, version)?;
    if !buf.is_empty() {
        return Err(DecodeError::TrailingBytes {
            message: M::NAME,
            remaining: buf.len(),
        });
    }
    Ok(value)
}

/// Encodes `M` at `version` into a fresh buffer.
pub fn encode_to_bytes<M: Message>(value: &M, version: i16) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    value.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{
        ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    };

    #[test]
    fn request_frames_carry_the_right_header() {
        let mut buf = BytesMut::new();
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = "kbus".into();
        req.client_software_version = "0.1".into();
        encode_request(&mut buf, 3, 7, Some("me"), &req).unwrap();
        let len = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        // key 18, version 3, correlation 7, classic client id "me", empty tag section.
        assert_eq!(
            &buf[4..18],
            &[0, 18, 0, 3, 0, 0, 0, 7, 0, 2, b'm', b'e', 0, 5]
        );
        let (header, decoded) =
            decode_request::<ApiVersionsRequest>(buf.freeze().slice(4..)).unwrap();
        assert_eq!(header.correlation_id, 7);
        assert_eq!(header.client_id.as_deref(), Some("me"));
        assert_eq!(decoded, req);
    }

    #[test]
    fn api_versions_responses_use_header_v0_even_when_flexible() {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&42i32.to_be_bytes()); // header v0: correlation id only
        ApiVersionsResponse::default()
            .encode(&mut frame, 3)
            .unwrap();
        let (h, _) = decode_response::<ApiVersionsResponse>(frame.freeze(), 3).unwrap();
        assert_eq!(h.correlation_id, 42);
    }

    #[test]
    fn flexible_responses_have_a_tagged_header() {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&9i32.to_be_bytes());
        frame.extend_from_slice(&[0]); // header v1: empty tagged fields
        MetadataResponse::default().encode(&mut frame, 12).unwrap();
        let (h, _) = decode_response::<MetadataResponse>(frame.clone().freeze(), 12).unwrap();
        assert_eq!(h.correlation_id, 9);
        assert_eq!(peek_correlation_id(&frame), Some(9));
        // The same bytes read as v8 (header v0) leave bytes over or fail: never silently pass.
        assert!(decode_response::<MetadataResponse>(frame.freeze(), 8).is_err());
    }

    #[test]
    fn a_failed_encode_leaves_the_buffer_untouched() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let mut req = MetadataRequest::default();
        req.allow_auto_topic_creation = false; // v4+ only, and not ignorable
        assert!(matches!(
            encode_request(&mut buf, 3, 1, None, &req),
            Err(EncodeError::NonIgnorableField {
                field: "MetadataRequest.AllowAutoTopicCreation",
                version: 3
            })
        ));
        assert_eq!(&buf[..], b"keep");
    }
}
