//! YAML read into a tree of values that each know their `line:col`, so every
//! later check can point at the exact place in the file.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A place in a policy file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: u64,
    pub col: u64,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
    /// What the user wrote, for a scalar YAML did not read as a string
    /// (`1.10`, `0x1F`, `true`), so messages quote that and not `1.1`
    /// (for an alias, the text where its anchor's value is written).
    pub text: Option<String>,
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }
    /// The scalar as text (numbers and booleans too: `tags: [1.0]` means the tag "1.0"),
    /// as written where the source text is known.
    pub fn as_scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) if self.text.is_some() => {
                self.text.clone()
            }
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// The raw serde-side tree, converted to `Node` with the file name attached.
#[derive(Debug)]
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
                Ok(i64::try_from(v)
                    .map(Raw::Int)
                    .unwrap_or(Raw::Float(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = a.next_element::<Spanned<Raw>>()? {
                    out.push(v);
                }
                Ok(Raw::Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = a.next_key::<Spanned<Raw>>()? {
                    let v = a.next_value::<Spanned<Raw>>()?;
                    out.push((k, v));
                }
                Ok(Raw::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The source text at a scalar's span, if the span is known and lies on one line.
fn source_text(source: &str, at: &serde_saphyr::Location) -> Option<String> {
    let span = at.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let text = source.get(start..start.checked_add(len)?)?.trim();
    (!text.is_empty() && !text.contains('\n')).then(|| text.to_string())
}

fn convert(file: &Arc<str>, source: &str, s: Spanned<Raw>) -> Node {
    let loc = Loc {
        file: file.clone(),
        line: s.referenced.line(),
        col: s.referenced.column(),
    };
    let text = match s.value {
        Raw::Int(_) | Raw::Float(_) | Raw::Bool(_) => source_text(source, &s.defined),
        _ => None,
    };
    let value = match s.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(v) => Value::Str(v),
        Raw::Seq(items) => Value::Seq(
            items
                .into_iter()
                .map(|i| convert(file, source, i))
                .collect(),
        ),
        Raw::Map(items) => Value::Map(
            items
                .into_iter()
                .map(|(k, v)| (convert(file, source, k), convert(file, source, v)))
                .collect(),
        ),
    };
    Node { value, loc, text }
}

/// Parses one YAML document. A syntax error comes back as `(loc, message)`.
pub fn parse(file: &Arc<str>, text: &str) -> Result<Node, (Loc, String)> {
    if text.trim().is_empty() {
        return Ok(Node {
            value: Value::Null,
            loc: Loc {
                file: file.clone(),
                line: 1,
                col: 1,
            },
            text: None,
        });
    }
    // A key given twice, or `.inf`/`.nan`, reach the tree as they are: the
    // decoder reports them in its own words (`decode::Fields`, `named_map`),
    // at their place, along with every other problem in the file (the
    // parser would stop at the first).
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    // The library's default budget refuses a shared `keep: *defaults` used
    // by 100 rules (its alias-to-anchor ratio) and files past 250,000 nodes:
    // ordinary policies. Alias bombs stay bounded by the replay limit.
    let mut budget = serde_saphyr::Budget::default();
    budget.alias_anchor_min_aliases = 100_000;
    budget.max_nodes = 2_000_000;
    budget.max_events = 8_000_000;
    options.budget = Some(budget);
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => Ok(convert(file, text, raw)),
        Err(e) => {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let msg = e.to_string();
            // The library's message may repeat the position; keep the first line only.
            let msg = msg.lines().next().unwrap_or("invalid YAML").to_string();
            // Its words for two limits are meant for programmers.
            let msg = if msg.contains("multiple YAML documents") {
                "a policy file holds one YAML document: put what follows `---` in a file of its \
                 own (every *.yaml file in the folder is read)"
                    .to_string()
            } else if msg.contains("budget breached") {
                format!(
                    "{msg}: the file is too large, too deep or expands aliases too often to be \
                     read safely; split it into several files (every *.yaml file in the folder \
                     is read)"
                )
            } else {
                msg
            };
            Err((
                Loc {
                    file: file.clone(),
                    line: line.max(1),
                    col: col.max(1),
                },
                format!("invalid YAML: {msg}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_point_at_keys_and_values() {
        let f: Arc<str> = Arc::from("p.yaml");
        let n = parse(&f, "a:\n  b: [1, x]\n  c: {d: true}\n").unwrap();
        let Value::Map(m) = &n.value else {
            panic!("{n:?}")
        };
        assert_eq!((m[0].0.loc.line, m[0].0.loc.col), (1, 1));
        let Value::Map(inner) = &m[0].1.value else {
            panic!()
        };
        assert_eq!((inner[0].0.loc.line, inner[0].0.loc.col), (2, 3));
        let Value::Seq(s) = &inner[0].1.value else {
            panic!()
        };
        assert_eq!((s[1].loc.line, s[1].loc.col), (2, 10));
        assert_eq!(s[1].value, Value::Str("x".into()));
    }

    #[test]
    fn scalars_not_read_as_text_keep_what_was_written() {
        let f: Arc<str> = Arc::from("p.yaml");
        let n = parse(&f, "a: &n 1.10\nb: [*n, !!int 7, 0x1F , yes, x]\n").unwrap();
        let Value::Map(m) = &n.value else {
            panic!("{n:?}")
        };
        let Value::Seq(s) = &m[1].1.value else {
            panic!("{n:?}")
        };
        let texts: Vec<Option<&str>> = std::iter::once(&m[0].1)
            .chain(s)
            .map(|n| n.text.as_deref())
            .collect();
        // An alias quotes its anchor's value; a string needs no copy.
        assert_eq!(
            texts,
            [
                Some("1.10"),
                Some("1.10"),
                Some("7"),
                Some("0x1F"),
                Some("yes"),
                None
            ]
        );
        assert_eq!(s[2].as_scalar_text().as_deref(), Some("0x1F"));
    }

    #[test]
    fn duplicate_keys_reach_the_tree() {
        let f: Arc<str> = Arc::from("p.yaml");
        let n = parse(&f, "a: 1\nb: 2\na: 3\n").unwrap();
        let Value::Map(m) = &n.value else {
            panic!("{n:?}")
        };
        assert_eq!(m.len(), 3);
        assert_eq!((m[2].0.loc.line, m[2].0.loc.col), (3, 1));
    }

    #[test]
    fn syntax_errors_are_located() {
        let f: Arc<str> = Arc::from("p.yaml");
        let (loc, msg) = parse(&f, "a: [1, 2\nb: c\n").unwrap_err();
        assert!(loc.line >= 1, "{loc} {msg}");
        assert!(msg.starts_with("invalid YAML"), "{msg}");
    }
}
