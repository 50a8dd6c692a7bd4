//! The borrowed JSON tree FHIRPath is evaluated on, built from the events of core's
//! validating walker (`flatfhir_core::walk`), the parser `convert` reads every line with: one
//! JSON layer, so a line `convert` rejects a view rejects with the same reason.
//!
//! Strings without escapes and all numbers borrow from the input; numbers keep their source
//! text, so a decimal such as `1.50` keeps its precision (needed by `lowBoundary()`).
//! Objects keep their members in source order as a vector (FHIR objects are small, a linear
//! scan beats hashing). A view prunes the tree while it is built (see `prune`): members no
//! path of the view reaches are skipped (validated, never built).

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

/// Why a line is not a JSON object: the walker's reason, the same text `convert` gives (with
/// the byte offset where it applies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct JsonError {
    /// What was wrong, e.g. `not valid JSON: expected ',' or '}' at byte 12, found ...`.
    pub reason: String,
}

/// Parses one JSON object (one NDJSON line, or a whole file holding one object; surrounding
/// whitespace allowed) into a tree.
pub fn parse(src: &str) -> Result<Json<'_>, JsonError> {
    crate::prune::build(src, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_keeps_decimal_text() {
        let v = parse(r#" {"a": [1.50, -2e3, true, null], "b": "x\"y\u00e9", "c": {}, "d": []} "#)
            .unwrap();
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
        assert_eq!(v.get("d"), Some(&Json::Array(vec![])));
        assert_eq!(parse("{}").unwrap(), Json::Object(vec![]));
    }

    #[test]
    fn rejects_bad_json() {
        for bad in [
            "",
            "{",
            "[1]",
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            "{} 2",
            r#"{"a":"abc}"#,
            r#"{"a":01}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
