//! Primitive types of the Kafka wire format (the "Protocol Primitive Types" section of the
//! protocol guide, and KIP-482 for the compact and tagged forms used by flexible versions).
//!
//! Decoders read from a `Bytes` cursor and check every length against the bytes that remain
//! *before* allocating or slicing, so a hostile length costs an error, not memory. Byte strings
//! are zero-copy slices of the input.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};

/// A 128-bit UUID as Kafka sends it (16 big-endian bytes). Kafka reserves the all-zero value
/// for "no id", which is also the default.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The all-zero id, Kafka's "unset" value.
    pub const ZERO: Uuid = Uuid([0; 16]);

    pub fn from_u128(v: u128) -> Self {
        Uuid(v.to_be_bytes())
    }

    pub fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6],
            b[7],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

/// Tagged fields this crate's spec revision does not know, kept verbatim so a message decoded
/// from a newer peer re-encodes without losing them (KIP-482 forward compatibility).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UnknownTaggedFields(pub BTreeMap<u32, Bytes>);

impl UnknownTaggedFields {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn insert(&mut self, tag: u32, data: Bytes) -> Option<Bytes> {
        self.0.insert(tag, data)
    }

    pub fn get(&self, tag: u32) -> Option<&Bytes> {
        self.0.get(&tag)
    }
}

impl fmt::Debug for UnknownTaggedFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

/// Known tagged fields that arrived holding their default value. Kafka's Java writer omits
/// such fields, but other peers (tansu, for one) write them; remembering which ones lets a
/// decoded message re-encode byte for byte. It is an encoding detail, not part of the value,
/// so it never affects equality. Tags in the spec are small; tags of 64 and above are not
/// tracked (the generator refuses specs that would need them).
#[derive(Clone, Copy, Default)]
pub struct TaggedDefaults(u64);

impl TaggedDefaults {
    pub fn contains(&self, tag: u32) -> bool {
        tag < 64 && self.0 & (1 << tag) != 0
    }

    pub fn insert(&mut self, tag: u32) {
        if tag < 64 {
            self.0 |= 1 << tag;
        }
    }

    /// Forget all recorded defaults, so encoding follows Kafka's rule of omitting them.
    pub fn clear(&mut self) {
        self.0 = 0;
    }
}

impl PartialEq for TaggedDefaults {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for TaggedDefaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((0..64u32).filter(|t| self.contains(*t)))
            .finish()
    }
}

fn need(buf: &Bytes, n: usize) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        Err(DecodeError::UnexpectedEof {
            needed: n,
            remaining: buf.remaining(),
        })
    } else {
        Ok(())
    }
}

macro_rules! fixed {
    ($get:ident, $put:ident, $ty:ty, $bget:ident, $bput:ident) => {
        #[inline]
        pub fn $get(buf: &mut Bytes) -> Result<$ty, DecodeError> {
            need(buf, std::mem::size_of::<$ty>())?;
            Ok(buf.$bget())
        }
        #[inline]
        pub fn $put(buf: &mut BytesMut, v: $ty) {
            buf.$bput(v);
        }
    };
}

fixed!(get_i8, put_i8, i8, get_i8, put_i8);
fixed!(get_i16, put_i16, i16, get_i16, put_i16);
fixed!(get_u16, put_u16, u16, get_u16, put_u16);
fixed!(get_i32, put_i32, i32, get_i32, put_i32);
fixed!(get_u32, put_u32, u32, get_u32, put_u32);
fixed!(get_i64, put_i64, i64, get_i64, put_i64);
fixed!(get_f64, put_f64, f64, get_f64, put_f64);

/// Kafka reads a boolean as "any non-zero byte is true", so we do too.
#[inline]
pub fn get_bool(buf: &mut Bytes) -> Result<bool, DecodeError> {
    Ok(get_i8(buf)? != 0)
}

#[inline]
pub fn put_bool(buf: &mut BytesMut, v: bool) {
    buf.put_u8(v as u8);
}

#[inline]
pub fn get_uuid(buf: &mut Bytes) -> Result<Uuid, DecodeError> {
    need(buf, 16)?;
    let mut b = [0u8; 16];
    buf.copy_to_slice(&mut b);
    Ok(Uuid(b))
}

#[inline]
pub fn put_uuid(buf: &mut BytesMut, v: &Uuid) {
    buf.put_slice(&v.0);
}

/// Unsigned LEB128 varint of at most 5 bytes (32 bits).
#[inline]
pub fn get_uvarint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = get_i8(buf)? as u8;
        if i == 4 && b > 0x0f {
            return Err(DecodeError::VarintTooLong { max_bytes: 5 });
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarintTooLong { max_bytes: 5 })
}

#[inline]
pub fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Unsigned LEB128 varint of at most 10 bytes (64 bits).
#[inline]
pub fn get_uvarlong(buf: &mut Bytes) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let b = get_i8(buf)? as u8;
        if i == 9 && b > 0x01 {
            return Err(DecodeError::VarintTooLong { max_bytes: 10 });
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarintTooLong { max_bytes: 10 })
}

#[inline]
pub fn put_uvarlong(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Zigzag-encoded signed 32-bit varint (record fields).
#[inline]
pub fn get_varint(buf: &mut Bytes) -> Result<i32, DecodeError> {
    let v = get_uvarint(buf)?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

#[inline]
pub fn put_varint(buf: &mut BytesMut, v: i32) {
    put_uvarint(buf, ((v << 1) ^ (v >> 31)) as u32);
}

/// Zigzag-encoded signed 64-bit varint (record fields).
#[inline]
pub fn get_varlong(buf: &mut Bytes) -> Result<i64, DecodeError> {
    let v = get_uvarlong(buf)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

#[inline]
pub fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_uvarlong(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Number of bytes `put_uvarint` writes for `v`.
#[inline]
pub fn uvarint_len(v: u32) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// Splits off `len` bytes after checking they are there.
#[inline]
pub fn take(buf: &mut Bytes, len: usize) -> Result<Bytes, DecodeError> {
    need(buf, len)?;
    Ok(buf.split_to(len))
}

/// What a length prefix measures: classic strings use an int16 prefix, everything else int32.
#[derive(Clone, Copy)]
enum LenOf {
    String,
    Bytes,
    Array,
}

impl LenOf {
    fn name(self) -> &'static str {
        match self {
            LenOf::String => "string",
            LenOf::Bytes => "bytes",
            LenOf::Array => "array",
        }
    }
}

/// Reads a length prefix. Returns `None` for null (-1 classic, 0 compact) and otherwise a
/// length already checked against the remaining bytes, so callers may slice or allocate it.
#[inline]
fn get_len(buf: &mut Bytes, compact: bool, what: LenOf) -> Result<Option<usize>, DecodeError> {
    let len: i64 = if compact {
        i64::from(get_uvarint(buf)?) - 1
    } else if let LenOf::String = what {
        i64::from(get_i16(buf)?)
    } else {
        i64::from(get_i32(buf)?)
    };
    let what = what.name();
    if len == -1 {
        return Ok(None);
    }
    if len < 0 || len as u64 > buf.remaining() as u64 {
        return Err(DecodeError::InvalidLength {
            what,
            length: len,
            remaining: buf.remaining(),
        });
    }
    Ok(Some(len as usize))
}

#[inline]
pub fn get_nullable_string(
    buf: &mut Bytes,
    compact: bool,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match get_len(buf, compact, LenOf::String)? {
        None => Ok(None),
        Some(len) => {
            let raw = buf.split_to(len);
            match std::str::from_utf8(&raw) {
                Ok(s) => Ok(Some(s.to_owned())),
                Err(_) => Err(DecodeError::InvalidUtf8 { field }),
            }
        }
    }
}

#[inline]
pub fn get_string(
    buf: &mut Bytes,
    compact: bool,
    field: &'static str,
    version: i16,
) -> Result<String, DecodeError> {
    get_nullable_string(buf, compact, field)?.ok_or(DecodeError::NullNotAllowed { field, version })
}

#[inline]
pub fn get_nullable_bytes(buf: &mut Bytes, compact: bool) -> Result<Option<Bytes>, DecodeError> {
    Ok(get_len(buf, compact, LenOf::Bytes)?.map(|len| buf.split_to(len)))
}

#[inline]
pub fn get_bytes(
    buf: &mut Bytes,
    compact: bool,
    field: &'static str,
    version: i16,
) -> Result<Bytes, DecodeError> {
    get_nullable_bytes(buf, compact)?.ok_or(DecodeError::NullNotAllowed { field, version })
}

/// Reads an array length. Like Kafka's own readers it rejects a count larger than the bytes
/// left, which bounds the work a hostile count can cause; callers still never pre-allocate
/// more than a small fixed capacity from it.
#[inline]
pub fn get_array_len(buf: &mut Bytes, compact: bool) -> Result<Option<usize>, DecodeError> {
    get_len(buf, compact, LenOf::Array)
}

/// The capacity to reserve for an array of `count` decoded elements: never trust the wire
/// for more than a small head start; `Vec` growth covers honest large arrays.
#[inline]
pub fn initial_capacity(count: usize) -> usize {
    count.min(64)
}

fn check_len(len: usize, max: usize, field: &'static str) -> Result<(), EncodeError> {
    if len > max {
        Err(EncodeError::TooLong { field, len })
    } else {
        Ok(())
    }
}

#[inline]
pub fn put_len(
    buf: &mut BytesMut,
    compact: bool,
    len: Option<usize>,
    string: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    match (compact, len) {
        (true, None) => put_uvarint(buf, 0),
        (true, Some(n)) => {
            check_len(n, u32::MAX as usize - 1, field)?;
            put_uvarint(buf, n as u32 + 1)
        }
        (false, None) if string => put_i16(buf, -1),
        (false, None) => put_i32(buf, -1),
        (false, Some(n)) if string => {
            check_len(n, i16::MAX as usize, field)?;
            put_i16(buf, n as i16)
        }
        (false, Some(n)) => {
            check_len(n, i32::MAX as usize, field)?;
            put_i32(buf, n as i32)
        }
    }
    Ok(())
}

#[inline]
pub fn put_nullable_string(
    buf: &mut BytesMut,
    compact: bool,
    v: Option<&str>,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_len(buf, compact, v.map(str::len), true, field)?;
    if let Some(s) = v {
        buf.put_slice(s.as_bytes());
    }
    Ok(())
}

#[inline]
pub fn put_string(
    buf: &mut BytesMut,
    compact: bool,
    v: &str,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_nullable_string(buf, compact, Some(v), field)
}

#[inline]
pub fn put_nullable_bytes(
    buf: &mut BytesMut,
    compact: bool,
    v: Option<&[u8]>,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_len(buf, compact, v.map(<[u8]>::len), false, field)?;
    if let Some(b) = v {
        buf.put_slice(b);
    }
    Ok(())
}

#[inline]
pub fn put_bytes(
    buf: &mut BytesMut,
    compact: bool,
    v: &[u8],
    field: &'static str,
) -> Result<(), EncodeError> {
    put_nullable_bytes(buf, compact, Some(v), field)
}

#[inline]
pub fn put_array_len(
    buf: &mut BytesMut,
    compact: bool,
    len: Option<usize>,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_len(buf, compact, len, false, field)
}

/// Reads the header of a tagged-field section: the number of fields, checked so that each
/// claimed field has at least its two header bytes left.
#[inline]
pub fn get_tagged_count(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let n = get_uvarint(buf)?;
    if u64::from(n) * 2 > buf.remaining() as u64 {
        return Err(DecodeError::InvalidLength {
            what: "tagged fields",
            length: i64::from(n),
            remaining: buf.remaining(),
        });
    }
    Ok(n)
}

/// Reads one tagged field's tag and payload (a zero-copy slice).
#[inline]
pub fn get_tagged_field(buf: &mut Bytes) -> Result<(u32, Bytes), DecodeError> {
    let tag = get_uvarint(buf)?;
    let size = get_uvarint(buf)? as usize;
    if size > buf.remaining() {
        return Err(DecodeError::InvalidLength {
            what: "tagged field",
            length: size as i64,
            remaining: buf.remaining(),
        });
    }
    Ok((tag, buf.split_to(size)))
}

/// Stores an unknown tagged field, rejecting a repeated tag.
#[inline]
pub fn keep_unknown_tag(
    unknown: &mut UnknownTaggedFields,
    message: &'static str,
    tag: u32,
    data: Bytes,
) -> Result<(), DecodeError> {
    if unknown.0.insert(tag, data).is_some() {
        return Err(DecodeError::DuplicateTag { message, tag });
    }
    Ok(())
}

/// Fails unless a known tagged field's decoder consumed its whole payload.
#[inline]
pub fn finish_tagged(data: &Bytes, message: &'static str, tag: u32) -> Result<(), DecodeError> {
    if data.has_remaining() {
        return Err(DecodeError::TaggedFieldSize {
            message,
            tag,
            extra: data.remaining(),
        });
    }
    Ok(())
}

/// Writes a tagged-field section: the known fields already encoded (ascending by tag) merged
/// with the unknown ones, in ascending tag order as KIP-482 requires.
pub fn put_tagged_fields(
    buf: &mut BytesMut,
    known: &[(u32, Bytes)],
    unknown: &UnknownTaggedFields,
    message: &'static str,
) -> Result<(), EncodeError> {
    if known.is_empty() {
        put_uvarint(buf, unknown.0.len() as u32);
        for (tag, data) in &unknown.0 {
            put_uvarint(buf, *tag);
            put_uvarint(buf, data.len() as u32);
            buf.put_slice(data);
        }
        return Ok(());
    }
    for (tag, _) in known {
        if unknown.0.contains_key(tag) {
            return Err(EncodeError::TagCollision { message, tag: *tag });
        }
    }
    put_uvarint(buf, (known.len() + unknown.0.len()) as u32);
    let mut k = known.iter().peekable();
    let mut u = unknown.0.iter().peekable();
    loop {
        let take_known = match (k.peek(), u.peek()) {
            (Some(a), Some(b)) => a.0 < *b.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let (tag, data) = if take_known {
            let (t, d) = k.next().expect("peeked");
            (*t, d)
        } else {
            let (t, d) = u.next().expect("peeked");
            (*t, d)
        };
        put_uvarint(buf, tag);
        put_uvarint(buf, data.len() as u32);
        buf.put_slice(data);
    }
    Ok(())
}

/// A message or struct that knows how to encode itself at a given version.
pub trait Encode {
    fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError>;
}

/// A message or struct that decodes itself from the front of `buf` at a given version,
/// consuming exactly its own bytes.
pub trait Decode: Sized {
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError>;
}

/// Writes an array: its length prefix, then each element.
#[inline]
pub fn put_array<T>(
    buf: &mut BytesMut,
    compact: bool,
    items: &[T],
    field: &'static str,
    mut each: impl FnMut(&mut BytesMut, &T) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    put_array_len(buf, compact, Some(items.len()), field)?;
    for item in items {
        each(buf, item)?;
    }
    Ok(())
}

/// Writes an array that may be null.
#[inline]
pub fn put_nullable_array<T>(
    buf: &mut BytesMut,
    compact: bool,
    items: Option<&[T]>,
    field: &'static str,
    each: impl FnMut(&mut BytesMut, &T) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    match items {
        None => put_array_len(buf, compact, None, field),
        Some(items) => put_array(buf, compact, items, field, each),
    }
}

/// Reads an array (`None` for null), decoding each element with `each`. The count is checked
/// against the remaining bytes first and only a small capacity is reserved up front.
#[inline]
pub fn get_array<T>(
    buf: &mut Bytes,
    compact: bool,
    mut each: impl FnMut(&mut Bytes) -> Result<T, DecodeError>,
) -> Result<Option<Vec<T>>, DecodeError> {
    let Some(n) = get_array_len(buf, compact)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(initial_capacity(n));
    for _ in 0..n {
        out.push(each(buf)?);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_edges() {
        for v in [0i32, 1, -1, 63, -64, 64, i32::MAX, i32::MIN, 300, -300] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            let mut r = b.freeze();
            assert_eq!(get_varint(&mut r).unwrap(), v);
            assert!(r.is_empty());
        }
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 1 << 40] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            let mut r = b.freeze();
            assert_eq!(get_varlong(&mut r).unwrap(), v);
            assert!(r.is_empty());
        }
        for v in [0u32, 127, 128, 16383, 16384, u32::MAX] {
            let mut b = BytesMut::new();
            put_uvarint(&mut b, v);
            assert_eq!(b.len(), uvarint_len(v));
        }
    }

    #[test]
    fn zigzag_matches_known_bytes() {
        // From the record format section of the protocol guide: -1 -> 0x01, 1 -> 0x02, 300 -> ac 02 zigzagged.
        let mut b = BytesMut::new();
        put_varint(&mut b, -1);
        put_varint(&mut b, 1);
        put_uvarint(&mut b, 300);
        assert_eq!(&b[..], &[0x01, 0x02, 0xac, 0x02]);
    }

    #[test]
    fn overlong_varints_are_rejected() {
        let mut r = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(
            get_uvarint(&mut r),
            Err(DecodeError::VarintTooLong { max_bytes: 5 })
        );
        let mut r = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x1f]);
        assert!(get_uvarint(&mut r).is_err());
        let mut r = Bytes::from_static(&[0xff; 11]);
        assert!(get_uvarlong(&mut r).is_err());
        let mut r = Bytes::from_static(&[0x80]);
        assert!(matches!(
            get_uvarint(&mut r),
            Err(DecodeError::UnexpectedEof { .. })
        ));
    }

    #[test]
    fn lengths_are_checked_before_use() {
        // A string claiming 32767 bytes with two present.
        let mut r = Bytes::from_static(&[0x7f, 0xff, b'a', b'b']);
        assert!(matches!(
            get_nullable_string(&mut r, false, "f"),
            Err(DecodeError::InvalidLength { length: 32767, .. })
        ));
        // An array claiming 2^31-1 elements.
        let mut r = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0]);
        assert!(get_array_len(&mut r, false).is_err());
        // Negative lengths other than -1.
        let mut r = Bytes::from_static(&[0xff, 0xfe]);
        assert!(get_nullable_string(&mut r, false, "f").is_err());
        // Compact null and compact empty.
        let mut r = Bytes::from_static(&[0x00, 0x01]);
        assert_eq!(get_nullable_bytes(&mut r, true).unwrap(), None);
        assert_eq!(
            get_nullable_bytes(&mut r, true).unwrap(),
            Some(Bytes::new())
        );
    }

    #[test]
    fn tagged_fields_are_written_in_tag_order() {
        let mut unknown = UnknownTaggedFields::default();
        unknown.insert(5, Bytes::from_static(b"u"));
        unknown.insert(1, Bytes::from_static(b"v"));
        let known = [(0, Bytes::from_static(b"k")), (3, Bytes::from_static(b"m"))];
        let mut b = BytesMut::new();
        put_tagged_fields(&mut b, &known, &unknown, "T").unwrap();
        assert_eq!(&b[..], &[4, 0, 1, b'k', 1, 1, b'v', 3, 1, b'm', 5, 1, b'u']);
        let mut clash = UnknownTaggedFields::default();
        clash.insert(3, Bytes::new());
        assert!(put_tagged_fields(&mut BytesMut::new(), &known, &clash, "T").is_err());
    }
}
