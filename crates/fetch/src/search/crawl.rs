//! Following one query's pages: fetch, cut into entries, de-duplicate, commit, and where the
//! next page is (resolved against the page, admitted only on the FHIR server's origin); and
//! at the end, `manifest.json` and the summary.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use tokio::time::Instant;

use serde_json::json;
use url::Url;

use super::page;
use super::state::{Line, Output};
use super::{
    Crawl, Error, Item, NextOrigin, QueryStatus, Result, SearchEvent, SearchJob, SearchSummary,
    Settings,
};
use crate::RedactedUrl;

pub(crate) fn redacted(url: &str) -> String {
    url.parse::<Url>()
        .map_or_else(|_| url.to_owned(), |u| RedactedUrl::new(u).redacted())
}

/// Follow one query's pages until its end, a cap or a failure.
pub(crate) async fn crawl_query(
    crawl: &Crawl,
    out: &mut Output,
    qi: usize,
    s: &Settings,
    warnings: &mut Vec<String>,
) -> Result<()> {
    // Pages read in this run: a next link back to one of them would loop forever.
    let mut visited: HashSet<Url> = HashSet::new();
    loop {
        let q = out.job.queries[qi].clone();
        if q.status != QueryStatus::Running {
            return Ok(());
        }
        let Some(next) = q.next.clone() else {
            return end_query(crawl, out, qi, QueryStatus::Done);
        };
        let capped_pages = s.max_pages.is_some_and(|m| q.pages >= m);
        let capped_resources = s.max_resources.is_some_and(|m| q.matches >= m);
        if capped_pages || capped_resources {
            return end_query(crawl, out, qi, QueryStatus::Capped);
        }
        let url = Url::parse(&next)
            .map_err(|e| Error::State(format!("bad next URL in the state: {e}")))?;
        let url = match admit(url, &s.base, s.next_origin) {
            Ok(u) => u,
            Err(e) => {
                let reason = e.to_string();
                crawl.log.emit(
                    "page_error",
                    json!({"query": q.query, "url": redacted(&next), "message": reason}),
                );
                return end_query(crawl, out, qi, QueryStatus::Failed { reason });
            }
        };
        let body = match page::get(crawl, &url).await {
            Ok(b) => b,
            Err(
                e @ (Error::Page { .. }
                | Error::Fetch(crate::Error::Http { .. } | crate::Error::Download { .. })),
            ) => {
                let reason = crate::scrub(&e.to_string()).into_owned();
                crawl.log.emit(
                    "page_error",
                    json!({"query": q.query, "url": redacted(&next), "message": reason}),
                );
                return end_query(crawl, out, qi, QueryStatus::Failed { reason });
            }
            Err(e) => return Err(e),
        };
        let parsed = match page::parse(&body, &url, s.max_resources.map(|m| m - q.matches)) {
            Ok(p) => p,
            Err(e) => {
                let reason = e.to_string();
                crawl.log.emit(
                    "page_error",
                    json!({"query": q.query, "url": redacted(&next), "message": reason}),
                );
                return end_query(crawl, out, qi, QueryStatus::Failed { reason });
            }
        };
        for w in &parsed.warnings {
            let message = format!("{}: {w}", RedactedUrl::new(url.clone()));
            if !warnings.contains(&message) {
                crawl.observe(SearchEvent::Warning {
                    message: message.clone(),
                });
                warnings.push(message);
            }
        }
        // Where the query continues: the next link (checked), or, when the page was cut at
        // --max-resources, this page again (its written resources are then duplicates).
        let next_url = if parsed.cut {
            Some(url.clone())
        } else {
            match &parsed.next {
                None => None,
                Some(link) => match resolve_next(&url, link).and_then(|u| {
                    if u == url || visited.contains(&u) {
                        Err(Error::Bundle {
                            url: RedactedUrl::new(url.clone()),
                            reason: format!(
                                "its next link leads back to a page already read ({}): the \
                                 server's paging loops",
                                RedactedUrl::new(u)
                            ),
                        })
                    } else {
                        Ok(u)
                    }
                }) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        let reason = e.to_string();
                        crawl.log.emit(
                            "page_error",
                            json!({"query": q.query, "url": redacted(&next), "message": reason}),
                        );
                        return end_query(crawl, out, qi, QueryStatus::Failed { reason });
                    }
                },
            }
        };
        let mut lines = Vec::new();
        let (mut matches, mut included, mut outcomes, mut duplicates) = (0u64, 0u64, 0u64, 0u64);
        for e in parsed.entries {
            if e.outcome {
                outcomes += 1;
                lines.push(Line {
                    item: Item::Error,
                    resource_type: "OperationOutcome".into(),
                    text: e.text,
                });
                continue;
            }
            if let Some(id) = &e.id
                && !out.first_time(&e.resource_type, id)
            {
                duplicates += 1;
                continue;
            }
            if e.include {
                included += 1;
            } else {
                matches += 1;
            }
            lines.push(Line {
                item: Item::Output,
                resource_type: e.resource_type,
                text: e.text,
            });
        }
        visited.insert(url.clone());
        let page_no = q.pages + 1;
        let next_text = next_url.as_ref().map(ToString::to_string);
        out.commit(&lines, |job| {
            let qs = &mut job.queries[qi];
            qs.pages = page_no;
            qs.matches += matches;
            qs.included += included;
            qs.outcomes += outcomes;
            qs.duplicates += duplicates;
            qs.next = next_text;
        })?;
        crawl.log.emit(
            "page_complete",
            json!({"query": q.query, "page": page_no, "url": redacted(&next),
                   "entries": parsed.total_entries, "match": matches, "include": included,
                   "outcome": outcomes, "duplicates": duplicates, "bytes": body.len(),
                   "next": next_url.as_ref().map(|u| RedactedUrl::new(u.clone()).redacted())}),
        );
        crawl.observe(SearchEvent::Page {
            query: q.query.clone(),
            page: page_no,
            matches,
            included,
            duplicates,
        });
    }
}

fn end_query(crawl: &Crawl, out: &mut Output, qi: usize, status: QueryStatus) -> Result<()> {
    out.job.queries[qi].status = status.clone();
    out.save()?;
    let q = &out.job.queries[qi];
    let event = match &status {
        QueryStatus::Done | QueryStatus::Running => "query_complete",
        QueryStatus::Capped => "query_capped",
        QueryStatus::Failed { .. } => "query_failed",
    };
    crawl.log.emit(
        event,
        json!({"query": q.query, "pages": q.pages, "match": q.matches, "include": q.included,
               "outcome": q.outcomes, "duplicates": q.duplicates,
               "next": q.next.as_deref().map(redacted)}),
    );
    crawl.observe(SearchEvent::QueryEnded {
        query: q.query.clone(),
        status,
    });
    Ok(())
}

/// A next link resolved against the page's URL (RFC 3986: `Observation?...` and `?...` are
/// relative to the page, not to the FHIR base).
fn resolve_next(page: &Url, link: &str) -> Result<Url> {
    page.join(link).map_err(|e| Error::Bundle {
        url: RedactedUrl::new(page.clone()),
        reason: format!("next link {link:?} is not a URL: {e}"),
    })
}

/// The URL a page is fetched from. The token goes only to the FHIR server: a URL of another
/// origin (scheme, host, port) is refused, or with [`NextOrigin::Rewrite`] sent to the FHIR
/// server's origin (path and query kept). Checked before each request, so a refused link
/// stays the query's next page, and `--resume --next-origin rewrite` continues from it.
fn admit(mut next: Url, base: &Url, policy: NextOrigin) -> Result<Url> {
    if next.origin() == base.origin() {
        return Ok(next);
    }
    if policy == NextOrigin::Rewrite {
        let fixed = next.set_scheme(base.scheme()).is_ok()
            && next.set_host(base.host_str()).is_ok()
            && next.set_port(base.port()).is_ok();
        if fixed && next.origin() == base.origin() {
            return Ok(next);
        }
    }
    Err(Error::OtherOrigin {
        next: RedactedUrl::new(next),
    })
}

/// `DIR/manifest.json` in the Bulk Data manifest's shape: `transactionTime` (the crawl's
/// start, client clock), `request` (the first query's URL), `output` and `error` entries
/// whose `url` is the file's path relative to DIR (there is no server file to point at).
pub(crate) fn write_manifest(dir: &Path, job: &SearchJob) -> Result<()> {
    let entries = |item: Item| -> Vec<serde_json::Value> {
        job.files
            .iter()
            .filter(|f| f.item == item)
            .map(|f| json!({"type": f.resource_type, "url": f.path, "count": f.lines}))
            .collect()
    };
    let manifest = json!({
        "transactionTime": job.started,
        "request": job.queries.first().map(|q| redacted(&q.first_url)),
        "requiresAccessToken": false,
        "output": entries(Item::Output),
        "error": entries(Item::Error),
        "extension": {"flatfhir-search": {"queries": job.queries.iter().map(|q| json!({
            "query": q.query, "url": redacted(&q.first_url), "pages": q.pages,
            "state": match &q.status { QueryStatus::Done => "done", QueryStatus::Capped => "capped",
                                       QueryStatus::Failed { .. } => "failed", QueryStatus::Running => "running" }
        })).collect::<Vec<_>>()}}
    });
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::State(e.to_string()))?;
    crate::durable::write_atomic(&dir.join("manifest.json"), &text, true)?;
    Ok(())
}

pub(crate) fn summarize(
    dir: &Path,
    job: &SearchJob,
    export_offered: Option<bool>,
    warnings: Vec<String>,
    started: Instant,
) -> SearchSummary {
    let mut types = BTreeMap::new();
    let mut outputs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut issues = Vec::new();
    for f in &job.files {
        match f.item {
            Item::Output => {
                *types.entry(f.resource_type.clone()).or_default() += f.lines;
                outputs
                    .entry(f.resource_type.clone())
                    .or_default()
                    .push(dir.join(&f.path));
            }
            Item::Error => issues.extend(crate::summary::read_issues(dir, &f.path)),
        }
    }
    SearchSummary {
        export_offered,
        pages: job.queries.iter().map(|q| q.pages).sum(),
        files: job.files.len(),
        resources: types.values().sum(),
        types,
        included: job.queries.iter().map(|q| q.included).sum(),
        duplicates: job.queries.iter().map(|q| q.duplicates).sum(),
        outputs,
        issues,
        warnings,
        failed: job
            .queries
            .iter()
            .filter_map(|q| match &q.status {
                QueryStatus::Failed { reason } => Some((q.query.clone(), reason.clone())),
                _ => None,
            })
            .collect(),
        capped: job.queries.iter().any(|q| q.status == QueryStatus::Capped),
        // Redacted as everywhere outside the state file (which needs them whole for --resume).
        queries: job
            .queries
            .iter()
            .map(|q| {
                let mut q = q.clone();
                q.first_url = redacted(&q.first_url);
                q.next = q.next.as_deref().map(redacted);
                q
            })
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_resolve_against_the_page() {
        let base: Url = "https://h.example/fhir".parse().unwrap();
        let page: Url = "https://h.example/fhir/Observation?patient=1"
            .parse()
            .unwrap();
        let r = |l| {
            resolve_next(&page, l)
                .and_then(|u| admit(u, &base, NextOrigin::Refuse))
                .map(|u| u.to_string())
        };
        assert_eq!(
            r("Observation?_offset=5").unwrap(),
            "https://h.example/fhir/Observation?_offset=5"
        );
        assert_eq!(
            r("?_offset=5").unwrap(),
            "https://h.example/fhir/Observation?_offset=5"
        );
        assert!(matches!(
            r("https://evil.example/fhir/Observation?x"),
            Err(Error::OtherOrigin { .. })
        ));
        // A downgrade to http is another origin too.
        assert!(r("http://h.example/fhir/Observation?x").is_err());
        let other: Url = "http://internal:8080/fhir/Observation?x=1".parse().unwrap();
        let fixed = admit(other, &base, NextOrigin::Rewrite).unwrap();
        assert_eq!(fixed.as_str(), "https://h.example/fhir/Observation?x=1");
    }
}
