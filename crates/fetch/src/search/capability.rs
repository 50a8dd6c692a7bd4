//! The server's CapabilityStatement (`GET [base]/metadata`): which resource types can be
//! searched with which parameters and `_include`s, and whether `$export` is offered (then
//! `fetch` is the better tool). A query is checked against it before anything is crawled.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::query::Query;

/// Result and control parameters: not search parameters, never listed in a
/// CapabilityStatement's `searchParam`, and not checked (`_include`/`_revinclude` values are
/// checked against `searchInclude`/`searchRevInclude`).
const CONTROL: &[&str] = &[
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_elements",
    "_summary",
    "_total",
    "_format",
    "_pretty",
    "_contained",
    "_containedType",
    "_type",
    // Every server supports `_id`; many do not list it.
    "_id",
];

/// What a type offers.
#[derive(Debug, Clone, Default)]
struct TypeCaps {
    search: bool,
    params: BTreeSet<String>,
    includes: BTreeSet<String>,
    revincludes: BTreeSet<String>,
}

/// What the server says it can do.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Capability {
    /// Whether a Bulk Data `$export` operation is listed (system, Patient or Group level).
    pub export: bool,
    types: BTreeMap<String, TypeCaps>,
    system_params: BTreeSet<String>,
}

fn names(list: &Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            if key.is_empty() {
                p.as_str()
            } else {
                p[key].as_str()
            }
        })
        .map(str::to_owned)
        .collect()
}

fn is_export(op: &Value) -> bool {
    let name = op["name"].as_str().unwrap_or("");
    let def = op["definition"].as_str().unwrap_or("");
    name.trim_start_matches('$') == "export"
        || def.ends_with("/OperationDefinition/export")
        || def.contains("bulkdata")
}

impl Capability {
    /// Read a CapabilityStatement (its `rest` entries of mode `server`).
    #[must_use]
    pub fn parse(v: &Value) -> Self {
        let mut cap = Self::default();
        for rest in v["rest"].as_array().into_iter().flatten() {
            if rest["mode"].as_str().is_some_and(|m| m != "server") {
                continue;
            }
            cap.export |= rest["operation"]
                .as_array()
                .into_iter()
                .flatten()
                .any(is_export);
            cap.system_params
                .extend(names(&rest["searchParam"], "name"));
            for r in rest["resource"].as_array().into_iter().flatten() {
                let Some(t) = r["type"].as_str() else {
                    continue;
                };
                cap.export |= r["operation"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(is_export);
                let caps = cap.types.entry(t.to_owned()).or_default();
                caps.search |= names(&r["interaction"], "code").contains("search-type");
                caps.params.extend(names(&r["searchParam"], "name"));
                caps.includes.extend(names(&r["searchInclude"], ""));
                caps.revincludes.extend(names(&r["searchRevInclude"], ""));
            }
        }
        cap
    }

    /// What the server does not support of `q`, one reason each; empty when it supports it all.
    #[must_use]
    pub fn problems(&self, q: &Query) -> Vec<String> {
        let mut out = Vec::new();
        for t in q.types() {
            let Some(caps) = self.types.get(&t) else {
                out.push(format!("the server lists no resource type {t}"));
                continue;
            };
            if !caps.search {
                out.push(format!(
                    "the server does not offer search on {t} (no search-type interaction)"
                ));
                continue;
            }
            for (k, v) in &q.params {
                // `code:text` → `code`; `subject.name` (chained) → `subject`.
                let name = k.split([':', '.']).next().unwrap_or(k);
                let listed = |set: &BTreeSet<String>, v: &str| set.contains(v) || set.contains("*");
                match name {
                    "_include" => {
                        if !listed(&caps.includes, v) && v.split(':').next() == Some(t.as_str()) {
                            out.push(format!("_include={v}: not in {t}'s searchInclude"));
                        }
                    }
                    "_revinclude" => {
                        if !listed(&caps.revincludes, v) {
                            out.push(format!("_revinclude={v}: not in {t}'s searchRevInclude"));
                        }
                    }
                    n if CONTROL.contains(&n) => {}
                    n => {
                        if !caps.params.contains(n) && !self.system_params.contains(n) {
                            out.push(format!("{t} has no search parameter {n}"));
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_params_includes_and_export() {
        let cs = serde_json::json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
            "resource": [{"type": "Observation", "interaction": [{"code": "search-type"}],
                          "searchParam": [{"name": "patient"}], "searchInclude": ["Observation:patient"]},
                         {"type": "Patient", "interaction": [{"code": "read"}]}],
            "operation": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]}]});
        let cap = Capability::parse(&cs);
        assert!(cap.export);
        let base: url::Url = "http://h/fhir".parse().unwrap();
        let q = |s| Query::parse(s, &base).unwrap();
        assert!(
            cap.problems(&q(
                "Observation?patient=1&_count=5&_id=x&_include=Observation:patient"
            ))
            .is_empty()
        );
        assert_eq!(
            cap.problems(&q("Observation?code=1")),
            ["Observation has no search parameter code"]
        );
        assert_eq!(
            cap.problems(&q("Observation?_include=Observation:performer"))
                .len(),
            1
        );
        assert_eq!(cap.problems(&q("Patient")).len(), 1);
        assert_eq!(
            cap.problems(&q("Condition")),
            ["the server lists no resource type Condition"]
        );
        assert!(!Capability::parse(&serde_json::json!({"rest": []})).export);
    }
}
