//! A small borrowing JSON parser: the tree FHIRPath is evaluated on.
//!
//! Strings without escapes and all numbers borrow from the input; numbers keep their source
//! text, so a decimal such as `1.50` keeps its precision (needed by `lowBoundary()`).
//! Objects keep their members in source order as a vector (FHIR objects are small, a linear
//! scan beats hashing).

use std::borrow::Cow;

/// A JSON value borrowing from its source text.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as its source text (e.g. `1.50`).
    Number(Cow<'a, str>),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object, members in source order.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// The member `key` of an object.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(m) => m.iter().find(|(k, _)| key_eq(k, key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to a `serde_json::Value` (numbers as integers when they have no fraction).
    pub fn to_serde(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => number_to_serde(n),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(a) => Value::Array(a.iter().map(Json::to_serde).collect()),
            Json::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_serde()))
                    .collect(),
            ),
        }
    }

    /// Converts a `serde_json::Value` into an owned tree.
    pub fn from_serde(v: &serde_json::Value) -> Json<'static> {
        use serde_json::Value;
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(Cow::Owned(n.to_string())),
            Value::String(s) => Json::String(Cow::Owned(s.clone())),
            Value::Array(a) => Json::Array(a.iter().map(Json::from_serde).collect()),
            Value::Object(m) => Json::Object(
                m.iter()
                    .map(|(k, v)| (Cow::Owned(k.clone()), Json::from_serde(v)))
                    .collect(),
            ),
        }
    }
}

/// Member-name equality, checking length and first byte before calling `memcmp` (most
/// member names differ in one of them).
#[inline]
pub(crate) fn key_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// A JSON number's text as a `serde_json::Value` number.
pub(crate) fn number_to_serde(n: &str) -> serde_json::Value {
    if let Ok(i) = n.parse::<i64>() {
        return serde_json::Value::from(i);
    }
    n.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// A JSON syntax error with its byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {message}")]
pub struct JsonError {
    /// Byte offset of the error in the input.
    pub offset: usize,
    /// What was wrong.
    pub message: &'static str,
}

/// Parses one JSON document (surrounding whitespace allowed).
pub fn parse(src: &str) -> Result<Json<'_>, JsonError> {
    parse_with(src, None, false)
}

/// Parses one JSON document, keeping only the members of the root object for which `keep`
/// returns true; the others are skipped (checked for syntax, never built). A view uses this
/// to parse only what its paths can reach.
pub fn parse_filtered<'a>(
    src: &'a str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Json<'a>, JsonError> {
    parse_with(src, Some(keep), false)
}

/// Like [`parse_filtered`], but `keep` applies to the members of every object, at any depth.
/// Only safe when no complex value is used whole (output or compared).
pub fn parse_filtered_deep<'a>(
    src: &'a str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Json<'a>, JsonError> {
    parse_with(src, Some(keep), true)
}

fn parse_with<'a>(
    src: &'a str,
    keep: Option<&dyn Fn(&str) -> bool>,
    deep: bool,
) -> Result<Json<'a>, JsonError> {
    let mut p = Parser {
        s: src,
        b: src.as_bytes(),
        i: 0,
        depth: 0,
        members: Vec::new(),
        items: Vec::new(),
        keep,
        deep,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a, 'k> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
    /// Scratch stacks: members/items of the open objects/arrays, moved into exactly-sized
    /// vectors when each closes (one allocation per object or array).
    members: Vec<(Cow<'a, str>, Json<'a>)>,
    items: Vec<Json<'a>>,
    /// Which object members to build (others are skipped): at the root only, or everywhere
    /// when `deep`.
    keep: Option<&'k dyn Fn(&str) -> bool>,
    deep: bool,
}

const MAX_DEPTH: u32 = 512;

impl<'a> Parser<'a, '_> {
    fn err(&self, message: &'static str) -> JsonError {
        JsonError {
            offset: self.i,
            message,
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn value(&mut self) -> Result<Json<'a>, JsonError> {
        match self.b.get(self.i) {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.lit(b"true", Json::Bool(true)),
            Some(b'f') => self.lit(b"false", Json::Bool(false)),
            Some(b'n') => self.lit(b"null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn lit(&mut self, word: &[u8], v: Json<'a>) -> Result<Json<'a>, JsonError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn number(&mut self) -> Result<Json<'a>, JsonError> {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.b.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i > s
        };
        if !digits(self) {
            return Err(self.err("invalid number"));
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return Err(self.err("invalid number"));
            }
        }
        Ok(Json::Number(Cow::Borrowed(&self.s[start..self.i])))
    }

    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.i += 1; // opening quote
        let start = self.i;
        // Fast path: no escapes. (Raw control characters are accepted.)
        match memchr::memchr2(b'"', b'\\', &self.b[self.i..]) {
            None => {
                self.i = self.b.len();
                return Err(self.err("unterminated string"));
            }
            Some(n) => {
                self.i += n;
                if self.b[self.i] == b'"' {
                    let s = &self.s[start..self.i];
                    self.i += 1;
                    return Ok(Cow::Borrowed(s));
                }
            }
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = *self.b.get(self.i).ok_or_else(|| self.err("bad escape"))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let ch = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.i) == Some(&b'\\')
                                    && self.b.get(self.i + 1) == Some(&b'u')
                                {
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&lo) {
                                        return Err(self.err("bad surrogate pair"));
                                    }
                                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                } else {
                                    None
                                }
                            } else {
                                char::from_u32(hi)
                            };
                            out.push(ch.unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                Some(&c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => {
                    // Copy a run of plain bytes (UTF-8 boundaries are preserved: we stop only on ASCII).
                    let s = self.i;
                    while self
                        .b
                        .get(self.i)
                        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
                    {
                        self.i += 1;
                    }
                    out.push_str(&self.s[s..self.i]);
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(h)
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.i += 1;
        self.ws();
        Ok(())
    }

    fn array(&mut self) -> Result<Json<'a>, JsonError> {
        self.enter()?;
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Json::Array(Vec::new()));
        }
        let base = self.items.len();
        loop {
            let v = self.value()?;
            self.items.push(v);
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    self.depth -= 1;
                    let v: Vec<Json<'a>> = self.items.drain(base..).collect();
                    return Ok(Json::Array(v));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self) -> Result<Json<'a>, JsonError> {
        self.enter()?;
        let keep = self.keep.filter(|_| self.deep || self.depth == 1);
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Json::Object(Vec::new()));
        }
        let base = self.members.len();
        loop {
            if self.b.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a member name"));
            }
            let k = self.string()?;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return Err(self.err("expected ':'"));
            }
            self.i += 1;
            self.ws();
            if keep.is_none_or(|f| f(&k)) {
                let v = self.value()?;
                self.members.push((k, v));
            } else {
                self.skip_value()?;
            }
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    self.depth -= 1;
                    let m: Vec<(Cow<'a, str>, Json<'a>)> = self.members.drain(base..).collect();
                    return Ok(Json::Object(m));
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    /// Skips one value without building it: strings are scanned with memchr, containers by
    /// bracket depth (their inner syntax is checked only loosely).
    fn skip_value(&mut self) -> Result<(), JsonError> {
        match self.b.get(self.i) {
            Some(b'"') => self.skip_string(),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                while let Some(&c) = self.b.get(self.i) {
                    match c {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                Err(self.err("unterminated container"))
            }
            _ => self.value().map(|_| ()),
        }
    }

    fn skip_string(&mut self) -> Result<(), JsonError> {
        self.i += 1;
        loop {
            match memchr::memchr2(b'"', b'\\', &self.b[self.i..]) {
                None => {
                    self.i = self.b.len();
                    return Err(self.err("unterminated string"));
                }
                Some(n) => {
                    self.i += n;
                    if self.b[self.i] == b'"' {
                        self.i += 1;
                        return Ok(());
                    }
                    self.i += 2;
                    if self.i > self.b.len() {
                        return Err(self.err("unterminated string"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_keeps_decimal_text() {
        let v = parse(r#" {"a": [1.50, -2e3, true, null], "b": "x\"y\u00e9", "c": {}} "#).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Json::Array(vec![
                Json::Number("1.50".into()),
                Json::Number("-2e3".into()),
                Json::Bool(true),
                Json::Null
            ]))
        );
        assert_eq!(v.get("b").and_then(Json::as_str), Some("x\"yé"));
        assert_eq!(v.get("c"), Some(&Json::Object(vec![])));
    }

    #[test]
    fn rejects_bad_json() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "tru", "1 2", "\"abc", "01x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filtered_parse_skips_members() {
        let src = r#"{"a": {"x": [1, "}]\\\"", {"y": null}]}, "b": "q\"}", "c": [1, 2], "d": 1}"#;
        let v = parse_filtered(src, &|k| k == "c" || k == "d").unwrap();
        assert_eq!(
            v,
            Json::Object(vec![
                (
                    "c".into(),
                    Json::Array(vec![Json::Number("1".into()), Json::Number("2".into())])
                ),
                ("d".into(), Json::Number("1".into())),
            ])
        );
        assert!(parse_filtered(r#"{"a": [1, 2"#, &|_| false).is_err());
        assert!(parse_filtered(r#"{"a": "x"#, &|_| false).is_err());
    }
}
