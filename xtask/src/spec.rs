//! Strict reader for Kafka's JSON message definitions (see FORMAT.md beside the specs).
//!
//! Unknown keys are an error, not a warning: a key we do not model could change the wire
//! format, and silently ignoring it would generate a codec that is subtly wrong.

use std::collections::BTreeMap;

use serde_json::Value;

pub type Result<T> = std::result::Result<T, String>;

/// An inclusive version range; `none` is the empty range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: i16,
    pub max: i16,
}

impl Range {
    pub const NONE: Range = Range { min: 1, max: 0 };

    pub fn parse(s: &str) -> Result<Range> {
        let s = s.trim();
        if s == "none" {
            return Ok(Range::NONE);
        }
        let num = |t: &str| {
            t.trim()
                .parse::<i16>()
                .map_err(|e| format!("bad version `{s}`: {e}"))
        };
        if let Some(min) = s.strip_suffix('+') {
            return Ok(Range {
                min: num(min)?,
                max: i16::MAX,
            });
        }
        if let Some((a, b)) = s.split_once('-') {
            let r = Range {
                min: num(a)?,
                max: num(b)?,
            };
            if r.min > r.max {
                return Err(format!("empty version range `{s}`"));
            }
            return Ok(r);
        }
        let v = num(s)?;
        Ok(Range { min: v, max: v })
    }

    pub fn is_empty(&self) -> bool {
        self.min > self.max
    }

    pub fn intersect(&self, o: &Range) -> Range {
        Range {
            min: self.min.max(o.min),
            max: self.max.min(o.max),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Bool,
    Int8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Float64,
    String,
    Bytes,
    Records,
    Uuid,
    Struct(String),
    Array(Box<Ty>),
}

impl Ty {
    fn parse(s: &str) -> Result<Ty> {
        Ok(match s {
            "bool" => Ty::Bool,
            "int8" => Ty::Int8,
            "int16" => Ty::Int16,
            "uint16" => Ty::Uint16,
            "int32" => Ty::Int32,
            "uint32" => Ty::Uint32,
            "int64" => Ty::Int64,
            "float64" => Ty::Float64,
            "string" => Ty::String,
            "bytes" => Ty::Bytes,
            "records" => Ty::Records,
            "uuid" => Ty::Uuid,
            _ => {
                if let Some(inner) = s.strip_prefix("[]") {
                    Ty::Array(Box::new(Ty::parse(inner)?))
                } else if s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && s.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    Ty::Struct(s.to_string())
                } else {
                    return Err(format!("unknown type `{s}`"));
                }
            }
        })
    }

    /// Types that may be declared nullable by the spec.
    pub fn can_be_null(&self) -> bool {
        matches!(
            self,
            Ty::String | Ty::Bytes | Ty::Records | Ty::Struct(_) | Ty::Array(_) | Ty::Uuid
        )
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    pub versions: Range,
    pub nullable: Range,
    pub tag: Option<u32>,
    pub tagged: Range,
    pub ignorable: bool,
    pub default: Option<String>,
    pub about: String,
    /// A per-field override of the message's flexible versions (the request header's
    /// ClientId stays a classic string even in flexible headers).
    pub flexible: Option<Range>,
    /// Inline struct definition (for `[]Foo` or `Foo` types declared in place).
    pub fields: Option<Vec<Field>>,
}

#[derive(Debug, Clone)]
pub struct StructDef {
    pub name: String,
    pub versions: Range,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
    Header,
    Data,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub file: String,
    pub api_key: Option<i16>,
    pub kind: Kind,
    pub name: String,
    pub valid: Range,
    pub deprecated: Range,
    pub flexible: Range,
    pub latest_unstable: bool,
    pub listeners: Vec<String>,
    pub fields: Vec<Field>,
    pub common: Vec<StructDef>,
}

/// Removes `//` line comments that are not inside a JSON string.
pub fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let mut in_str = false;
        let mut escaped = false;
        let mut cut = line.len();
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if in_str {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    in_str = false;
                }
            } else if c == b'"' {
                in_str = true;
            } else if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
                cut = i;
                break;
            }
            i += 1;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

fn obj<'a>(
    v: &'a Value,
    ctx: &str,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>> {
    let m = v
        .as_object()
        .ok_or_else(|| format!("{ctx}: expected an object"))?;
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "{ctx}: unknown key `{k}`; the generator must model it before use"
            ));
        }
    }
    Ok(m)
}

fn str_of(m: &serde_json::Map<String, Value>, key: &str, ctx: &str) -> Result<Option<String>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{ctx}: `{key}` must be a string, got {other}")),
    }
}

fn req_str(m: &serde_json::Map<String, Value>, key: &str, ctx: &str) -> Result<String> {
    str_of(m, key, ctx)?.ok_or_else(|| format!("{ctx}: missing `{key}`"))
}

fn bool_of(m: &serde_json::Map<String, Value>, key: &str, ctx: &str) -> Result<bool> {
    match m.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("{ctx}: `{key}` must be a bool, got {other}")),
    }
}

const FIELD_KEYS: &[&str] = &[
    "name",
    "type",
    "versions",
    "about",
    "fields",
    "default",
    "entityType",
    "ignorable",
    "nullableVersions",
    "mapKey",
    "taggedVersions",
    "tag",
    "zeroCopy",
    "flexibleVersions",
];

fn parse_fields(v: &Value, ctx: &str) -> Result<Vec<Field>> {
    let arr = v
        .as_array()
        .ok_or_else(|| format!("{ctx}: `fields` must be an array"))?;
    arr.iter().map(|f| parse_field(f, ctx)).collect()
}

fn parse_field(v: &Value, ctx: &str) -> Result<Field> {
    let m = obj(v, ctx, FIELD_KEYS)?;
    let name = req_str(m, "name", ctx)?;
    let ctx = format!("{ctx}.{name}");
    let ty = Ty::parse(&req_str(m, "type", &ctx)?).map_err(|e| format!("{ctx}: {e}"))?;
    let versions = Range::parse(&req_str(m, "versions", &ctx)?)?;
    let nullable = match str_of(m, "nullableVersions", &ctx)? {
        Some(s) => Range::parse(&s)?,
        None => Range::NONE,
    };
    if !nullable.is_empty() && !ty.can_be_null() {
        return Err(format!("{ctx}: type {ty:?} cannot be nullable"));
    }
    let tag = match m.get("tag") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{ctx}: bad tag {n}"))?,
        ),
        // A few specs quote the tag; the Java generator accepts both.
        Some(Value::String(s)) => Some(
            s.parse::<u32>()
                .map_err(|e| format!("{ctx}: bad tag `{s}`: {e}"))?,
        ),
        Some(other) => return Err(format!("{ctx}: `tag` must be a number, got {other}")),
    };
    let tagged = match str_of(m, "taggedVersions", &ctx)? {
        Some(s) => Range::parse(&s)?,
        None => Range::NONE,
    };
    if tag.is_some() == tagged.is_empty() {
        return Err(format!(
            "{ctx}: `tag` and `taggedVersions` must come together"
        ));
    }
    if tag.is_some() && tagged.max != i16::MAX {
        return Err(format!("{ctx}: taggedVersions must be open-ended"));
    }
    let default = match m.get("default") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(other) => return Err(format!("{ctx}: bad default {other}")),
    };
    let flexible = str_of(m, "flexibleVersions", &ctx)?
        .map(|s| Range::parse(&s))
        .transpose()?;
    // Descriptive keys: validated for shape, not needed for the wire format.
    bool_of(m, "mapKey", &ctx)?;
    bool_of(m, "zeroCopy", &ctx)?;
    str_of(m, "entityType", &ctx)?;
    let fields = m.get("fields").map(|f| parse_fields(f, &ctx)).transpose()?;
    Ok(Field {
        name,
        ty,
        versions,
        nullable,
        tag,
        tagged,
        ignorable: bool_of(m, "ignorable", &ctx)?,
        default,
        about: str_of(m, "about", &ctx)?.unwrap_or_default(),
        flexible,
        fields,
    })
}

pub fn parse_spec(file: &str, src: &str) -> Result<Spec> {
    let v: Value =
        serde_json::from_str(&strip_comments(src)).map_err(|e| format!("{file}: {e}"))?;
    let m = obj(
        &v,
        file,
        &[
            "apiKey",
            "type",
            "listeners",
            "name",
            "validVersions",
            "deprecatedVersions",
            "flexibleVersions",
            "fields",
            "commonStructs",
            "latestVersionUnstable",
        ],
    )?;
    let name = req_str(m, "name", file)?;
    let kind = match req_str(m, "type", file)?.as_str() {
        "request" => Kind::Request,
        "response" => Kind::Response,
        "header" => Kind::Header,
        "data" => Kind::Data,
        other => return Err(format!("{file}: unknown message type `{other}`")),
    };
    let api_key = match m.get("apiKey") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .and_then(|n| i16::try_from(n).ok())
                .ok_or_else(|| format!("{file}: bad apiKey"))?,
        ),
        Some(other) => return Err(format!("{file}: bad apiKey {other}")),
    };
    if matches!(kind, Kind::Request | Kind::Response) != api_key.is_some() {
        return Err(format!(
            "{file}: requests and responses, and only they, carry an apiKey"
        ));
    }
    let listeners = match m.get("listeners") {
        None => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|l| {
                l.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{file}: bad listener"))
            })
            .collect::<Result<_>>()?,
        Some(other) => return Err(format!("{file}: bad listeners {other}")),
    };
    let common = match m.get("commonStructs") {
        None => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                let sm = obj(s, file, &["name", "versions", "fields"])?;
                let sname = req_str(sm, "name", file)?;
                Ok(StructDef {
                    versions: Range::parse(&req_str(sm, "versions", file)?)?,
                    fields: parse_fields(
                        sm.get("fields")
                            .ok_or(format!("{file}.{sname}: no fields"))?,
                        file,
                    )?,
                    name: sname,
                })
            })
            .collect::<Result<_>>()?,
        Some(other) => return Err(format!("{file}: bad commonStructs {other}")),
    };
    let deprecated = match str_of(m, "deprecatedVersions", file)? {
        Some(s) => Range::parse(&s)?,
        None => Range::NONE,
    };
    Ok(Spec {
        file: file.to_string(),
        api_key,
        kind,
        valid: Range::parse(&req_str(m, "validVersions", file)?)?,
        deprecated,
        flexible: Range::parse(&req_str(m, "flexibleVersions", file)?)?,
        latest_unstable: bool_of(m, "latestVersionUnstable", file)?,
        listeners,
        fields: parse_fields(m.get("fields").ok_or(format!("{file}: no fields"))?, file)?,
        common,
        name,
    })
}

/// Collects every struct a message uses, in first-use order, each once. A name reused with a
/// different shape is an error: the generated module could hold only one of them.
pub fn collect_structs(spec: &Spec) -> Result<Vec<StructDef>> {
    let common: BTreeMap<&str, &StructDef> =
        spec.common.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out: Vec<StructDef> = Vec::new();
    fn walk(
        fields: &[Field],
        parent_versions: Range,
        common: &BTreeMap<&str, &StructDef>,
        out: &mut Vec<StructDef>,
        file: &str,
    ) -> Result<()> {
        for f in fields {
            let sname = match &f.ty {
                Ty::Struct(s) => Some(s),
                Ty::Array(inner) => match inner.as_ref() {
                    Ty::Struct(s) => Some(s),
                    _ => None,
                },
                _ => None,
            };
            let Some(sname) = sname else {
                if f.fields.is_some() {
                    return Err(format!(
                        "{file}.{}: primitive field with nested fields",
                        f.name
                    ));
                }
                continue;
            };
            let def = match (&f.fields, common.get(sname.as_str())) {
                (Some(fs), None) => StructDef {
                    name: sname.clone(),
                    versions: f.versions.intersect(&parent_versions),
                    fields: fs.clone(),
                },
                (None, Some(c)) => (*c).clone(),
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "{file}: struct {sname} defined inline and in commonStructs"
                    ));
                }
                (None, None) => return Err(format!("{file}: struct {sname} has no definition")),
            };
            if let Some(existing) = out.iter().find(|s| s.name == def.name) {
                if format!("{:?}", existing.fields) != format!("{:?}", def.fields) {
                    return Err(format!(
                        "{file}: struct {sname} defined twice with different fields"
                    ));
                }
                continue;
            }
            out.push(def.clone());
            walk(&def.fields, def.versions, common, out, file)?;
        }
        Ok(())
    }
    walk(&spec.fields, spec.valid, &common, &mut out, &spec.file)?;
    for s in &out {
        if s.name == spec.name {
            return Err(format!("{}: struct named like its message", spec.file));
        }
        if RESERVED_TYPE_NAMES.contains(&s.name.as_str()) {
            return Err(format!(
                "{}: struct {} collides with a type the generated code uses",
                spec.file, s.name
            ));
        }
    }
    Ok(out)
}

/// Names the generated modules import; a spec struct with one of these names would shadow it.
pub const RESERVED_TYPE_NAMES: &[&str] = &[
    "Bytes",
    "BytesMut",
    "Uuid",
    "Vec",
    "String",
    "Option",
    "Result",
    "Self",
    "Default",
    "UnknownTaggedFields",
];

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
      // a comment
      "apiKey": 99, "type": "request", "name": "DemoRequest",
      "validVersions": "0-2", "flexibleVersions": "1+",
      "fields": [
        { "name": "Url", "type": "string", "versions": "0+", "about": "not // a comment" },
        { "name": "Tags", "type": "[]int32", "versions": "2+", "ignorable": true }
      ]
    }"#;

    #[test]
    fn parses_a_minimal_spec_and_keeps_slashes_inside_strings() {
        let spec = parse_spec("Demo.json", MINIMAL).unwrap();
        assert_eq!(spec.api_key, Some(99));
        assert_eq!(spec.valid, Range { min: 0, max: 2 });
        assert_eq!(
            spec.flexible,
            Range {
                min: 1,
                max: i16::MAX
            }
        );
        assert_eq!(spec.fields[0].about, "not // a comment");
        assert_eq!(spec.fields[1].ty, Ty::Array(Box::new(Ty::Int32)));
        assert!(spec.fields[1].ignorable);
    }

    #[test]
    fn unknown_keys_are_refused_at_every_level() {
        let top = MINIMAL.replacen("\"apiKey\": 99,", "\"apiKey\": 99, \"newThing\": 1,", 1);
        assert!(
            parse_spec("Demo.json", &top)
                .unwrap_err()
                .contains("unknown key `newThing`")
        );
        let field = MINIMAL.replacen(
            "\"ignorable\": true",
            "\"ignorable\": true, \"encoding\": \"x\"",
            1,
        );
        assert!(
            parse_spec("Demo.json", &field)
                .unwrap_err()
                .contains("unknown key `encoding`")
        );
    }

    #[test]
    fn bad_shapes_are_refused() {
        let bad_type = MINIMAL.replacen("\"[]int32\"", "\"int128\"", 1);
        assert!(parse_spec("Demo.json", &bad_type).is_err());
        let nullable_int = MINIMAL.replacen(
            "\"[]int32\", \"versions\": \"2+\", \"ignorable\": true",
            "\"int32\", \"versions\": \"2+\", \"nullableVersions\": \"2+\"",
            1,
        );
        assert!(
            parse_spec("Demo.json", &nullable_int)
                .unwrap_err()
                .contains("cannot be nullable")
        );
        let lone_tag = MINIMAL.replacen("\"ignorable\": true", "\"tag\": 0", 1);
        assert!(parse_spec("Demo.json", &lone_tag).is_err());
    }

    #[test]
    fn version_ranges() {
        assert_eq!(
            Range::parse("3+").unwrap(),
            Range {
                min: 3,
                max: i16::MAX
            }
        );
        assert_eq!(Range::parse("1-4").unwrap(), Range { min: 1, max: 4 });
        assert_eq!(Range::parse("7").unwrap(), Range { min: 7, max: 7 });
        assert!(Range::parse("none").unwrap().is_empty());
        assert!(Range::parse("4-1").is_err());
        assert!(Range::parse("x").is_err());
    }

    #[test]
    fn snake_case_and_keywords() {
        use crate::emit::{field_ident, snake};
        assert_eq!(snake("ThrottleTimeMs"), "throttle_time_ms");
        assert_eq!(snake("IsrNodes"), "isr_nodes");
        assert_eq!(snake("TopicID"), "topic_id");
        assert_eq!(snake("ZkMigrationReady"), "zk_migration_ready");
        assert_eq!(field_ident("Type"), "r#type");
        assert_eq!(field_ident("Match"), "r#match");
    }
}
