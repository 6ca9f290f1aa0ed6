//! `kbus consume --format`: a tiny template language for printing records, kcat-style.
//! `%t` topic, `%p` partition, `%o` offset, `%k` key, `%v` value, `%T` timestamp (ms),
//! `%%` a percent sign, and `\n`, `\t`, `\\` escapes. Parsed once, so printing a record is a
//! walk over pieces, not a re-scan of the template.

use std::io::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
}

/// The fields a template can print.
pub struct View<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
}

impl<'a> View<'a> {
    /// The fields a format can name, borrowed from a fetched record.
    pub fn of(r: &'a bus::consumer::ConsumerRecord) -> View<'a> {
        View {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            timestamp: r.timestamp,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format(Vec<Piece>);

impl Format {
    pub fn parse(template: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            let piece = match c {
                '%' => match chars.next() {
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('k') => Piece::Key,
                    Some('v') => Piece::Value,
                    Some('T') => Piece::Timestamp,
                    Some('%') => {
                        text.push(b'%');
                        continue;
                    }
                    Some(other) => {
                        return Err(format!(
                            "--format: unknown field %{other} (use %t %p %o %k %v %T or %%)"
                        ));
                    }
                    None => return Err("--format: template ends with a lone %".into()),
                },
                '\\' => {
                    match chars.next() {
                        Some('n') => text.push(b'\n'),
                        Some('t') => text.push(b'\t'),
                        Some('\\') => text.push(b'\\'),
                        Some(other) => {
                            text.push(b'\\');
                            let mut b = [0; 4];
                            text.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                        }
                        None => text.push(b'\\'),
                    }
                    continue;
                }
                c => {
                    let mut b = [0; 4];
                    text.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                    continue;
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format(pieces))
    }

    /// Writes one record. A null key or value prints as nothing, as kcat does by default.
    pub fn write(&self, out: &mut impl Write, r: &View<'_>) -> std::io::Result<()> {
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.write_all(t)?,
                Piece::Topic => out.write_all(r.topic.as_bytes())?,
                Piece::Partition => write!(out, "{}", r.partition)?,
                Piece::Offset => write!(out, "{}", r.offset)?,
                Piece::Key => out.write_all(r.key.unwrap_or_default())?,
                Piece::Value => out.write_all(r.value.unwrap_or_default())?,
                Piece::Timestamp => write!(out, "{}", r.timestamp)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> String {
        let f = Format::parse(template).unwrap();
        let mut out = Vec::new();
        f.write(
            &mut out,
            &View {
                topic: "orders",
                partition: 3,
                offset: 42,
                key: Some(b"k1"),
                value: None,
                timestamp: 1700000000000,
            },
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_field_and_escape_renders() {
        assert_eq!(
            render("%t/%p@%o %k=%v %T 100%%\\n"),
            "orders/3@42 k1= 1700000000000 100%\n"
        );
        assert_eq!(render("\\t%k\\\\"), "\tk1\\");
        assert_eq!(render("é%v"), "é");
    }

    #[test]
    fn bad_templates_name_the_problem() {
        assert!(Format::parse("%x").unwrap_err().contains("%x"));
        assert!(Format::parse("abc%").unwrap_err().contains("lone %"));
    }
}
