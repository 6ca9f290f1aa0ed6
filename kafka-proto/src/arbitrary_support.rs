//! Helpers for the generated `arbitrary_at` constructors: small, always-encodable values, so a
//! property test explores structure rather than spending its budget on huge strings.

use arbitrary::{Result, Unstructured};
use bytes::Bytes;

use crate::wire::UnknownTaggedFields;

pub fn string(u: &mut Unstructured<'_>) -> Result<String> {
    let len = u.int_in_range(0..=12usize)?;
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        // Mostly ASCII, sometimes multi-byte, to exercise byte-length prefixes.
        let c = if u.ratio(1u8, 6u8)? {
            u.choose(&['é', 'ß', '€', '😀', '\u{0}'])?.to_owned()
        } else {
            char::from(u.int_in_range(0x20u8..=0x7e)?)
        };
        s.push(c);
    }
    Ok(s)
}

pub fn bytes(u: &mut Unstructured<'_>) -> Result<Bytes> {
    let len = u.int_in_range(0..=16usize)?;
    Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?))
}

/// Finite floats only: NaN never equals itself, which would make round trips "fail".
pub fn float(u: &mut Unstructured<'_>) -> Result<f64> {
    let v: f64 = u.arbitrary()?;
    Ok(if v.is_finite() { v } else { 0.0 })
}

pub fn vec<T>(
    u: &mut Unstructured<'_>,
    mut each: impl FnMut(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let len = u.int_in_range(0..=3usize)?;
    (0..len).map(|_| each(u)).collect()
}

/// Unknown tagged fields with tags the message does not define, to prove they round-trip.
pub fn unknown_tags(u: &mut Unstructured<'_>, known: &[u32]) -> Result<UnknownTaggedFields> {
    let mut out = UnknownTaggedFields::default();
    if u.ratio(1u8, 4u8)? {
        for _ in 0..u.int_in_range(1..=2u8)? {
            let tag = u.int_in_range(100u32..=20_000)?;
            if !known.contains(&tag) {
                out.insert(tag, bytes(u)?);
            }
        }
    }
    Ok(out)
}
