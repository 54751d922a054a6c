//! [`HttpDownloader`]: huggingface_hub's `hf_hub_download` and `snapshot_download` over HTTP,
//! writing the cache exactly as Python writes it.
//!
//! One file: `HEAD {endpoint}/{repo}/resolve/{revision}/{file}` gives the commit
//! (`X-Repo-Commit`), the blob id (`X-Linked-Etag` or `ETag`), the size (`X-Linked-Size` or
//! `Content-Length`) and, for large files, the CDN `Location`. The blob is fetched under
//! `.locks/models--org--name/{etag}.lock` into `blobs/{etag}.incomplete` (resumed with `Range`
//! after an interruption), checked against the etag when it is a sha256, renamed to
//! `blobs/{etag}` and linked from `snapshots/{commit}/{file}` by a relative symlink (a copy where
//! symlinks are unavailable). `refs/{revision}` records branch and tag names; a file the Hub
//! says is missing leaves an empty `.no_exist/{commit}/{file}` marker.

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::http::{classify, origin, quote, HttpClient, HubFailure, Response, MAX_JSON_BYTES};
use super::{
    default_hf_home, is_commit_hash, is_true, is_valid_repo_id, non_empty_env, repo_folder_name,
    Downloader,
};
use crate::error::{Error, Result};

/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 1024 * 1024;

/// How many times one download is resumed after the connection drops.
const MAX_RESUMES: usize = 5;

/// Downloads from a Hugging Face Hub endpoint (`HF_ENDPOINT`, default `https://huggingface.co`)
/// into the cache. Plug it in through [`super::HubOptions::downloader`].
#[derive(Clone, Debug)]
pub struct HttpDownloader {
    endpoint: String,
    client: HttpClient,
    progress: bool,
}

/// The metadata `HEAD` returns for one file (huggingface_hub's `HfFileMetadata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMetadata {
    /// `X-Repo-Commit`.
    pub commit: String,
    /// The normalised `X-Linked-Etag` or `ETag`.
    pub etag: String,
    /// `X-Linked-Size` or `Content-Length`, when given.
    pub size: Option<u64>,
    /// Where to `GET` the content (the CDN for large files).
    pub location: String,
}

/// huggingface_hub's `_normalize_etag`: `etag.lstrip("W/").strip('"')`.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim_start_matches(['W', '/'])
        .trim_matches('"')
        .to_string()
}

/// Whether `etag` can name a blob file: a plain name, no separators, no `..`.
fn safe_etag(etag: &str) -> bool {
    !etag.is_empty()
        && etag.len() <= 256
        && !etag.starts_with('.')
        && etag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `filename` (a path inside a repo) stays inside the snapshot folder.
pub fn safe_repo_path(filename: &str) -> bool {
    !filename.is_empty()
        && filename.len() <= 4096
        && !filename.starts_with('/')
        && !filename.contains('\\')
        && !filename.contains('\0')
        && filename
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Whether a revision name can be stored as `refs/{revision}` (it may contain `/`).
fn safe_revision(revision: &str) -> bool {
    safe_repo_path(revision) && revision.len() <= 256
}

fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit())
}

/// The token huggingface_hub would send: `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else
/// `HF_HOME/token`; surrounding whitespace removed, empty means none.
pub fn token_from_env() -> Option<String> {
    if let Some(token) = non_empty_env("HF_TOKEN") {
        let token = token.trim().to_string();
        return (!token.is_empty()).then_some(token);
    }
    let path = non_empty_env("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_hf_home().join("token"));
    let token = fs::read_to_string(path).ok()?;
    let token = token.trim().to_string();
    (!token.is_empty()).then_some(token)
}

/// `HF_ENDPOINT` (trailing `/` removed), else `https://huggingface.co`.
pub fn endpoint_from_env() -> String {
    non_empty_env("HF_ENDPOINT")
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| "https://huggingface.co".to_string())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Creates the parent folder of `path`.
fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(io(parent)),
        None => Ok(()),
    }
}

/// Writes `refs/{revision}` = `commit` when `revision` is a name, not the commit itself.
fn write_ref(storage: &Path, revision: &str, commit: &str) -> Result<()> {
    if revision == commit || !safe_revision(revision) {
        return Ok(());
    }
    let path = storage.join("refs").join(revision);
    if fs::read_to_string(&path).ok().as_deref() == Some(commit) {
        return Ok(());
    }
    create_parent(&path)?;
    fs::write(&path, commit).map_err(io(&path))
}

/// `snapshots/{commit}/{file}` → `../../blobs/{etag}` (one more `..` per folder in `file`);
/// a copy where symlinks are not available.
fn link_snapshot(blob: &Path, pointer: &Path, filename: &str) -> Result<()> {
    create_parent(pointer)?;
    let depth = filename.matches('/').count();
    let mut target = PathBuf::new();
    for _ in 0..depth + 2 {
        target.push("..");
    }
    target.push("blobs");
    if let Some(name) = blob.file_name() {
        target.push(name);
    }
    if pointer.symlink_metadata().is_ok() {
        fs::remove_file(pointer).map_err(io(pointer))?;
    }
    if symlink(&target, pointer).is_ok() {
        return Ok(());
    }
    fs::copy(blob, pointer).map(|_| ()).map_err(io(pointer))
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(not(any(unix, windows)))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("symlinks are not supported"))
}

/// huggingface_hub's `CACHEDIR_TAG_CONTENT` (the Cache Directory Tagging Standard).
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by huggingface_hub.\n\
# For information about cache directory tags, see:\n\
#\thttps://bford.info/cachedir/\n";

/// Writes `CACHEDIR.TAG` in the cache folder if missing, so backup tools skip it (best effort,
/// as huggingface_hub does).
fn create_cachedir_tag(cache_dir: &Path) {
    let tag = cache_dir.join("CACHEDIR.TAG");
    if !tag.exists() {
        let _ = fs::write(tag, CACHEDIR_TAG);
    }
}

/// An exclusive lock on `.locks/…/{etag}.lock`, released when dropped (or when the process dies).
struct BlobLock {
    file: File,
}

impl BlobLock {
    fn acquire(path: &Path) -> Result<BlobLock> {
        create_parent(path)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        file.lock().map_err(io(path))?;
        Ok(BlobLock { file })
    }
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The sha256 of the bytes written so far to an `.incomplete` file (when the etag is a sha256),
/// kept while streaming so a large file is not read twice.
struct Hashing {
    hasher: Option<Sha256>,
    bytes: u64,
}

impl Hashing {
    fn new(enabled: bool) -> Hashing {
        Hashing {
            hasher: enabled.then(Sha256::new),
            bytes: 0,
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        if let Some(h) = &mut self.hasher {
            h.update(chunk);
        }
        self.bytes += chunk.len() as u64;
    }

    fn reset(&mut self) {
        *self = Hashing::new(self.hasher.is_some());
    }

    /// Makes the state cover the first `have` bytes of `file` (after a resume or a restart).
    fn sync(&mut self, file: &mut File, path: &Path, have: u64) -> Result<()> {
        if self.bytes == have {
            return Ok(());
        }
        self.reset();
        if self.hasher.is_none() {
            self.bytes = have;
            return Ok(());
        }
        file.seek(SeekFrom::Start(0)).map_err(io(path))?;
        let mut buffer = vec![0u8; 64 * 1024];
        let mut reader = (&mut *file).take(have);
        loop {
            let n = reader.read(&mut buffer).map_err(io(path))?;
            if n == 0 {
                break;
            }
            self.update(buffer.get(..n).unwrap_or_default());
        }
        file.seek(SeekFrom::End(0)).map_err(io(path))?;
        if self.bytes != have {
            return Err(Error::io(
                path,
                std::io::Error::other("the file changed while it was read"),
            ));
        }
        Ok(())
    }

    fn hex(self) -> Option<String> {
        self.hasher
            .map(|h| h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// An `.incomplete` file being written, with the hash of what it holds.
struct Partial<'a> {
    file: File,
    path: &'a Path,
    hashing: Hashing,
}

/// A progress bar on stderr, or nothing.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(enabled: bool, filename: &str, total: Option<u64>, done: u64) -> Progress {
        let Some(total) = total.filter(|t| enabled && *t >= PROGRESS_MIN_BYTES) else {
            return Progress(None);
        };
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(filename.to_string());
        bar.set_position(done);
        Progress(Some(bar))
    }

    fn set(&self, position: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(position);
        }
    }

    /// Replaces the bar by one line: the file, its size and the mean speed.
    fn finish(&self, filename: &str) {
        if let Some(bar) = &self.0 {
            let elapsed = bar.elapsed().as_secs_f64().max(1e-3);
            let bytes = bar.position();
            bar.finish_and_clear();
            eprintln!(
                "downloaded {filename} ({}, {}/s)",
                indicatif::BinaryBytes(bytes),
                indicatif::BinaryBytes((bytes as f64 / elapsed) as u64)
            );
        }
    }
}

impl HttpDownloader {
    /// A downloader for `endpoint` (`https://huggingface.co` or a mirror), sending `token`.
    /// Progress bars follow `HF_HUB_DISABLE_PROGRESS_BARS` and whether stderr is a terminal.
    pub fn new(endpoint: impl Into<String>, token: Option<String>) -> Self {
        let progress = std::io::stderr().is_terminal()
            && !non_empty_env("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| is_true(&v));
        HttpDownloader {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            client: HttpClient::new(token),
            progress,
        }
    }

    /// `HF_ENDPOINT` and the token from `HF_TOKEN` or `HF_HOME/token`.
    pub fn from_env() -> Self {
        Self::new(endpoint_from_env(), token_from_env())
    }

    /// Sets the connection timeout and the timeout of each read (10 s by default, or
    /// `HF_HUB_ETAG_TIMEOUT` / `HF_HUB_DOWNLOAD_TIMEOUT`).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.client = HttpClient::with_timeouts(self.client.token().cloned(), timeout, timeout);
        self
    }

    /// Turns progress bars on or off.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The endpoint this downloader talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn resolve_url(&self, repo_id: &str, revision: &str, filename: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo_id,
            quote(revision, ""),
            quote(filename, "/")
        )
    }

    /// Maps a failed response to transformers' errors (`file_metadata` handles `EntryNotFound`
    /// on files itself; elsewhere it is an error). Statuses >= 500 count as an unreachable Hub.
    fn failure(&self, repo_id: &str, revision: &str, response: Response) -> Error {
        let status = response.status;
        let url = response.url.clone();
        match classify(&response) {
            Some(HubFailure::RepoNotFound) => Error::NotFound {
                name: repo_id.to_string(),
            },
            Some(HubFailure::Gated(message)) => Error::GatedRepo {
                repo_id: repo_id.to_string(),
                message,
            },
            Some(HubFailure::RevisionNotFound) => Error::RevisionNotFound {
                repo_id: repo_id.to_string(),
                revision: revision.to_string(),
            },
            Some(HubFailure::EntryNotFound) => {
                Error::download(url, "404 Entry Not Found".to_string())
            }
            Some(HubFailure::Other(message)) if status >= 500 => Error::Connection {
                url,
                reason: message,
            },
            Some(HubFailure::Other(message)) => Error::HubHttp {
                repo_id: repo_id.to_string(),
                message,
            },
            None => Error::download(url, format!("unexpected status {status}")),
        }
    }

    /// `HEAD` a file: its metadata, or `Ok(Err(commit))` when the Hub says it does not exist
    /// (`commit` from the error's `X-Repo-Commit`, when given).
    pub fn file_metadata(
        &self,
        repo_id: &str,
        revision: &str,
        filename: &str,
    ) -> Result<std::result::Result<FileMetadata, Option<String>>> {
        let url = self.resolve_url(repo_id, revision, filename);
        let response = self.client.head(&url)?;
        if response.status >= 400 {
            if classify(&response) == Some(HubFailure::EntryNotFound) {
                let commit = response
                    .header("x-repo-commit")
                    .filter(|c| is_commit_hash(c))
                    .map(str::to_string);
                return Ok(Err(commit));
            }
            return Err(self.failure(repo_id, revision, response));
        }
        if response.status >= 300 && !response.is_redirect() {
            return Err(Error::download(
                &response.url,
                format!("redirect {} without a Location", response.status),
            ));
        }
        let commit = response.header("x-repo-commit").ok_or_else(|| {
            Error::download(
                &response.url,
                "the response has no X-Repo-Commit header; is HF_ENDPOINT a Hugging Face Hub?",
            )
        })?;
        if !is_commit_hash(commit) {
            return Err(Error::download(
                &response.url,
                format!("X-Repo-Commit {commit:?} is not a commit hash"),
            ));
        }
        let etag = response
            .header("x-linked-etag")
            .or_else(|| response.header("etag"))
            .map(normalize_etag)
            .ok_or_else(|| Error::download(&response.url, "the response has no ETag header"))?;
        if !safe_etag(&etag) {
            return Err(Error::download(
                &response.url,
                format!("ETag {etag:?} cannot name a cache file"),
            ));
        }
        let size_header = response.header("x-linked-size").or_else(|| {
            (!response.is_redirect())
                .then(|| response.header("content-length"))
                .flatten()
        });
        let size = match size_header {
            Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                Error::download(&response.url, format!("invalid file size header {text:?}"))
            })?),
            None => None,
        };
        let location = match response.header("location") {
            Some(location) => super::http::join_location(&response.url, location)?,
            None => response.url.clone(),
        };
        Ok(Ok(FileMetadata {
            commit: commit.to_string(),
            etag,
            size,
            location,
        }))
    }

    /// `GET {endpoint}/api/models/{repo}/revision/{revision}`: the commit and the file names.
    pub fn repo_info(&self, repo_id: &str, revision: &str) -> Result<(String, Vec<String>)> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint,
            repo_id,
            quote(revision, "")
        );
        let response = self.client.get(&url, &[])?;
        if response.status >= 300 {
            return Err(self.failure(repo_id, revision, response));
        }
        let answered = response.url.clone();
        let text = response.text(MAX_JSON_BYTES)?;
        #[derive(serde::Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(serde::Deserialize)]
        struct Info {
            sha: Option<String>,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let info: Info = serde_json::from_str(&text)
            .map_err(|e| Error::download(&answered, format!("invalid repo info JSON: {e}")))?;
        let sha = info
            .sha
            .filter(|s| is_commit_hash(s))
            .ok_or_else(|| Error::download(&answered, "the repo info has no commit sha"))?;
        Ok((
            sha,
            info.siblings.into_iter().map(|s| s.rfilename).collect(),
        ))
    }

    /// Streams `meta.location` into `incomplete`, resuming from what it already holds. Returns
    /// the sha256 of the whole file when the etag is one.
    fn fetch_blob(
        &self,
        meta: &FileMetadata,
        incomplete: &Path,
        filename: &str,
    ) -> Result<Option<String>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(incomplete)
            .map_err(io(incomplete))?;
        let trusted = origin(&self.endpoint);
        let mut attempts = 0;
        let mut partial = Partial {
            file,
            path: incomplete,
            hashing: Hashing::new(is_sha256(&meta.etag)),
        };
        loop {
            let mut have = partial
                .file
                .seek(SeekFrom::End(0))
                .map_err(io(incomplete))?;
            if let Some(size) = meta.size {
                if have > size {
                    partial.file.set_len(0).map_err(io(incomplete))?;
                    partial
                        .file
                        .seek(SeekFrom::Start(0))
                        .map_err(io(incomplete))?;
                    have = 0;
                }
            }
            partial.hashing.sync(&mut partial.file, incomplete, have)?;
            if meta.size == Some(have) {
                // Complete already (interrupted before the rename): checked by the caller.
                return Ok(partial.hashing.hex());
            }
            let mut headers = Vec::new();
            if have > 0 {
                headers.push(("Range", format!("bytes={have}-")));
            }
            let mut range_refused = false;
            let result = self
                .client
                .get_from(&meta.location, &headers, trusted.clone())
                .and_then(|response| {
                    range_refused = response.status == 416;
                    self.stream(response, &mut partial, meta, have, filename)
                });
            match result {
                Ok(()) => return Ok(partial.hashing.hex()),
                Err(Error::Connection { .. }) if attempts < MAX_RESUMES => {
                    attempts += 1;
                    log::info!("connection lost while downloading {filename}; resuming");
                }
                Err(Error::Download { .. }) if range_refused && attempts < MAX_RESUMES => {
                    // 416: what we hold does not fit the file; start again from zero.
                    attempts += 1;
                    partial.file.set_len(0).map_err(io(incomplete))?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn stream(
        &self,
        response: Response,
        partial: &mut Partial,
        meta: &FileMetadata,
        have: u64,
        filename: &str,
    ) -> Result<()> {
        let Partial {
            file,
            path: incomplete,
            hashing,
        } = partial;
        let incomplete: &Path = incomplete;
        let url = response.url.clone();
        let mut start = have;
        match response.status {
            206 => {
                let range = response.header("content-range").unwrap_or_default();
                let first = range
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|n| n.trim().parse::<u64>().ok());
                if first != Some(have) {
                    return Err(Error::download(
                        &url,
                        format!("asked for bytes from {have}, got Content-Range {range:?}"),
                    ));
                }
            }
            200 => {
                // The server ignored the Range: start again.
                if have > 0 {
                    file.set_len(0).map_err(io(incomplete))?;
                    file.seek(SeekFrom::Start(0)).map_err(io(incomplete))?;
                    hashing.reset();
                    start = 0;
                }
            }
            status if status >= 500 => {
                return Err(Error::Connection {
                    url,
                    reason: format!("server error {status}"),
                })
            }
            status => {
                return Err(Error::download(
                    &url,
                    format!("unexpected status {status} for the file content"),
                ))
            }
        }
        if let (Some(size), Some(length)) = (meta.size, response.header("content-length")) {
            let length = length
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::download(&url, format!("invalid Content-Length {length:?}")))?;
            if start.checked_add(length) != Some(size) {
                return Err(Error::download(
                    &url,
                    format!(
                        "Content-Length {length} from byte {start} does not match the announced size {size}"
                    ),
                ));
            }
        }
        let Some(mut reader) = response.into_reader() else {
            return Err(Error::download(&url, "no body"));
        };
        let progress = Progress::new(self.progress, filename, meta.size, start);
        let mut written = start;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    file.flush().map_err(io(incomplete))?;
                    return Err(Error::Connection {
                        url,
                        reason: e.to_string(),
                    });
                }
            };
            written += n as u64;
            if meta.size.is_some_and(|size| written > size) {
                return Err(Error::download(
                    &url,
                    "the server sent more bytes than the file's announced size",
                ));
            }
            let chunk = buffer.get(..n).unwrap_or_default();
            file.write_all(chunk).map_err(io(incomplete))?;
            hashing.update(chunk);
            progress.set(written);
        }
        file.flush().map_err(io(incomplete))?;
        progress.finish(filename);
        if let Some(size) = meta.size {
            if written != size {
                return Err(Error::Connection {
                    url,
                    reason: format!("the connection closed after {written} of {size} bytes"),
                });
            }
        }
        Ok(())
    }

    /// huggingface_hub's `hf_hub_download`: the snapshot path of `filename`, or `Ok(None)` when
    /// the Hub says it does not exist.
    pub fn download_file(
        &self,
        cache_dir: &Path,
        repo_id: &str,
        revision: &str,
        filename: &str,
    ) -> Result<Option<PathBuf>> {
        if !is_valid_repo_id(repo_id) {
            return Err(Error::NotFound {
                name: repo_id.to_string(),
            });
        }
        if !safe_repo_path(filename) {
            return Err(Error::input(format!(
                "file name {filename:?} escapes the checkpoint folder"
            )));
        }
        if !safe_revision(revision) {
            return Err(Error::input(format!("invalid revision {revision:?}")));
        }
        let storage = cache_dir.join(repo_folder_name(repo_id));
        if is_commit_hash(revision) {
            let pointer = storage.join("snapshots").join(revision).join(filename);
            if pointer.is_file() {
                return Ok(Some(pointer));
            }
        }
        let meta = match self.file_metadata(repo_id, revision, filename)? {
            Ok(meta) => meta,
            Err(commit) => {
                if let Some(commit) = commit {
                    write_ref(&storage, revision, &commit)?;
                    let marker = storage.join(".no_exist").join(&commit).join(filename);
                    if !marker.exists() {
                        create_parent(&marker)?;
                        File::create(&marker).map_err(io(&marker))?;
                    }
                }
                return Ok(None);
            }
        };
        let blob = storage.join("blobs").join(&meta.etag);
        let pointer = storage.join("snapshots").join(&meta.commit).join(filename);
        write_ref(&storage, revision, &meta.commit)?;
        if pointer.is_file() && blob.is_file() {
            return Ok(Some(pointer));
        }
        create_parent(&blob)?;
        create_parent(&pointer)?;
        create_cachedir_tag(cache_dir);
        let lock_path = cache_dir
            .join(".locks")
            .join(repo_folder_name(repo_id))
            .join(format!("{}.lock", meta.etag));
        let _lock = BlobLock::acquire(&lock_path)?;
        if !blob.is_file() {
            let incomplete = storage
                .join("blobs")
                .join(format!("{}.incomplete", meta.etag));
            if let Some(digest) = self.fetch_blob(&meta, &incomplete, filename)? {
                if !digest.eq_ignore_ascii_case(&meta.etag) {
                    let _ = fs::remove_file(&incomplete);
                    return Err(Error::download(
                        &meta.location,
                        format!(
                            "the content of {filename} has sha256 {digest}, not {}",
                            meta.etag
                        ),
                    ));
                }
            }
            fs::rename(&incomplete, &blob).map_err(io(&blob))?;
        }
        link_snapshot(&blob, &pointer, filename)?;
        Ok(Some(pointer))
    }

    /// huggingface_hub's `snapshot_download`: every file of the repo at `revision` whose name
    /// matches one of `include` (fnmatch patterns; all files when empty). Returns the snapshot
    /// folder. When the Hub cannot be reached, a cached snapshot of `revision` is used with a
    /// warning.
    pub fn snapshot(
        &self,
        cache_dir: &Path,
        repo_id: &str,
        revision: &str,
        include: &[String],
    ) -> Result<PathBuf> {
        if !is_valid_repo_id(repo_id) {
            return Err(Error::NotFound {
                name: repo_id.to_string(),
            });
        }
        if !safe_revision(revision) {
            return Err(Error::input(format!("invalid revision {revision:?}")));
        }
        let storage = cache_dir.join(repo_folder_name(repo_id));
        let info = if super::offline_mode() {
            Err(Error::Connection {
                url: self.endpoint.clone(),
                reason: "offline mode is enabled (HF_HUB_OFFLINE)".to_string(),
            })
        } else {
            self.repo_info(repo_id, revision)
        };
        let (commit, files) = match info {
            Ok(info) => info,
            Err(error @ Error::Connection { .. }) => {
                let commit = if is_commit_hash(revision) {
                    Some(revision.to_string())
                } else {
                    fs::read_to_string(storage.join("refs").join(revision)).ok()
                };
                let folder = commit.map(|c| storage.join("snapshots").join(c.trim()));
                return match folder.filter(|f| f.is_dir()) {
                    Some(folder) if super::offline_mode() => Ok(folder),
                    Some(folder) => {
                        log::warn!(
                            "Could not reach the Hub ({error}). Using the cached snapshot of \
                             '{repo_id}' at revision '{revision}'."
                        );
                        Ok(folder)
                    }
                    None => Err(error),
                };
            }
            Err(e) => return Err(e),
        };
        for name in &files {
            if !safe_repo_path(name) {
                return Err(Error::download(
                    format!("{}/api/models/{repo_id}", self.endpoint),
                    format!("the repo lists a file name that escapes the snapshot: {name:?}"),
                ));
            }
        }
        write_ref(&storage, revision, &commit)?;
        let patterns: Vec<String> = include
            .iter()
            .map(|p| {
                if p.ends_with('/') {
                    format!("{p}*")
                } else {
                    p.clone()
                }
            })
            .collect();
        let folder = storage.join("snapshots").join(&commit);
        fs::create_dir_all(&folder).map_err(io(&folder))?;
        for name in files {
            if !patterns.is_empty() && !patterns.iter().any(|p| fnmatch(p, &name)) {
                continue;
            }
            if self
                .download_file(cache_dir, repo_id, &commit, &name)?
                .is_none()
            {
                return Err(Error::MissingFile {
                    name: repo_id.to_string(),
                    filename: name,
                    revision: revision.to_string(),
                });
            }
        }
        Ok(folder)
    }
}

impl Downloader for HttpDownloader {
    fn resolve_revision(&self, cache_dir: &Path, repo_id: &str, revision: &str) -> Result<String> {
        if is_commit_hash(revision) {
            return Ok(revision.to_string());
        }
        if !safe_revision(revision) {
            return Err(Error::input(format!("invalid revision {revision:?}")));
        }
        let (commit, _) = self.repo_info(repo_id, revision)?;
        let storage = cache_dir.join(repo_folder_name(repo_id));
        if let Err(e) = write_ref(&storage, revision, &commit) {
            log::warn!("Ignored error while caching commit hash for '{repo_id}': {e}.");
        }
        Ok(commit)
    }

    fn download(
        &self,
        cache_dir: &Path,
        repo_id: &str,
        revision: &str,
        filename: &str,
    ) -> Result<Option<PathBuf>> {
        self.download_file(cache_dir, repo_id, revision, filename)
    }
}

/// The sha256 of a file, in lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(buffer.get(..n).unwrap_or_default());
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Python's `fnmatch.fnmatch` on POSIX: `*` matches anything (`/` included), `?` one character,
/// `[abc]` / `[!abc]` / `[a-z]` a set.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with backtracking on the last `*`.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') if class_closed(&p, pi) => {
                match_class(&p, pi, n.get(ni).copied().unwrap_or_default())
            }
            Some(c) if Some(c) == n.get(ni) => Some(pi + 1),
            _ => None,
        };
        match step {
            Some(next) => {
                pi = next;
                ni += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// Whether the `[` at `start` opens a set that is closed (`]` after at least one character).
fn class_closed(p: &[char], start: usize) -> bool {
    let mut i = start + 1;
    if p.get(i) == Some(&'!') {
        i += 1;
    }
    p.get(i + 1..).is_some_and(|rest| rest.contains(&']'))
}

/// Matches `c` against the set starting at `p[start] == '['`; the index after the set when it
/// matches. An unclosed `[` is a literal, as in Python.
fn match_class(p: &[char], start: usize, c: char) -> Option<usize> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let current = *p.get(i)?;
        if current == ']' && !first {
            break;
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|e| *e != ']') {
            let end = *p.get(i + 2)?;
            if current <= c && c <= end {
                matched = true;
            }
            i += 3;
        } else {
            if current == c {
                matched = true;
            }
            i += 1;
        }
    }
    (matched != negate).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert!(!safe_etag("../x"));
        assert!(!safe_etag(""));
        assert!(!safe_etag("a/b"));
        assert!(safe_etag(&"a".repeat(64)));
    }

    #[test]
    fn repo_paths() {
        assert!(safe_repo_path("sub/config.json"));
        assert!(!safe_repo_path("../x"));
        assert!(!safe_repo_path("/etc/passwd"));
        assert!(!safe_repo_path("a//b"));
        assert!(!safe_repo_path("a\\..\\b"));
    }

    #[test]
    fn patterns() {
        assert!(fnmatch("*.json", "config.json"));
        assert!(fnmatch("*.json", "sub/config.json"));
        assert!(!fnmatch("*.json", "model.safetensors"));
        assert!(fnmatch(
            "model-?????.safetensors",
            "model-00001.safetensors"
        ));
        assert!(fnmatch("[ct]*", "tokenizer.json"));
        assert!(!fnmatch("[!ct]*", "tokenizer.json"));
        assert!(fnmatch("sub/*", "sub/a/b"));
        assert!(fnmatch("[", "["));
    }
}
