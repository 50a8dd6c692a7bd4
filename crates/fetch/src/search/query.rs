//! Search queries as the user writes them (`Observation?patient=123&_include=Observation:subject`,
//! `?_type=Patient,Observation`, or a whole URL under the FHIR base), parsed into the resource
//! types and parameters they search, and the first page's URL built from them.

use url::Url;

/// One search query.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Query {
    /// The query as given.
    pub text: String,
    /// The resource type of a type-level search; `None` for a system-level one (`?_type=`).
    pub resource_type: Option<String>,
    /// Parameters in order, decoded (`application/x-www-form-urlencoded`).
    pub params: Vec<(String, String)>,
}

/// Whether `t` looks like a FHIR resource type name (`Observation`, `ExplanationOfBenefit`).
fn is_type_name(t: &str) -> bool {
    let mut c = t.chars();
    c.next().is_some_and(|f| f.is_ascii_uppercase()) && c.all(|c| c.is_ascii_alphanumeric())
}

impl Query {
    /// Parse a query, relative to the FHIR base `base` (`Type?params`, `/Type?params`,
    /// `?_type=A,B&params`) or a whole URL under `base`.
    ///
    /// # Errors
    /// A text naming no resource type (and no `_type`), a malformed type name, an absolute
    /// URL outside `base`, or an `$operation`/instance path.
    pub fn parse(text: &str, base: &Url) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty query".into());
        }
        let rel: String = if t.contains("://") {
            let u = Url::parse(t).map_err(|e| format!("not a URL: {e}"))?;
            let b = base.as_str().trim_end_matches('/');
            let s = u.as_str();
            match s.strip_prefix(b) {
                Some(rest) if rest.is_empty() || rest.starts_with(['/', '?']) => rest.to_owned(),
                _ => {
                    return Err(format!(
                        "the URL is not under the FHIR base {} (the token goes only to that server)",
                        crate::RedactedUrl::new(base.clone())
                    ));
                }
            }
        } else {
            t.to_owned()
        };
        let rel = rel.trim_start_matches('/');
        let (path, query) = rel.split_once('?').unwrap_or((rel, ""));
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .filter(|(k, _)| !k.is_empty())
            .collect();
        let resource_type = if path.is_empty() {
            let types: Vec<&str> = params
                .iter()
                .filter(|(k, _)| k == "_type")
                .flat_map(|(_, v)| v.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if types.is_empty() {
                return Err(
                    "names no resource type: write Type?params (e.g. Observation?patient=123) \
                     or ?_type=A,B&params"
                        .into(),
                );
            }
            if let Some(bad) = types.iter().find(|t| !is_type_name(t)) {
                return Err(format!("_type: {bad:?} is not a resource type name"));
            }
            None
        } else {
            if path.contains('/') || path.starts_with('$') {
                return Err(format!(
                    "{path:?} is not a type-level search (Type?params); instance reads and \
                     operations are not crawled"
                ));
            }
            if !is_type_name(path) {
                return Err(format!("{path:?} is not a resource type name"));
            }
            Some(path.to_owned())
        };
        Ok(Self {
            text: t.to_owned(),
            resource_type,
            params,
        })
    }

    /// The resource types the query searches.
    #[must_use]
    pub fn types(&self) -> Vec<String> {
        match &self.resource_type {
            Some(t) => vec![t.clone()],
            None => self
                .params
                .iter()
                .filter(|(k, _)| k == "_type")
                .flat_map(|(_, v)| v.split(','))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    /// The first page's URL: `base/Type?params`, with `_count=count` added when the query has
    /// no `_count` of its own.
    #[must_use]
    pub fn url(&self, base: &Url, count: Option<u32>) -> Url {
        let mut u = base.clone();
        let mut path = u.path().trim_end_matches('/').to_owned();
        if let Some(t) = &self.resource_type {
            path.push('/');
            path.push_str(t);
        }
        u.set_path(&path);
        let mut params = self.params.clone();
        if let Some(c) = count
            && !params.iter().any(|(k, _)| k == "_count")
        {
            params.push(("_count".into(), c.to_string()));
        }
        if params.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(&params);
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        "https://h.example/fhir".parse().unwrap()
    }

    #[test]
    fn forms() {
        let q = Query::parse(
            "Observation?patient=123&_include=Observation:subject",
            &base(),
        )
        .unwrap();
        assert_eq!(q.resource_type.as_deref(), Some("Observation"));
        assert_eq!(q.params.len(), 2);
        assert_eq!(
            q.url(&base(), Some(200)).as_str(),
            "https://h.example/fhir/Observation?patient=123&_include=Observation%3Asubject&_count=200"
        );
        let q = Query::parse("/Patient", &base()).unwrap();
        assert_eq!(
            q.url(&base(), None).as_str(),
            "https://h.example/fhir/Patient"
        );
        let q = Query::parse("?_type=Patient,Condition&_count=5", &base()).unwrap();
        assert_eq!(q.types(), ["Patient", "Condition"]);
        assert_eq!(
            q.url(&base(), Some(9)).as_str(),
            "https://h.example/fhir?_type=Patient%2CCondition&_count=5"
        );
        let q = Query::parse("https://h.example/fhir/Condition?code=x", &base()).unwrap();
        assert_eq!(q.resource_type.as_deref(), Some("Condition"));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "?code=1",
            "observation?x=1",
            "Patient/123",
            "$export",
            "https://other.example/fhir/Patient",
            "https://h.example/fhirx/Patient",
            "?_type=Patient,bad-name",
        ] {
            assert!(Query::parse(bad, &base()).is_err(), "{bad}");
        }
    }
}
