//! The completion manifest, read leniently: every field optional, `error` and STU4 `outcome`
//! merged, a missing `requiresAccessToken` meaning true, `link[relation=next]` paging; and
//! `manifest.json`, the pages of a paged manifest merged into one.

use serde_json::Value;
use url::Url;

use crate::durable;
use crate::error::{Error, Result};

/// Which list of the manifest an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemType {
    /// `output`.
    Output,
    /// `error` (STU4: `outcome`): OperationOutcome files.
    Error,
    /// `deleted`: Bundles of deleted resources.
    Deleted,
}

impl ItemType {
    /// The name used in `log.ndjson` (`itemType`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ItemType::Output => "output",
            ItemType::Error => "error",
            ItemType::Deleted => "deleted",
        }
    }
}

/// One file of a manifest.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) item: ItemType,
    /// Position within its list, to match fresh links after a re-poll.
    pub(crate) index: usize,
    pub(crate) resource_type: Option<String>,
    pub(crate) url: Url,
    pub(crate) count: Option<u64>,
}

/// A parsed manifest page.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub(crate) transaction_time: Option<String>,
    pub(crate) requires_access_token: bool,
    pub(crate) entries: Vec<Entry>,
    pub(crate) next: Option<Url>,
}

impl Manifest {
    /// Read a manifest page; `base` resolves relative file URLs.
    pub(crate) fn parse(v: &Value, base: &Url) -> Result<Self, String> {
        if !v.is_object() {
            return Err("not a JSON object".into());
        }
        let mut entries = Vec::new();
        let lists = [
            ("output", ItemType::Output),
            ("error", ItemType::Error),
            ("outcome", ItemType::Error),
            ("deleted", ItemType::Deleted),
        ];
        for (key, item) in lists {
            let start = entries.iter().filter(|e: &&Entry| e.item == item).count();
            for (i, e) in v[key].as_array().into_iter().flatten().enumerate() {
                let url = e["url"]
                    .as_str()
                    .ok_or_else(|| format!("{key}[{i}] has no url"))?;
                let url = base
                    .join(url)
                    .map_err(|err| format!("{key}[{i}].url: {err}"))?;
                entries.push(Entry {
                    item,
                    index: start + i,
                    resource_type: e["type"].as_str().map(str::to_owned),
                    url,
                    count: e["count"].as_u64(),
                });
            }
        }
        let next = v["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(|u| base.join(u).map_err(|e| format!("link next: {e}")))
            .transpose()?;
        Ok(Self {
            transaction_time: v["transactionTime"].as_str().map(str::to_owned),
            // Bulk Data IG: when requiresAccessToken is absent the client must assume true.
            requires_access_token: v["requiresAccessToken"].as_bool().unwrap_or(true),
            entries,
            next,
        })
    }
}

/// Adds a manifest page to the merged manifest: the first page as received (without its
/// `link`), then each later page's `output`, `deleted` and `error` entries appended, so
/// `manifest.json` lists every file of a paged export.
pub(crate) fn merge_manifest_page(
    merged: &mut Option<serde_json::Value>,
    page: &serde_json::Value,
) {
    match merged {
        None => {
            let mut first = page.clone();
            if let Some(o) = first.as_object_mut() {
                o.remove("link");
            }
            *merged = Some(first);
        }
        Some(all) => {
            let Some(all) = all.as_object_mut() else {
                return;
            };
            for key in ["output", "deleted", "error"] {
                let Some(more) = page.get(key).and_then(|v| v.as_array()) else {
                    continue;
                };
                let list = all
                    .entry(key)
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let Some(list) = list.as_array_mut() {
                    list.extend(more.iter().cloned());
                }
            }
        }
    }
}

/// Writes `DIR/manifest.json` atomically and durably.
pub(crate) fn write_manifest(dir: &std::path::Path, manifest: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Job(e.to_string()))?;
    durable::write_atomic(&dir.join("manifest.json"), &text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient() {
        let base = Url::parse("https://x.example/fhir/status/1").unwrap();
        let v = serde_json::json!({
            "outcome": [{"url": "/e/1"}], "deleted": [], "link": [{"relation": "next", "url": "?page=2"}]
        });
        let m = Manifest::parse(&v, &base).unwrap();
        assert!(m.requires_access_token);
        assert_eq!(m.entries.len(), 1);
        assert_eq!(m.entries[0].item, ItemType::Error);
        assert_eq!(m.entries[0].url.as_str(), "https://x.example/e/1");
        assert_eq!(
            m.next.unwrap().as_str(),
            "https://x.example/fhir/status/1?page=2"
        );
    }
}
