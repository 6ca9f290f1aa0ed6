//! Emits Rust for one message spec. The output relies on `kafka_proto::wire` for primitives
//! and on `kafka_proto::message` for the traits; everything version-dependent is decided here,
//! at generation time, so the generated code is straight-line per version.

use std::fmt::Write;

use crate::spec::{Field, Kind, Range, Spec, StructDef, Ty};

pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

pub fn field_ident(name: &str) -> String {
    let s = snake(name);
    if KEYWORDS.contains(&s.as_str()) {
        format!("r#{s}")
    } else {
        s
    }
}

/// A boolean Rust expression over `version` that is true exactly for versions in `r`, simplified
/// against `ctx` (the versions the enclosing struct can be encoded at).
pub fn cond(r: Range, ctx: Range) -> String {
    let e = r.intersect(&ctx);
    if e.is_empty() {
        "false".into()
    } else if e.min <= ctx.min && e.max >= ctx.max {
        "true".into()
    } else if e.min <= ctx.min {
        format!("version <= {}", e.max)
    } else if e.max >= ctx.max {
        format!("version >= {}", e.min)
    } else if e.min == e.max {
        format!("version == {}", e.min)
    } else {
        format!("({}..={}).contains(&version)", e.min, e.max)
    }
}

impl Field {
    /// Rust type is `Option<_>` when null is representable in some version or is the default.
    fn is_option(&self) -> bool {
        !self.nullable.intersect(&self.versions).is_empty()
            || self.default.as_deref() == Some("null")
    }

    /// Versions at which the field is on the wire (as a regular or a tagged field).
    fn present(&self) -> Range {
        if self.tag.is_some() {
            self.versions.intersect(&self.tagged)
        } else {
            self.versions
        }
    }
}

fn base_type(ty: &Ty) -> String {
    match ty {
        Ty::Bool => "bool".into(),
        Ty::Int8 => "i8".into(),
        Ty::Int16 => "i16".into(),
        Ty::Uint16 => "u16".into(),
        Ty::Int32 => "i32".into(),
        Ty::Uint32 => "u32".into(),
        Ty::Int64 => "i64".into(),
        Ty::Float64 => "f64".into(),
        Ty::String => "String".into(),
        Ty::Bytes | Ty::Records => "Bytes".into(),
        Ty::Uuid => "Uuid".into(),
        Ty::Struct(s) => s.clone(),
        Ty::Array(inner) => format!("Vec<{}>", base_type(inner)),
    }
}

fn rust_type(f: &Field) -> String {
    let b = base_type(&f.ty);
    if f.is_option() {
        format!("Option<{b}>")
    } else {
        b
    }
}

fn parse_int(s: &str) -> Result<i128, String> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i128::from_str_radix(h, 16)
    } else {
        body.parse::<i128>()
    }
    .map_err(|e| format!("bad integer default `{s}`: {e}"))?;
    Ok(if neg { -v } else { v })
}

fn default_expr(f: &Field) -> Result<String, String> {
    let d = f.default.as_deref();
    let opt = f.is_option();
    if d == Some("null") {
        if !opt {
            return Err(format!("{}: null default on a non-nullable field", f.name));
        }
        return Ok("None".into());
    }
    let wrap = |s: String| if opt { format!("Some({s})") } else { s };
    Ok(match &f.ty {
        Ty::Bool => match d {
            None | Some("false") => "false".into(),
            Some("true") => "true".into(),
            Some(o) => return Err(format!("{}: bad bool default {o}", f.name)),
        },
        Ty::Int8 | Ty::Int16 | Ty::Uint16 | Ty::Int32 | Ty::Uint32 | Ty::Int64 => {
            let v = d.map(parse_int).transpose()?.unwrap_or(0);
            let (lo, hi): (i128, i128) = match f.ty {
                Ty::Int8 => (i8::MIN.into(), i8::MAX.into()),
                Ty::Int16 => (i16::MIN.into(), i16::MAX.into()),
                Ty::Uint16 => (0, u16::MAX.into()),
                Ty::Int32 => (i32::MIN.into(), i32::MAX.into()),
                Ty::Uint32 => (0, u32::MAX.into()),
                _ => (i64::MIN.into(), i64::MAX.into()),
            };
            if v < lo || v > hi {
                return Err(format!("{}: default {v} out of range", f.name));
            }
            v.to_string()
        }
        Ty::Float64 => {
            let v: f64 = d
                .unwrap_or("0")
                .parse()
                .map_err(|e| format!("{}: bad float default: {e}", f.name))?;
            format!("{v:?}")
        }
        Ty::String => match d {
            None | Some("") => wrap("String::new()".into()),
            Some(s) => wrap(format!("String::from({s:?})")),
        },
        Ty::Records if opt => "None".into(),
        Ty::Bytes | Ty::Records | Ty::Uuid | Ty::Struct(_) | Ty::Array(_) => {
            if d.is_some() {
                return Err(format!(
                    "{}: defaults are only allowed on scalars and strings",
                    f.name
                ));
            }
            wrap(match &f.ty {
                Ty::Bytes | Ty::Records => "Bytes::new()".into(),
                Ty::Uuid => "Uuid::ZERO".into(),
                Ty::Array(inner) => format!("Vec::<{}>::new()", base_type(inner)),
                other => format!("{}::default()", base_type(other)),
            })
        }
    })
}

/// Encodes a non-null value. `v` is an expression of the field's base type (a place for
/// scalars, a reference-able place otherwise); `c` is the compactness expression.
fn encode_value(ty: &Ty, v: &str, c: &str, fname: &str) -> String {
    match ty {
        Ty::Bool => format!("put_bool(buf, {v});"),
        Ty::Int8 => format!("put_i8(buf, {v});"),
        Ty::Int16 => format!("put_i16(buf, {v});"),
        Ty::Uint16 => format!("put_u16(buf, {v});"),
        Ty::Int32 => format!("put_i32(buf, {v});"),
        Ty::Uint32 => format!("put_u32(buf, {v});"),
        Ty::Int64 => format!("put_i64(buf, {v});"),
        Ty::Float64 => format!("put_f64(buf, {v});"),
        Ty::Uuid => format!("put_uuid(buf, &{v});"),
        Ty::String => format!("put_string(buf, {c}, &{v}, {fname:?})?;"),
        Ty::Bytes | Ty::Records => format!("put_bytes(buf, {c}, &{v}, {fname:?})?;"),
        Ty::Struct(_) => format!("{v}.encode(buf, version)?;"),
        Ty::Array(inner) => {
            let elem = match inner.as_ref() {
                Ty::Bool
                | Ty::Int8
                | Ty::Int16
                | Ty::Uint16
                | Ty::Int32
                | Ty::Uint32
                | Ty::Int64
                | Ty::Float64 => encode_value(inner, "*e", c, fname),
                _ => encode_value(inner, "e", c, fname),
            };
            format!("put_array(buf, {c}, &{v}, {fname:?}, |buf, e| {{ {elem} Ok(()) }})?;")
        }
    }
}

/// Encodes an `Option` field at a version where null is allowed.
fn encode_nullable(ty: &Ty, v: &str, c: &str, fname: &str) -> Result<String, String> {
    Ok(match ty {
        Ty::String => format!("put_nullable_string(buf, {c}, {v}.as_deref(), {fname:?})?;"),
        Ty::Bytes | Ty::Records => {
            format!("put_nullable_bytes(buf, {c}, {v}.as_deref(), {fname:?})?;")
        }
        Ty::Struct(_) => format!(
            "match &{v} {{ None => put_i8(buf, -1), Some(s) => {{ put_i8(buf, 1); s.encode(buf, version)?; }} }}"
        ),
        Ty::Array(inner) => {
            let elem = match inner.as_ref() {
                Ty::Bool
                | Ty::Int8
                | Ty::Int16
                | Ty::Uint16
                | Ty::Int32
                | Ty::Uint32
                | Ty::Int64
                | Ty::Float64 => encode_value(inner, "*e", c, fname),
                _ => encode_value(inner, "e", c, fname),
            };
            format!(
                "put_nullable_array(buf, {c}, {v}.as_deref(), {fname:?}, |buf, e| {{ {elem} Ok(()) }})?;"
            )
        }
        other => return Err(format!("{fname}: nullable {other:?} is not supported")),
    })
}

/// A `Result`-valued expression decoding a non-null value of `ty`.
fn decode_value(ty: &Ty, c: &str, fname: &str) -> String {
    match ty {
        Ty::Bool => "get_bool(buf)".into(),
        Ty::Int8 => "get_i8(buf)".into(),
        Ty::Int16 => "get_i16(buf)".into(),
        Ty::Uint16 => "get_u16(buf)".into(),
        Ty::Int32 => "get_i32(buf)".into(),
        Ty::Uint32 => "get_u32(buf)".into(),
        Ty::Int64 => "get_i64(buf)".into(),
        Ty::Float64 => "get_f64(buf)".into(),
        Ty::Uuid => "get_uuid(buf)".into(),
        Ty::String => format!("get_string(buf, {c}, {fname:?}, version)"),
        Ty::Bytes | Ty::Records => format!("get_bytes(buf, {c}, {fname:?}, version)"),
        Ty::Struct(s) => format!("{s}::decode(buf, version)"),
        Ty::Array(inner) => {
            let elem = decode_value(inner, c, fname);
            format!(
                "get_array(buf, {c}, |buf| {elem}).and_then(|a| a.ok_or(DecodeError::NullNotAllowed {{ field: {fname:?}, version }}))"
            )
        }
    }
}

fn decode_nullable(ty: &Ty, c: &str, fname: &str) -> Result<String, String> {
    Ok(match ty {
        Ty::String => format!("get_nullable_string(buf, {c}, {fname:?})?"),
        Ty::Bytes | Ty::Records => format!("get_nullable_bytes(buf, {c})?"),
        Ty::Struct(s) => {
            format!("if get_i8(buf)? < 0 {{ None }} else {{ Some({s}::decode(buf, version)?) }}")
        }
        Ty::Array(inner) => {
            let elem = decode_value(inner, c, fname);
            format!("get_array(buf, {c}, |buf| {elem})?")
        }
        other => return Err(format!("{fname}: nullable {other:?} is not supported")),
    })
}

fn arbitrary_value(ty: &Ty) -> String {
    match ty {
        Ty::Bool | Ty::Int8 | Ty::Int16 | Ty::Uint16 | Ty::Int32 | Ty::Uint32 | Ty::Int64 => {
            "u.arbitrary()".into()
        }
        Ty::Float64 => "crate::arbitrary_support::float(u)".into(),
        Ty::Uuid => "u.arbitrary().map(Uuid)".into(),
        Ty::String => "crate::arbitrary_support::string(u)".into(),
        Ty::Bytes | Ty::Records => "crate::arbitrary_support::bytes(u)".into(),
        Ty::Struct(s) => format!("{s}::arbitrary_at(u, version)"),
        Ty::Array(inner) => format!(
            "crate::arbitrary_support::vec(u, |u| {})",
            arbitrary_value(inner)
        ),
    }
}

fn doc(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "#[doc = {:?}]", line);
    }
}

fn compact_expr(f: &Field, range: Range) -> String {
    match f.flexible {
        Some(r) => cond(r, range),
        None => "flexible".into(),
    }
}

fn emit_struct(
    out: &mut String,
    name: &str,
    about: &str,
    fields: &[Field],
    range: Range,
    spec: &Spec,
    top: bool,
) -> Result<(), String> {
    let has_flex = !spec.flexible.intersect(&range).is_empty();
    let flex_cond = cond(spec.flexible, range);
    for f in fields {
        if f.tag.is_some() && !f.tagged.intersect(&range).is_empty() {
            let t = f.tagged.intersect(&range);
            if !spec.flexible.intersect(&t).eq(&t) {
                return Err(format!(
                    "{name}.{}: tagged in a non-flexible version",
                    f.name
                ));
            }
        }
    }
    // The struct.
    doc(out, about);
    if top {
        let _ = writeln!(
            out,
            "#[doc = \"\"]\n#[doc = \"Valid versions: {}-{}; flexible from {}.\"]",
            spec.valid.min,
            spec.valid.max,
            if spec.flexible.is_empty() {
                "never".to_string()
            } else {
                format!("v{}", spec.flexible.min)
            }
        );
    }
    let _ = writeln!(
        out,
        "#[derive(Debug, Clone, PartialEq)]\npub struct {name} {{"
    );
    for f in fields {
        let mut about = f.about.clone();
        let _ = write!(
            about,
            "\n\nVersions: {}{}{}{}",
            range_text(f.versions),
            if f.nullable.is_empty() {
                String::new()
            } else {
                format!("; nullable {}", range_text(f.nullable))
            },
            match f.tag {
                Some(t) => format!("; tagged (tag {t}) {}", range_text(f.tagged)),
                None => String::new(),
            },
            if f.ignorable { "; ignorable" } else { "" }
        );
        doc(out, &about);
        let _ = writeln!(out, "pub {}: {},", field_ident(&f.name), rust_type(f));
    }
    let has_known_tags = has_flex && fields.iter().any(|f| f.tag.is_some());
    if fields.iter().any(|f| f.tag.is_some_and(|t| t >= 64)) {
        return Err(format!(
            "{name}: tags of 64 and above need a wider TaggedDefaults"
        ));
    }
    if has_flex {
        let _ = writeln!(
            out,
            "/// Tagged fields this spec revision does not define, kept so they survive a round trip.\npub unknown_tagged_fields: UnknownTaggedFields,"
        );
    }
    if has_known_tags {
        let _ = writeln!(
            out,
            "/// Known tagged fields that arrived explicitly holding their default value (see [`TaggedDefaults`]).\npub tagged_defaults: TaggedDefaults,"
        );
    }
    out.push_str("}\n\n");

    // Default.
    let _ = writeln!(
        out,
        "impl Default for {name} {{\n fn default() -> Self {{ Self {{"
    );
    for f in fields {
        let _ = writeln!(out, "{}: {},", field_ident(&f.name), default_expr(f)?);
    }
    if has_flex {
        out.push_str("unknown_tagged_fields: UnknownTaggedFields::default(),\n");
    }
    if has_known_tags {
        out.push_str("tagged_defaults: TaggedDefaults::default(),\n");
    }
    out.push_str("} } }\n\n");

    // Encode.
    let _ = writeln!(
        out,
        "impl Encode for {name} {{\n fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError> {{"
    );
    let _ = writeln!(out, "const NAME: &str = {name:?};");
    if top {
        out.push_str(
            "if !Self::VALID_VERSIONS.contains(version) { return Err(EncodeError::UnsupportedVersion { message: NAME, version }); }\n",
        );
    }
    let uses_flexible = fields
        .iter()
        .any(|f| f.flexible.is_none() && !cond(f.present(), range).eq("false"));
    if has_flex {
        let _ = writeln!(out, "let flexible = {flex_cond};");
    } else if uses_flexible {
        out.push_str("let flexible = false;\n");
    }
    let mut tagged: Vec<&Field> = Vec::new();
    for f in fields {
        let fname = format!("{}.{}", name, f.name);
        let id = field_ident(&f.name);
        let present = cond(f.present(), range);
        if present != "true" && !f.ignorable {
            let absent_check = format!(
                "if self.{id} != {} {{ return Err(EncodeError::NonIgnorableField {{ field: {fname:?}, version }}); }}",
                default_expr(f)?
            );
            if present == "false" {
                let _ = writeln!(out, "{absent_check}");
            } else {
                let _ = writeln!(out, "if !({present}) {{ {absent_check} }}");
            }
        }
        if f.tag.is_some() {
            if present != "false" {
                tagged.push(f);
            }
            continue;
        }
        if present == "false" {
            continue;
        }
        let c = compact_expr(f, range);
        let body = encode_field(f, &id, &c, &fname, range)?;
        if present == "true" {
            let _ = writeln!(out, "{body}");
        } else {
            let _ = writeln!(out, "if {present} {{ {body} }}");
        }
    }
    if has_flex {
        if flex_cond == "true" {
            out.push_str("{\n");
        } else {
            let _ = writeln!(out, "if {flex_cond} {{");
        }
        if tagged.is_empty() {
            out.push_str("put_tagged_fields(buf, &[], &self.unknown_tagged_fields, NAME)?;\n");
        } else {
            tagged.sort_by_key(|f| f.tag);
            out.push_str("let mut known: Vec<(u32, Bytes)> = Vec::new();\n");
            for f in &tagged {
                let id = field_ident(&f.name);
                let fname = format!("{}.{}", name, f.name);
                let present = cond(f.present(), range);
                let body = encode_field(f, &id, "true", &fname, range)?;
                let (def, tag) = (default_expr(f)?, f.tag.unwrap_or_default());
                let wanted = format!("self.{id} != {def} || self.tagged_defaults.contains({tag})");
                let test = if present == "true" {
                    wanted
                } else {
                    format!("({present}) && ({wanted})")
                };
                let _ = writeln!(
                    out,
                    "if {test} {{ let mut tbuf = BytesMut::new(); {{ let buf = &mut tbuf; {body} }} known.push(({tag}, tbuf.freeze())); }}",
                );
            }
            out.push_str("put_tagged_fields(buf, &known, &self.unknown_tagged_fields, NAME)?;\n");
        }
        if flex_cond != "true" {
            let _ = writeln!(
                out,
                "}} else if !self.unknown_tagged_fields.is_empty() {{ return Err(EncodeError::NonIgnorableField {{ field: {:?}, version }}); }}",
                format!("{name}.unknown_tagged_fields")
            );
        } else {
            out.push_str("}\n");
        }
    }
    out.push_str("Ok(())\n} }\n\n");

    // Decode.
    let _ = writeln!(
        out,
        "impl Decode for {name} {{\n fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError> {{"
    );
    let _ = writeln!(out, "const NAME: &str = {name:?};");
    if top {
        out.push_str(
            "if !Self::VALID_VERSIONS.contains(version) { return Err(DecodeError::UnsupportedVersion { message: NAME, version }); }\n",
        );
    }
    if has_flex {
        let _ = writeln!(out, "let flexible = {flex_cond};");
    } else if uses_flexible {
        out.push_str("let flexible = false;\n");
    }
    let any_present = fields.iter().any(|f| cond(f.present(), range) != "false");
    if any_present || has_flex {
        out.push_str("let mut this = Self::default();\n");
    } else {
        out.push_str("let this = Self::default();\n");
    }
    for f in fields {
        if f.tag.is_some() {
            continue;
        }
        let present = cond(f.present(), range);
        if present == "false" {
            continue;
        }
        let id = field_ident(&f.name);
        let fname = format!("{}.{}", name, f.name);
        let c = compact_expr(f, range);
        let expr = decode_field(f, &c, &fname, range)?;
        if present == "true" {
            let _ = writeln!(out, "this.{id} = {expr};");
        } else {
            let _ = writeln!(out, "if {present} {{ this.{id} = {expr}; }}");
        }
    }
    if has_flex {
        let open = if flex_cond == "true" {
            "{".to_string()
        } else {
            format!("if {flex_cond} {{")
        };
        let _ = writeln!(
            out,
            "{open}\n let n = get_tagged_count(buf)?;\n for _ in 0..n {{\n let (tag, mut data) = get_tagged_field(buf)?;"
        );
        if tagged.is_empty() {
            out.push_str("keep_unknown_tag(&mut this.unknown_tagged_fields, NAME, tag, data)?;\n");
        } else {
            out.push_str("match tag {\n");
            for f in &tagged {
                let id = field_ident(&f.name);
                let fname = format!("{}.{}", name, f.name);
                let present = cond(f.present(), range);
                let expr = decode_field(f, "true", &fname, range)?;
                let guard = if present == "true" {
                    String::new()
                } else {
                    format!(" if {present}")
                };
                let tag = f.tag.unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{tag}{guard} => {{ let buf = &mut data; this.{id} = {expr}; finish_tagged(buf, NAME, {tag})?; if this.{id} == {def} {{ this.tagged_defaults.insert({tag}); }} }}",
                    def = default_expr(f)?
                );
            }
            out.push_str(
                "_ => keep_unknown_tag(&mut this.unknown_tagged_fields, NAME, tag, data)?,\n}\n",
            );
        }
        out.push_str("}\n}\n");
    }
    out.push_str("Ok(this)\n} }\n\n");

    // Arbitrary values, valid at one version.
    let _ = writeln!(
        out,
        "#[cfg(feature = \"arbitrary\")]\nimpl {name} {{\n/// A random value that version `version` can carry, for property tests and fuzzing.\npub fn arbitrary_at(u: &mut arbitrary::Unstructured<'_>, version: i16) -> arbitrary::Result<Self> {{"
    );
    let _ = writeln!(out, "let _ = version;");
    let any_arbitrary = fields.iter().any(|f| cond(f.present(), range) != "false");
    if any_arbitrary || has_flex {
        out.push_str("let mut this = Self::default();\n");
    } else {
        out.push_str("let this = Self::default();\n");
    }
    for f in fields {
        let present = cond(f.present(), range);
        if present == "false" {
            continue;
        }
        let id = field_ident(&f.name);
        let v = arbitrary_value(&f.ty);
        let expr = if f.is_option() {
            let nullable = cond(f.nullable, range);
            match nullable.as_str() {
                "false" => format!("Some({v}?)"),
                "true" => format!("if u.ratio(1u8, 8u8)? {{ None }} else {{ Some({v}?) }}"),
                n => format!("if ({n}) && u.ratio(1u8, 8u8)? {{ None }} else {{ Some({v}?) }}"),
            }
        } else {
            format!("{v}?")
        };
        if present == "true" {
            let _ = writeln!(out, "this.{id} = {expr};");
        } else {
            let _ = writeln!(out, "if {present} {{ this.{id} = {expr}; }}");
        }
    }
    if has_flex {
        let known: Vec<u32> = fields.iter().filter_map(|f| f.tag).collect();
        let explicit = if has_known_tags {
            format!(
                " for tag in {known:?} {{ if u.ratio(1u8, 4u8)? {{ this.tagged_defaults.insert(tag); }} }}"
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "if {flex_cond} {{ this.unknown_tagged_fields = crate::arbitrary_support::unknown_tags(u, &{known:?})?;{explicit} }}"
        );
    }
    out.push_str("Ok(this)\n} }\n\n");
    Ok(())
}

fn range_text(r: Range) -> String {
    if r.is_empty() {
        "none".into()
    } else if r.max == i16::MAX {
        format!("{}+", r.min)
    } else if r.min == r.max {
        format!("{}", r.min)
    } else {
        format!("{}-{}", r.min, r.max)
    }
}

fn encode_field(f: &Field, id: &str, c: &str, fname: &str, range: Range) -> Result<String, String> {
    let place = format!("self.{id}");
    if !f.is_option() {
        return Ok(encode_value(&f.ty, &place, c, fname));
    }
    let nullable = cond(f.nullable, f.present().intersect(&range));
    let nonnull = || {
        let inner_place = "v";
        let v_expr = match f.ty {
            Ty::Bool
            | Ty::Int8
            | Ty::Int16
            | Ty::Uint16
            | Ty::Int32
            | Ty::Uint32
            | Ty::Int64
            | Ty::Float64 => {
                format!("*{inner_place}")
            }
            _ => inner_place.to_string(),
        };
        format!(
            "let v = {place}.as_ref().ok_or(EncodeError::NullNotAllowed {{ field: {fname:?}, version }})?; {}",
            encode_value(&f.ty, &v_expr, c, fname)
        )
    };
    Ok(match nullable.as_str() {
        "true" => encode_nullable(&f.ty, &place, c, fname)?,
        "false" => nonnull(),
        n => format!(
            "if {n} {{ {} }} else {{ {} }}",
            encode_nullable(&f.ty, &place, c, fname)?,
            nonnull()
        ),
    })
}

fn decode_field(f: &Field, c: &str, fname: &str, range: Range) -> Result<String, String> {
    let nonnull = format!("{}?", decode_value(&f.ty, c, fname));
    if !f.is_option() {
        return Ok(nonnull);
    }
    let nullable = cond(f.nullable, f.present().intersect(&range));
    Ok(match nullable.as_str() {
        "true" => decode_nullable(&f.ty, c, fname)?,
        "false" => format!("Some({nonnull})"),
        n => format!(
            "if {n} {{ {} }} else {{ Some({nonnull}) }}",
            decode_nullable(&f.ty, c, fname)?
        ),
    })
}

pub fn module_name(spec: &Spec) -> String {
    snake(&spec.name)
}

/// The Rust source of one message module.
pub fn emit_message(spec: &Spec, structs: &[StructDef], header: &str) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(header);
    let _ = writeln!(
        out,
        "//! `{}` (from `{}`{}).\n",
        spec.name,
        spec.file,
        match spec.api_key {
            Some(k) => format!(", API key {k}"),
            None => String::new(),
        }
    );
    out.push_str("use bytes::{Bytes, BytesMut};\n\n");
    out.push_str("#[allow(unused_imports)]\nuse crate::wire::*;\n");
    out.push_str("#[allow(unused_imports)]\nuse crate::error::{DecodeError, EncodeError};\n");
    out.push_str("#[allow(unused_imports)]\nuse crate::message::{Message, VersionRange};\n\n");

    let top_about = match spec.kind {
        Kind::Request => format!(
            "The body of a {} request.",
            spec.name.trim_end_matches("Request")
        ),
        Kind::Response => format!(
            "The body of a {} response.",
            spec.name.trim_end_matches("Response")
        ),
        Kind::Header => format!("The {} that precedes every body.", spec.name),
        Kind::Data => format!(
            "The `{}` data type, carried inside other messages.",
            spec.name
        ),
    };
    emit_struct(
        &mut out,
        &spec.name,
        &top_about,
        &spec.fields,
        spec.valid,
        spec,
        true,
    )?;
    let first_flexible = if spec.flexible.intersect(&spec.valid).is_empty() {
        "None".to_string()
    } else {
        format!("Some({})", spec.flexible.min.max(spec.valid.min))
    };
    let _ = writeln!(
        out,
        "impl Message for {} {{\nconst NAME: &'static str = {:?};\nconst VALID_VERSIONS: VersionRange = VersionRange::new({}, {});\nconst FIRST_FLEXIBLE_VERSION: Option<i16> = {first_flexible};\n}}\n",
        spec.name, spec.name, spec.valid.min, spec.valid.max
    );
    for s in structs {
        // Conditions are simplified against the message's versions, not the struct's first use:
        // a struct shared by two fields may be used at more versions than either one.
        emit_struct(
            &mut out,
            &s.name,
            &format!("Part of `{}`.", spec.name),
            &s.fields,
            spec.valid,
            spec,
            false,
        )?;
    }
    Ok(out)
}
