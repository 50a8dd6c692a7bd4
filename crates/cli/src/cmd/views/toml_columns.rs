//! The TOML form of a `--columns` file: `[Type]` sections of `name = "fhirpath"` lines, read
//! with the `toml` crate (all of TOML: escapes such as `\u0041`, literal and multi-line
//! strings, quoted keys, comments), then checked for that shape. Every error names its line.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// `(type, column name, FHIRPath)` triples in file order.
pub(super) fn columns_toml(text: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    // The parser's own message already says "TOML parse error at line L, column C" and
    // quotes the line.
    let doc = DeTable::parse(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    let line = |at: &Spanned<_>| line_of(text, at.span().start);
    let mut out = Vec::new();
    for (ty, section) in doc.get_ref() {
        let DeValue::Table(cols) = section.get_ref() else {
            anyhow::bail!(
                "line {}: a column before any [Type] section (`{}`)",
                line(ty),
                ty.get_ref()
            );
        };
        for (name, path) in cols {
            let DeValue::String(path_text) = path.get_ref() else {
                anyhow::bail!(
                    "line {}: column `{}` of [{}]: expected a FHIRPath string, as in \
                     name = \"path\", not {}",
                    line(name),
                    name.get_ref(),
                    ty.get_ref(),
                    kind(path.get_ref())
                );
            };
            out.push((
                ty.get_ref().to_string(),
                name.get_ref().to_string(),
                path_text.to_string(),
            ));
        }
    }
    Ok(out)
}

/// The 1-based line holding byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// What a non-string value is, for the error message.
fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table (a dotted key or a nested section)",
    }
}

#[cfg(test)]
mod tests {
    use super::columns_toml;

    fn triples(text: &str) -> Vec<(String, String, String)> {
        columns_toml(text).unwrap()
    }

    fn t(ty: &str, name: &str, path: &str) -> (String, String, String) {
        (ty.into(), name.into(), path.into())
    }

    /// Escapes decode as TOML says: the old hand-written reader turned `\u0041` into
    /// `u0041` and `\\` followed by `"` ended the string early.
    #[test]
    fn escapes_follow_toml() {
        let got = triples(
            "[Patient]\n\
             a = \"\\u0041\\U0001F600\"\n\
             b = \"name.where(family = \\\"O\\\\'Brien\\\")\"\n\
             c = 'C:\\no\\escape'\n\
             d = \"tab\\there\"\n\
             \"quoted key\" = \"x\"\n",
        );
        assert_eq!(
            got,
            [
                t("Patient", "a", "A\u{1F600}"),
                t("Patient", "b", "name.where(family = \"O\\'Brien\")"),
                t("Patient", "c", "C:\\no\\escape"),
                t("Patient", "d", "tab\there"),
                t("Patient", "quoted key", "x"),
            ]
        );
    }

    /// Sections and columns keep file order (the view's column order).
    #[test]
    fn keeps_file_order() {
        let got = triples(
            "# columns\n[Patient]\nz = \"id\" # comment\na = '''gender'''\n\n\
             [Condition]\ncode = \"code.coding[0].code\"\n[\"Observation\"]\nv = \"value\"\n",
        );
        assert_eq!(
            got,
            [
                t("Patient", "z", "id"),
                t("Patient", "a", "gender"),
                t("Condition", "code", "code.coding[0].code"),
                t("Observation", "v", "value"),
            ]
        );
    }

    fn error(text: &str) -> String {
        format!("{:#}", columns_toml(text).unwrap_err())
    }

    #[test]
    fn errors_name_the_line() {
        let e = error("[Patient]\nid = \"id\"\ngender = \"unterminated\n");
        assert!(e.contains("line 3"), "{e}");
        let e = error("id = \"id\"\n");
        assert!(
            e.contains("line 1: a column before any [Type] section"),
            "{e}"
        );
        let e = error("[Patient]\nid = \"id\"\n\nn = 3\n");
        assert!(
            e.contains("line 4: column `n` of [Patient]: expected a FHIRPath string"),
            "{e}"
        );
        let e = error("[Patient]\nid = \"id\"\nid = \"x\"\n");
        assert!(e.contains("line 3"), "duplicate key: {e}");
        let e = error("[Patient]\nname.given = \"x\"\n");
        assert!(e.contains("line 2") && e.contains("a table"), "{e}");
        let e = error("[Patient]\nbad = \"\\q\"\n");
        assert!(e.contains("line 2"), "bad escape: {e}");
    }
}
