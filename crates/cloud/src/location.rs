//! Object-store URLs and the stores that serve them.
//!
//! | URL | store | credentials (standard chain of the cloud) |
//! |---|---|---|
//! | `s3://bucket/key` (`s3a://`) | Amazon S3 or compatible | `AWS_*` environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), then the shared profile files (`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`), then web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), ECS container credentials, EC2 instance metadata (IMDSv2) |
//! | `gs://bucket/key` | Google Cloud Storage | `GOOGLE_SERVICE_ACCOUNT`/`GOOGLE_APPLICATION_CREDENTIALS`, then application default credentials (`gcloud auth application-default login`), then the metadata server |
//! | `az://container/key` (`azure://`, `adl://`), `abfs[s]://container@account.dfs.core.windows.net/key` | Azure Blob Storage / ADLS Gen2 | `AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY` or `AZURE_STORAGE_SAS_KEY`, a service principal (`AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`/`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID`), managed identity |
//!
//! `file://` URLs are local paths ([`local_path`]). Stores are built once per bucket and
//! kept for the process. TLS certificates are always verified (`object_store`'s default;
//! nothing here turns it off); plain `http://` endpoints are refused unless the standard
//! `AWS_ALLOW_HTTP=true` / `AZURE_ALLOW_HTTP=true` says otherwise (an S3-compatible server on
//! localhost, as the tests use).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;

use crate::{Error, Result};

/// The URL schemes served.
const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "adl", "abfs", "abfss"];

/// Whether `text` is an object-store URL this crate serves.
pub fn is_url(text: &str) -> bool {
    text.split_once("://")
        .is_some_and(|(s, _)| SCHEMES.contains(&s.to_ascii_lowercase().as_str()))
}

/// The local path of a `file://` URL (`file:///data/x` → `/data/x`), or `None`.
pub fn local_path(text: &str) -> Option<PathBuf> {
    if !text.starts_with("file://") {
        return None;
    }
    url::Url::parse(text).ok()?.to_file_path().ok()
}

/// An object or prefix: the store serving its bucket and the key within it.
#[derive(Clone)]
pub struct Location {
    /// `scheme://bucket` (`scheme://container@account…` for abfs): the store's root URL.
    pub root: String,
    /// The key (or prefix) within the bucket, without a leading `/`.
    pub path: ObjectPath,
    /// The store.
    pub store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Location {
    // The store is left out: its Debug output includes its whole configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("root", &self.root)
            .field("path", &self.path.as_ref())
            .finish_non_exhaustive()
    }
}

impl Location {
    /// Parses `url` and finds (or builds) its store.
    ///
    /// # Errors
    /// Not a URL this crate serves, or the store cannot be configured (e.g. no region, no
    /// account name).
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: String| Error::Url {
            url: url.to_string(),
            reason,
        };
        if !is_url(url) {
            return Err(bad(format!(
                "not an object-store URL (schemes: {}, and file://)",
                SCHEMES.join("://, ")
            )));
        }
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("not a valid URL: {e}")))?;
        let scheme = parsed.scheme().to_ascii_lowercase();
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("the URL names no bucket or container".into()))?;
        let root = match parsed.username() {
            "" => format!("{scheme}://{host}"),
            user => format!("{scheme}://{user}@{host}"),
        };
        let path = ObjectPath::from_url_path(parsed.path())
            .map_err(|e| bad(format!("not a valid object key: {e}")))?;
        let store = store_for(&scheme, &root)?;
        Ok(Self { root, path, store })
    }

    /// The URL of an object of this store.
    pub fn url_of(&self, path: &ObjectPath) -> String {
        format!("{}/{}", self.root, path.as_ref())
    }

    /// This location's URL (no trailing `/`).
    pub fn url(&self) -> String {
        self.url_of(&self.path)
    }
}

fn stores() -> &'static Mutex<HashMap<String, Arc<dyn ObjectStore>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

fn store_for(scheme: &str, root: &str) -> Result<Arc<dyn ObjectStore>> {
    let mut cache = stores()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s) = cache.get(root) {
        return Ok(Arc::clone(s));
    }
    let err = |e: object_store::Error| Error::Url {
        url: root.to_string(),
        reason: format!(
            "cannot configure the store: {}",
            crate::redact::redact(&e.to_string())
        ),
    };
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" | "s3a" => {
            let b = aws_profile(AmazonS3Builder::from_env(), root)?;
            Arc::new(b.with_url(root).build().map_err(err)?)
        }
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(root)
                .build()
                .map_err(err)?,
        ),
        _ => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_url(root)
                .build()
                .map_err(err)?,
        ),
    };
    cache.insert(root.to_string(), Arc::clone(&store));
    Ok(store)
}

/// Secrets read from the AWS shared credentials file (for [`crate::redact`]).
pub(crate) fn profile_secrets() -> Vec<String> {
    PROFILE_SECRETS
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default()
}

static PROFILE_SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn home_file(var: &str, rel: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(rel)))
}

fn env_set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// The shared-profile step of the AWS chain, which `object_store` does not have: when the
/// environment holds no keys, the keys of profile `AWS_PROFILE` (or `default`) from
/// `~/.aws/credentials` (`AWS_SHARED_CREDENTIALS_FILE`), and its region from `~/.aws/config`
/// (`AWS_CONFIG_FILE`) when no `AWS_REGION` is set. Static keys only: SSO and
/// `credential_process` profiles are not read (use `aws configure export-credentials`).
/// A named `AWS_PROFILE` that neither file has is an error, as for the AWS CLI.
fn aws_profile(mut b: AmazonS3Builder, root: &str) -> Result<AmazonS3Builder> {
    let named = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let profile = named.clone().unwrap_or_else(|| "default".into());
    let creds_file = home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config_file = home_file("AWS_CONFIG_FILE", ".aws/config");
    let creds = creds_file
        .as_deref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| ini_section(&t, &profile));
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let config = config_file
        .as_deref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| ini_section(&t, &config_section));
    if named.is_some() && creds.is_none() && config.is_none() {
        return Err(Error::Url {
            url: root.to_string(),
            reason: format!(
                "AWS_PROFILE={profile}, but neither {} nor {} has that profile",
                creds_file.map_or("~/.aws/credentials".into(), |p| p.display().to_string()),
                config_file.map_or("~/.aws/config".into(), |p| p.display().to_string()),
            ),
        });
    }
    let from_env = env_set("AWS_ACCESS_KEY_ID") || env_set("AWS_WEB_IDENTITY_TOKEN_FILE");
    let get = |sec: &Option<Vec<(String, String)>>, key: &str| {
        sec.as_ref()
            .and_then(|s| s.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    };
    if !from_env {
        let id = get(&creds, "aws_access_key_id").or_else(|| get(&config, "aws_access_key_id"));
        let secret =
            get(&creds, "aws_secret_access_key").or_else(|| get(&config, "aws_secret_access_key"));
        if let (Some(id), Some(secret)) = (id, secret) {
            let token =
                get(&creds, "aws_session_token").or_else(|| get(&config, "aws_session_token"));
            if let Ok(mut s) = PROFILE_SECRETS.lock() {
                s.push(secret.clone());
                s.extend(token.clone());
            }
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = token {
                b = b.with_token(t);
            }
        }
    }
    if !env_set("AWS_REGION")
        && !env_set("AWS_DEFAULT_REGION")
        && let Some(r) = get(&config, "region")
    {
        b = b.with_region(r);
    }
    Ok(b)
}

/// The `key = value` pairs of `[section]` of an INI file (keys lower-cased), or `None`.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut found = None;
    let mut current: Option<Vec<(String, String)>> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if let Some(done) = current.take() {
                found = Some(done);
            }
            if name.trim() == section {
                current = Some(Vec::new());
            }
            continue;
        }
        if let (Some(sec), Some((k, v))) = (current.as_mut(), line.split_once('=')) {
            sec.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    current.or(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_file_paths() {
        assert!(is_url("s3://b/k"));
        assert!(is_url("abfss://c@a.dfs.core.windows.net/x"));
        assert!(!is_url("file:///x"));
        assert!(!is_url("https://example.org/x"));
        assert!(!is_url("/data/x"));
        assert_eq!(
            local_path("file:///data/x y"),
            Some(PathBuf::from("/data/x y"))
        );
        assert_eq!(local_path("/data/x"), None);
    }

    #[test]
    fn ini_sections() {
        let t = "[default]\naws_access_key_id = A\n[profile dev]\nregion=eu-west-1\n# c\n[other]\nx=1\n";
        assert_eq!(
            ini_section(t, "profile dev"),
            Some(vec![("region".into(), "eu-west-1".into())])
        );
        assert_eq!(
            ini_section(t, "default"),
            Some(vec![("aws_access_key_id".into(), "A".into())])
        );
        assert_eq!(ini_section(t, "missing"), None);
    }
}
