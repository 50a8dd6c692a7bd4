//! What a finished run reports: the [`Summary`] of the files, and the [`Issue`]s read from the
//! server's error files (nothing in them is dropped, see [`read_issues`]).

use std::collections::BTreeMap;
use std::path::Path;

/// One issue from the manifest's error files.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Issue {
    /// `fatal`, `error`, `warning` or `information`.
    pub severity: String,
    /// Issue code.
    pub code: String,
    /// `diagnostics` or `details.text`.
    pub text: String,
    /// The error file it came from (relative to DIR).
    pub file: String,
}

/// What an export produced.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Status URL (redacted).
    pub status_url: String,
    /// `transactionTime` of the manifest. Only a [complete](Summary::complete) export may be
    /// followed by an incremental one with this as `--since`: after failures, it would skip
    /// the data that failed.
    pub transaction_time: Option<String>,
    /// Files complete.
    pub files: usize,
    /// Resources in output files.
    pub resources: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Output resources per type.
    pub types: BTreeMap<String, u64>,
    /// Files that failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Issues reported in the manifest's error files.
    pub issues: Vec<Issue>,
    /// Seconds the run took.
    pub seconds: f64,
    /// Whether the export was deleted on the server afterwards.
    pub deleted_on_server: bool,
}

impl Summary {
    /// Everything the server exported is here and the server reported no error: the only
    /// state in which `transaction_time` is a safe `--since` for the next export.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && !self.has_error_issues()
    }

    /// Whether the server reported any `error` or `fatal` issue.
    #[must_use]
    pub fn has_error_issues(&self) -> bool {
        self.issues
            .iter()
            .any(|i| i.severity == "error" || i.severity == "fatal")
    }
}

/// The issues of an error file. Nothing in it is dropped: a file that cannot be read, a line
/// that is not JSON and a line with no `issue` each become an issue saying so, so the user
/// sees that the server reported something the client could not read.
pub(crate) fn read_issues(dir: &Path, rel: &str) -> Vec<Issue> {
    let unreadable = |text: String| Issue {
        severity: "error".to_owned(),
        code: "unreadable".to_owned(),
        text,
        file: rel.to_owned(),
    };
    let text = match std::fs::read(dir.join(rel)) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                return vec![unreadable(format!(
                    "the error file is not UTF-8 (at byte {})",
                    e.utf8_error().valid_up_to()
                ))];
            }
        },
        Err(e) => return vec![unreadable(format!("cannot read the error file: {e}"))],
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => v,
            Err(e) => {
                out.push(unreadable(format!("line {} is not JSON: {e}", n + 1)));
                continue;
            }
        };
        let issues = v["issue"].as_array().map_or(&[][..], Vec::as_slice);
        if issues.is_empty() {
            out.push(unreadable(format!(
                "line {} holds no issue (expected an OperationOutcome)",
                n + 1
            )));
        }
        for i in issues {
            out.push(Issue {
                severity: i["severity"].as_str().unwrap_or("error").to_owned(),
                code: i["code"].as_str().unwrap_or("").to_owned(),
                text: i["diagnostics"]
                    .as_str()
                    .or_else(|| i["details"]["text"].as_str())
                    .unwrap_or("")
                    .to_owned(),
                file: rel.to_owned(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::read_issues;

    /// Found by the `operation_outcome` fuzz target: lines that were not JSON, or held no
    /// issue, and files that were not UTF-8 were dropped without a word.
    #[test]
    fn nothing_in_an_error_file_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("error")).unwrap();
        let rel = "error/1.OperationOutcome.ndjson";
        std::fs::write(
            dir.path().join(rel),
            "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\
             \"code\":\"processing\",\"diagnostics\":\"bad Patient/1\"}]}\n\
             \n{\"resourceType\":\"OperationOutcome\",\"issue\":[\n\
             {\"resourceType\":\"OperationOutcome\"}\n",
        )
        .unwrap();
        let issues = read_issues(dir.path(), rel);
        let texts: Vec<&str> = issues.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert_eq!(texts[0], "bad Patient/1");
        assert!(texts[1].starts_with("line 3 is not JSON"), "{texts:?}");
        assert!(texts[2].starts_with("line 4 holds no issue"), "{texts:?}");
        assert!(issues[1..].iter().all(|i| i.severity == "error"));

        std::fs::write(dir.path().join(rel), b"{\"issue\":[\xff]}\n").unwrap();
        let issues = read_issues(dir.path(), rel);
        assert_eq!(issues.len(), 1);
        assert!(issues[0].text.contains("not UTF-8"), "{:?}", issues[0]);
    }
}
