//! The check of one downloaded NDJSON line: UTF-8, one JSON object, and a root `resourceType`
//! that is the type the manifest names.
//!
//! The JSON is read with `flatfhir-core`'s validating walker (`internal::walk`), the JSON
//! layer `convert` and the view engine read the same lines with, so a line a download
//! accepts is read by `convert` the same way (and rejected for the same reasons). The
//! trade-off, written down because it adds a dependency: `flatfhir-fetch` now links
//! `flatfhir-core` (and through it arrow and parquet) even when used alone, where it needed
//! only serde_json before; the `flatfhir` binary and the Python package link both anyway.
//! In return a whole download takes about a third fewer instructions than with
//! `serde_json::from_slice` into a one-field struct (265 M → 172 M for a 14 MB export from the
//! test server, `benches/results/fetch-vs-curl-RESULTS.md`; the walker validates every member
//! but reads only `resourceType`, building nothing), and fetch and convert cannot disagree
//! about JSON syntax.
//!
//! Where the answer differs from serde_json's (checked by the differential test below):
//! - invalid UTF-8 anywhere in the line, and `\u` escapes of unpaired UTF-16 surrogates, are
//!   rejected (serde_json reads skipped strings without checking either; `convert` rejects
//!   both);
//! - a JSON array is not a line (serde_json reads a struct from an array too);
//! - nesting is allowed to the walker's 256 levels, as in `convert`.
//!
//! Duplicate member names: both reject a second root `resourceType` and accept other repeats.
//! `convert` rejects every duplicate member name, naming file and line; finding them here
//! would mean remembering every name of every object of every line, and a download keeps
//! the server's bytes as sent whatever they hold.

use std::path::Path;

use flatfhir_core::internal::walk::{Reason, Scalar, Visitor, line_text, walk};

use crate::error::{Error, Result};
use crate::http::outcome_text;
use crate::manifest::ItemType;

/// What a line's root `resourceType` held.
#[derive(Debug, Default, PartialEq)]
enum Found {
    /// No `resourceType` member, or `null` (as serde_json's `Option` read it).
    #[default]
    Absent,
    /// The type expected (or any string when no type is expected): no copy made.
    Wanted,
    /// Another string.
    Other(String),
    /// Not a string: a number, boolean, array or object.
    NotString,
}

/// Finds the root `resourceType`, skipping (after validating) every other member.
#[derive(Debug)]
struct TypeOf<'e> {
    expected: Option<&'e str>,
    found: Found,
    /// Inside the root `resourceType`'s value.
    in_type: bool,
    /// Array nesting inside that value (its elements are not the type).
    nested: usize,
    seen: bool,
}

impl Visitor for TypeOf<'_> {
    #[inline]
    fn enter_key(&mut self, depth: usize, key: &str) -> Result<bool, Reason> {
        if depth != 1 || key != "resourceType" {
            // Members of other values, and the type's own members, need only validation.
            return Ok(false);
        }
        if self.seen {
            return Err(
                "duplicate key resourceType in one object (JSON readers keep only the \
                        last value)"
                    .into(),
            );
        }
        self.seen = true;
        self.in_type = true;
        self.nested = 0;
        self.found = Found::NotString;
        Ok(true)
    }

    #[inline]
    fn enter_index(&mut self, _index: usize) -> Result<(), Reason> {
        self.nested += 1;
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        if self.nested > 0 {
            self.nested -= 1;
        } else {
            self.in_type = false;
        }
    }

    #[inline]
    fn scalar(&mut self, value: Scalar<'_>) -> Result<(), Reason> {
        if self.in_type && self.nested == 0 {
            self.found = match value {
                Scalar::Str(s) => match self.expected {
                    Some(want) if s != want => Found::Other(s.to_owned()),
                    _ => Found::Wanted,
                },
                Scalar::Null => Found::Absent,
                _ => Found::NotString,
            };
        }
        Ok(())
    }

    #[inline]
    fn expected_key(&mut self, depth: usize) -> Option<&str> {
        // Bulk Data servers write `resourceType` first.
        (depth == 1 && !self.seen).then_some("resourceType")
    }
}

/// Why the walker rejected a line, as a download error says it.
fn not_json(reason: String) -> String {
    if let Some(rest) = reason.strip_prefix("not valid JSON: ") {
        format!("not JSON: {rest}")
    } else if reason.starts_with("not a JSON object") || reason.starts_with("duplicate key") {
        reason
    } else {
        format!("not JSON: {reason}")
    }
}

/// Check one non-empty, trimmed line (`line_no` of `path`). `scratch` is the walker's buffer
/// for unescaped strings, kept between lines.
pub(crate) fn check_line(
    line: &[u8],
    expected: Option<&str>,
    item: ItemType,
    line_no: u64,
    path: &Path,
    scratch: &mut String,
) -> Result<()> {
    let content = |reason: String| Error::Content {
        path: path.to_owned(),
        line: line_no,
        reason,
    };
    // The length was checked against --max-line-bytes by the caller, with its own message.
    let text = line_text(line, usize::MAX).map_err(|e| content(format!("not JSON: {e}")))?;
    let mut v = TypeOf {
        expected,
        found: Found::Absent,
        in_type: false,
        nested: 0,
        seen: false,
    };
    walk(text, &mut v, scratch).map_err(|e| content(not_json(e)))?;
    let Some(want) = expected else {
        return match v.found {
            Found::NotString => Err(content("resourceType is not a string".into())),
            _ => Ok(()),
        };
    };
    let got = match v.found {
        Found::Wanted => return Ok(()),
        Found::Absent => String::new(),
        Found::Other(got) => got,
        Found::NotString => {
            return Err(content(format!(
                "resourceType is not a string where the manifest says {want}"
            )));
        }
    };
    if got == "OperationOutcome" && item == ItemType::Output {
        // The server answered with an error instead of the data (SMART's fileError).
        return Err(content(format!(
            "the server sent an OperationOutcome instead of {want} resources: {}",
            outcome_text(text)
        )));
    }
    Err(content(format!(
        "resourceType {got:?} where the manifest says {want}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Option<&str>) -> Result<(), String> {
        let mut scratch = String::new();
        check_line(
            line.as_bytes(),
            expected,
            ItemType::Output,
            7,
            Path::new("1.Patient.ndjson"),
            &mut scratch,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_root_type_is_found_wherever_it_is_and_only_at_the_root() {
        assert_eq!(
            check(r#"{"resourceType":"Patient","id":"a"}"#, Some("Patient")),
            Ok(())
        );
        assert_eq!(
            check(
                r#"{"id":"a","meta":{"resourceType":"X"},"resourceType":"Patient"}"#,
                Some("Patient")
            ),
            Ok(())
        );
        // Escaped, still the same name.
        assert_eq!(
            check(r#"{"resourceType":"Pat\u0069ent"}"#, Some("Patient")),
            Ok(())
        );
        let e = check(
            r#"{"contained":[{"resourceType":"Patient"}]}"#,
            Some("Patient"),
        )
        .unwrap_err();
        assert!(
            e.contains("resourceType \"\" where the manifest says Patient"),
            "{e}"
        );
        assert!(e.contains("line 7"), "{e}");
        let e = check(r#"{"resourceType":["Patient"]}"#, Some("Patient")).unwrap_err();
        assert!(e.contains("resourceType is not a string"), "{e}");
        let e = check(
            r#"{"resourceType":"Patient","resourceType":"Patient"}"#,
            Some("Patient"),
        )
        .unwrap_err();
        assert!(e.contains("duplicate key resourceType"), "{e}");
        // No type expected: any object whose type, if any, is a string.
        assert_eq!(check(r#"{"a":1}"#, None), Ok(()));
        assert!(check(r#"{"resourceType":5}"#, None).is_err());
    }

    #[test]
    fn bad_json_is_named_with_its_place() {
        let e = check(r#"{"resourceType":"Patient","id":}"#, Some("Patient")).unwrap_err();
        assert!(
            e.contains("line 7: not JSON: expected a value, found '}' at byte 31"),
            "{e}"
        );
        let e = check("[1]", Some("Patient")).unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
        let mut scratch = String::new();
        let e = check_line(
            b"{\"resourceType\":\"Patient\",\"n\":\"\xff\"}",
            Some("Patient"),
            ItemType::Output,
            1,
            Path::new("x"),
            &mut scratch,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not JSON: not valid UTF-8 at byte 31"), "{e}");
    }

    /// The check before the walker, kept here as the reference: serde_json reading a struct
    /// with the one member `resourceType`.
    fn serde_check(line: &[u8], want: &str) -> bool {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(rename = "resourceType", borrow)]
            resource_type: Option<std::borrow::Cow<'a, str>>,
        }
        serde_json::from_slice::<Head>(line).is_ok_and(|h| h.resource_type.as_deref() == Some(want))
    }

    /// A small deterministic generator (xorshift), so a failure names a case that repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    fn value(r: &mut Rng, depth: usize, out: &mut String) {
        let k = if depth > 3 { r.below(4) } else { r.below(7) };
        match k {
            0 => out.push_str(r.pick(&[
                r#""final""#,
                r#""a\"b\\c\n\u00e9\ud83d\ude00""#,
                r#""Patient""#,
                r#""caf\u00e9 \u2603""#,
                "\"\u{e9}\u{1f600}\"",
            ])),
            1 => out.push_str(r.pick(&["0", "-1.50", "3e10", "12345678901234567890", "1E-7"])),
            2 => out.push_str(r.pick(&["true", "false", "null"])),
            3 => out.push_str(r.pick(&["[]", "{}"])),
            4 | 5 => {
                out.push('{');
                for i in 0..r.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(r.pick(&[r#""a""#, r#""b""#, r#""code""#, r#""resourceType""#]));
                    out.push(':');
                    value(r, depth + 1, out);
                }
                out.push('}');
            }
            _ => {
                out.push('[');
                for i in 0..r.below(4) {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    value(r, depth + 1, out);
                }
                out.push(']');
            }
        }
    }

    /// A resource-like line, then perhaps a few bytes changed.
    fn random_line(r: &mut Rng) -> Vec<u8> {
        let mut s = String::from("{");
        let mut members: Vec<String> = Vec::new();
        members.push(
            r.pick(&[
                r#""resourceType":"Patient""#,
                r#""resourceType":"Patient""#,
                r#""resourceType":"Pat\u0069ent""#,
                r#""resourceType":"Observation""#,
                r#""resourceType":null"#,
                r#""resourceType":5"#,
                r#""resourceType":["Patient"]"#,
                r#""resourceType":{"a":"Patient"}"#,
                r#""id":"x""#,
            ])
            .to_owned(),
        );
        for _ in 0..r.below(5) {
            let mut m = format!(
                "\"{}\":",
                r.pick(&["id", "status", "code", "meta", "value"])
            );
            value(r, 1, &mut m);
            members.push(m);
        }
        if r.below(8) == 0 {
            members.push(r#""resourceType":"Patient""#.into());
        }
        let first = r.below(members.len());
        members.swap(0, first);
        s.push_str(&members.join(","));
        s.push('}');
        let mut b = s.into_bytes();
        if r.below(12) == 0 {
            b = format!("[{}]", String::from_utf8(b).unwrap()).into_bytes();
        }
        // Mutations: JSON's punctuation, escapes, invalid UTF-8 and control bytes.
        let alphabet: &[&[u8]] = &[
            b"{", b"}", b"[", b"]", b"\"", b",", b":", b"\\", b"\\u", b"\\ud800", b"\\udc00", b"0",
            b"-", b".", b"e", b"t", b"n", b" ", b"\t", b"\x01", b"\xff", b"\xc3",
        ];
        for _ in 0..[0, 0, 1, 1, 2, 3][r.below(6)] {
            let at = r.below(b.len() + 1);
            match r.below(3) {
                0 if at < b.len() => {
                    b.remove(at);
                }
                1 if at < b.len() => {
                    let with = alphabet[r.below(alphabet.len())];
                    b.splice(at..=at, with.iter().copied());
                }
                _ => {
                    let with = alphabet[r.below(alphabet.len())];
                    b.splice(at..at, with.iter().copied());
                }
            }
        }
        b
    }

    /// Whether serde_json reads a `\u` escape of a lone UTF-16 surrogate as valid (it does
    /// in strings it skips).
    fn has_surrogate_escape(line: &[u8]) -> bool {
        line.windows(3)
            .any(|w| w[0] == b'\\' && w[1] == b'u' && matches!(w[2], b'd' | b'D'))
    }

    /// Differential test: on random (and randomly broken) lines the walker-based check
    /// accepts exactly what serde_json accepted, except where the module doc says they
    /// differ on purpose; and `convert` accepts exactly the lines the check accepts (as the
    /// download writes them, trimmed), except lines with a repeated member name, which only
    /// `convert` rejects.
    #[test]
    fn the_check_agrees_with_serde_json_and_with_convert() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let lines: Vec<Vec<u8>> = (0..3000)
            .map(|_| random_line(&mut r))
            .filter(|l| !l.contains(&b'\n') && !l.trim_ascii().is_empty())
            .map(|l| l.trim_ascii().to_vec())
            .collect();
        let mut scratch = String::new();
        let verdicts: Vec<Result<(), String>> = lines
            .iter()
            .map(|l| {
                check_line(
                    l,
                    Some("Patient"),
                    ItemType::Output,
                    1,
                    Path::new("x"),
                    &mut scratch,
                )
                .map_err(|e| e.to_string())
            })
            .collect();
        let (mut accepted, mut tightened) = (0, 0);
        for (line, ours) in lines.iter().zip(&verdicts) {
            let shown = String::from_utf8_lossy(line);
            let theirs = serde_check(line, "Patient");
            match (theirs, ours) {
                (true, Ok(())) => accepted += 1,
                (false, Err(_)) => {}
                (true, Err(why)) => {
                    // Rejected on purpose: invalid UTF-8, a lone surrogate, an array.
                    let intended = std::str::from_utf8(line).is_err()
                        || (why.contains("surrogate") && has_surrogate_escape(line))
                        || (why.contains("not a JSON object") && line.starts_with(b"["));
                    assert!(
                        intended,
                        "serde_json accepts, the check says {why}: {shown}"
                    );
                    tightened += 1;
                }
                (false, Ok(())) => panic!("serde_json rejects, the check accepts: {shown}"),
            }
        }
        // The generator reaches every branch.
        assert!(accepted > 300, "{accepted} accepted");
        assert!(tightened >= 5, "{tightened} rejected only by the walker");

        // Convert, with bad lines set aside: the lines it rejects.
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("Patient.ndjson");
        let mut body = Vec::new();
        for l in &lines {
            body.extend_from_slice(l);
            body.push(b'\n');
        }
        std::fs::write(&input, body).unwrap();
        let opts = flatfhir_core::ConvertOptions::default()
            .out_dir(dir.path().join("out"))
            .threads(1)
            .on_error(flatfhir_core::OnError::Skip);
        let group = flatfhir_core::TypeGroup {
            resource_type: "Patient".into(),
            files: vec![flatfhir_core::InputFile {
                path: input,
                typed_by_name: true,
                reports_untyped: true,
            }],
        };
        flatfhir_core::convert_group(&group, &opts, &flatfhir_core::NoProgress).unwrap();
        let errors = dir.path().join("out/_rejected/Patient.errors.ndjson");
        let mut by_convert = std::collections::BTreeMap::new();
        for rec in std::fs::read_to_string(errors).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(rec).unwrap();
            by_convert.insert(
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_owned(),
            );
        }
        let mut duplicates = 0;
        for (i, (line, ours)) in lines.iter().zip(&verdicts).enumerate() {
            let shown = String::from_utf8_lossy(line);
            match (ours, by_convert.get(&(i as u64 + 1))) {
                (Ok(()), None) | (Err(_), Some(_)) => {}
                (Ok(()), Some(why)) => {
                    assert!(why.starts_with("duplicate key"), "convert: {why}: {shown}");
                    duplicates += 1;
                }
                (Err(why), None) => panic!("only the check rejects ({why}): {shown}"),
            }
        }
        assert!(duplicates > 0, "the generator makes repeated member names");
    }
}
