//! `name_or_path` → local files: a local folder, or a Hub id found in the Hugging Face cache.
//!
//! Follows `transformers.utils.hub.cached_files` and huggingface_hub's `try_to_load_from_cache`:
//! the cache layout is `models--{org}--{name}/refs/{revision}` (a commit hash, read verbatim),
//! `snapshots/{commit}/{path}` and `.no_exist/{commit}/{path}` markers for files known to be
//! absent. Downloading plugs in through the [`Downloader`] trait ([`HttpDownloader`] speaks the
//! Hub's HTTP protocol); without one, only what is already cached can be used.
//!
//! With a downloader, the revision is resolved to a commit once per checkpoint (transformers 5's
//! `resolve_revision`), so every file of one load comes from the same commit and files already
//! cached (or known missing) at that commit cost no request. When the Hub cannot be reached, the
//! commit cached in `refs/` is used with a warning.

pub mod download;
pub mod http;

pub use download::HttpDownloader;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Fetches a file of a Hub repo into the cache. Implemented by [`HttpDownloader`].
pub trait Downloader: Send + Sync {
    /// The commit `revision` (a branch, tag or commit) points to, recording it in
    /// `refs/{revision}` of the cache. [`Error::Connection`] means the Hub could not be reached
    /// (the caller then falls back on the cache).
    fn resolve_revision(&self, cache_dir: &Path, repo_id: &str, revision: &str) -> Result<String>;

    /// Download `filename` (already joined with any subfolder) of `repo_id` at `revision` into
    /// the cache folder `cache_dir`, laid out as huggingface_hub lays it out. Returns the
    /// snapshot path, or `Ok(None)` when the Hub says the file does not exist.
    fn download(
        &self,
        cache_dir: &Path,
        repo_id: &str,
        revision: &str,
        filename: &str,
    ) -> Result<Option<PathBuf>>;
}

/// Where and how to look for a checkpoint (transformers' `from_pretrained` hub kwargs).
#[derive(Clone, Default)]
pub struct HubOptions {
    /// Branch, tag or commit hash; `main` when `None`.
    pub revision: Option<String>,
    /// A folder inside the repo that holds the checkpoint.
    pub subfolder: Option<String>,
    /// Overrides `HF_HUB_CACHE`.
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network (also forced by `HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`).
    pub local_files_only: bool,
    /// Fetches missing files; `None` means cache only.
    pub downloader: Option<Arc<dyn Downloader>>,
}

impl HubOptions {
    /// Options that download what the cache lacks, from `HF_ENDPOINT` with the token from
    /// `HF_TOKEN` or `HF_HOME/token` (what transformers' `from_pretrained` does by default).
    /// `HubOptions::default()` only reads the cache.
    pub fn online() -> Self {
        HubOptions {
            downloader: Some(Arc::new(HttpDownloader::from_env())),
            ..HubOptions::default()
        }
    }
}

impl fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("revision", &self.revision)
            .field("subfolder", &self.subfolder)
            .field("cache_dir", &self.cache_dir)
            .field("local_files_only", &self.local_files_only)
            .field("downloader", &self.downloader.is_some())
            .finish()
    }
}

/// huggingface_hub's `_is_true`.
pub(crate) fn is_true(value: &str) -> bool {
    matches!(value.to_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

pub(crate) fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether offline mode is on: `HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE`, Python's `or` included
/// (a non-empty `HF_HUB_OFFLINE`, even "0", shadows `TRANSFORMERS_OFFLINE`).
pub fn offline_mode() -> bool {
    non_empty_env("HF_HUB_OFFLINE")
        .or_else(|| non_empty_env("TRANSFORMERS_OFFLINE"))
        .is_some_and(|v| is_true(&v))
}

/// The Hub cache folder: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, where
/// `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) =
        non_empty_env("HF_HUB_CACHE").or_else(|| non_empty_env("HUGGINGFACE_HUB_CACHE"))
    {
        return expand_home(&dir);
    }
    default_hf_home().join("hub")
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn default_hf_home() -> PathBuf {
    match non_empty_env("HF_HOME") {
        Some(home) => expand_home(&home),
        None => match non_empty_env("XDG_CACHE_HOME") {
            Some(xdg) => expand_home(&xdg).join("huggingface"),
            None => home_dir().join(".cache").join("huggingface"),
        },
    }
}

fn home_dir() -> PathBuf {
    non_empty_env("HOME")
        .or_else(|| non_empty_env("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home_dir().join(rest),
        None if path == "~" => home_dir(),
        None => PathBuf::from(path),
    }
}

/// Whether `name` has the shape of a Hub repo id (`name` or `org/name`), as huggingface_hub's
/// `validate_repo_id` checks it.
pub fn is_valid_repo_id(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 2 || name.is_empty() || name.len() > 96 {
        return false;
    }
    if name.contains("--") || name.contains("..") {
        return false;
    }
    parts.iter().all(|part| {
        !part.is_empty()
            && !part.starts_with(['-', '.'])
            && !part.ends_with(['-', '.'])
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    })
}

pub(crate) fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The folder of `repo_id` in the cache: `models--org--name`.
pub fn repo_folder_name(repo_id: &str) -> String {
    format!(
        "models--{}",
        repo_id.split('/').collect::<Vec<_>>().join("--")
    )
}

#[derive(Clone, Debug)]
enum Source {
    Local(PathBuf),
    Cache {
        repo_id: String,
        cache_dir: PathBuf,
        /// `None` when the revision is not in the cache (only possible with a downloader).
        commit: Option<String>,
    },
}

/// A resolved checkpoint: the place its files are read from.
#[derive(Clone)]
pub struct Checkpoint {
    name: String,
    source: Source,
    revision: String,
    subfolder: Option<String>,
    offline: bool,
    downloader: Option<Arc<dyn Downloader>>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("revision", &self.revision)
            .field("subfolder", &self.subfolder)
            .finish()
    }
}

impl Checkpoint {
    /// Resolves `name_or_path` to a local folder or a repo in the Hugging Face cache. With a
    /// downloader (and not offline), the revision is first resolved to a commit on the Hub (one
    /// request); files are then fetched on demand by [`Checkpoint::get`], pinned to that commit.
    /// When the Hub cannot be reached, the commit cached in `refs/` is used with a warning.
    pub fn resolve(name_or_path: &str, options: &HubOptions) -> Result<Self> {
        let revision = options
            .revision
            .clone()
            .unwrap_or_else(|| "main".to_string());
        let offline = options.local_files_only || offline_mode();
        let subfolder = options.subfolder.clone().filter(|s| !s.is_empty());
        let path = Path::new(name_or_path);
        if path.is_dir() {
            return Ok(Checkpoint {
                name: name_or_path.to_string(),
                source: Source::Local(path.to_path_buf()),
                revision,
                subfolder,
                offline,
                downloader: None,
            });
        }
        if !is_valid_repo_id(name_or_path) {
            return Err(Error::NotFound {
                name: name_or_path.to_string(),
            });
        }
        let cache_dir = options.cache_dir.clone().unwrap_or_else(default_cache_dir);
        let repo_dir = cache_dir.join(repo_folder_name(name_or_path));
        // A commit is known to the cache when it has a snapshot or `.no_exist` markers.
        let known = |commit: &str| {
            repo_dir.join("snapshots").join(commit).is_dir()
                || repo_dir.join(".no_exist").join(commit).is_dir()
        };
        let cached_commit = || {
            if is_commit_hash(&revision) {
                known(&revision).then(|| revision.clone())
            } else {
                // Read verbatim, as huggingface_hub does: a trailing newline breaks the lookup there too.
                std::fs::read_to_string(repo_dir.join("refs").join(&revision))
                    .ok()
                    .filter(|c| is_commit_hash(c) && known(c))
            }
        };
        let not_cached = |filename: &str| Error::NotCached {
            repo_id: name_or_path.to_string(),
            revision: revision.clone(),
            filename: filename.to_string(),
            cache: cache_dir.clone(),
        };
        let downloader = options.downloader.clone().filter(|_| !offline);
        let commit = match &downloader {
            None => {
                let commit = cached_commit();
                if commit.is_none() {
                    if offline {
                        return Err(not_cached("config.json"));
                    }
                    return Err(Error::NotFound {
                        name: name_or_path.to_string(),
                    });
                }
                commit
            }
            Some(downloader) => {
                match downloader.resolve_revision(&cache_dir, name_or_path, &revision) {
                    Ok(commit) if is_commit_hash(&commit) => Some(commit),
                    Ok(commit) => {
                        return Err(Error::download(
                            name_or_path,
                            format!(
                                "revision {revision} resolved to {commit:?}, not a commit hash"
                            ),
                        ))
                    }
                    Err(error @ Error::Connection { .. }) => match cached_commit() {
                        Some(commit) => {
                            log::warn!(
                                "Could not reach the Hub ({error}). Using cached commit hash \
                                 for '{name_or_path}'."
                            );
                            Some(commit)
                        }
                        None => {
                            log::warn!("Could not reach the Hub: {error}");
                            return Err(not_cached("config.json"));
                        }
                    },
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Checkpoint {
            name: name_or_path.to_string(),
            source: Source::Cache {
                repo_id: name_or_path.to_string(),
                cache_dir,
                commit,
            },
            revision,
            subfolder,
            offline,
            downloader,
        })
    }

    /// The name or path the caller gave.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a local folder (not a repo in the Hugging Face cache).
    pub fn is_local(&self) -> bool {
        matches!(self.source, Source::Local(_))
    }

    /// The revision asked for (`main` by default).
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The folder files are read from, when it is known (a local folder, or a cached snapshot).
    pub fn dir(&self) -> Option<PathBuf> {
        let base = match &self.source {
            Source::Local(path) => path.clone(),
            Source::Cache {
                repo_id,
                cache_dir,
                commit: Some(commit),
            } => cache_dir
                .join(repo_folder_name(repo_id))
                .join("snapshots")
                .join(commit),
            Source::Cache { commit: None, .. } => return None,
        };
        Some(match &self.subfolder {
            Some(sub) => base.join(sub),
            None => base,
        })
    }

    fn full_filename(&self, filename: &str) -> String {
        match &self.subfolder {
            Some(sub) => format!("{}/{}", sub.trim_end_matches('/'), filename),
            None => filename.to_string(),
        }
    }

    /// The path of `filename` if the checkpoint has it, `None` if it does not. A file neither
    /// in the cache nor marked missing in `.no_exist/` is downloaded when a downloader is set.
    pub fn get(&self, filename: &str) -> Result<Option<PathBuf>> {
        if filename.split('/').any(|part| part == "..") || filename.starts_with('/') {
            return Err(Error::input(format!(
                "file name {filename:?} escapes the checkpoint folder"
            )));
        }
        match &self.source {
            Source::Local(_) => {
                let path = self.dir().map(|d| d.join(filename));
                Ok(path.filter(|p| p.is_file()))
            }
            Source::Cache {
                repo_id,
                cache_dir,
                commit,
            } => {
                let full = self.full_filename(filename);
                if let Some(commit) = commit {
                    let repo_dir = cache_dir.join(repo_folder_name(repo_id));
                    if repo_dir.join(".no_exist").join(commit).join(&full).exists() {
                        return Ok(None);
                    }
                    let path = repo_dir.join("snapshots").join(commit).join(&full);
                    if path.is_file() {
                        return Ok(Some(path));
                    }
                }
                match &self.downloader {
                    Some(downloader) if !self.offline => {
                        // Pinned to the resolved commit: every file of one load from one commit.
                        let revision = commit.as_deref().unwrap_or(&self.revision);
                        match downloader.download(cache_dir, repo_id, revision, &full) {
                            Err(Error::Connection { url, reason }) => {
                                log::warn!("Could not reach {url}: {reason}");
                                Err(Error::NotCached {
                                    repo_id: repo_id.clone(),
                                    revision: self.revision.clone(),
                                    filename: full,
                                    cache: cache_dir.clone(),
                                })
                            }
                            other => other,
                        }
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// The path of `filename`, or transformers' "does not appear to have a file named" error.
    pub fn require(&self, filename: &str) -> Result<PathBuf> {
        self.get(filename)?.ok_or_else(|| Error::MissingFile {
            name: self.name.clone(),
            filename: filename.to_string(),
            revision: self.revision.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(is_valid_repo_id("distilbert/distilbert-base-uncased"));
        assert!(is_valid_repo_id("bert-base-uncased"));
        assert!(!is_valid_repo_id("a/b/c"));
        assert!(!is_valid_repo_id("../etc"));
        assert!(!is_valid_repo_id("a--b/c"));
        assert!(!is_valid_repo_id(""));
        assert_eq!(
            repo_folder_name("google-bert/bert-base-uncased"),
            "models--google-bert--bert-base-uncased"
        );
    }

    #[test]
    fn truthy_values() {
        for v in ["1", "on", "YES", "true", "True"] {
            assert!(is_true(v), "{v}");
        }
        for v in ["0", "", "off", "no", "2"] {
            assert!(!is_true(v), "{v}");
        }
    }
}
