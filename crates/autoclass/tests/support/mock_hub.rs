//! A mock Hugging Face Hub on 127.0.0.1 for the download tests (std only, one thread per
//! connection, one request per connection).
//!
//! Two listeners: the Hub (`/api/models/…`, `/{repo}/resolve/{rev}/{file}`) and a "CDN" on a
//! second port that serves large files. The Hub answers `HEAD`/`GET` on `resolve` with the headers
//! huggingface_hub reads: `X-Repo-Commit`, `ETag` (a 40-hex id for small files) or, for LFS files,
//! a 302 to the CDN with `X-Linked-Etag` (the sha256) and `X-Linked-Size`. Errors carry
//! `X-Error-Code` (`RepoNotFound`, `GatedRepo`, `EntryNotFound`, `RevisionNotFound`). Every request
//! is logged with its headers so tests can check what was asked and what was sent where.
//!
//! Included with `#[path]` by the library tests, the CLI tests and `examples/mock_hub.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One repo: a commit, its files, and who may read it.
#[derive(Clone, Debug, Default)]
pub struct MockRepo {
    /// The commit `main` points to.
    pub commit: String,
    /// Other branch or tag names → commit (all serve the same files).
    pub refs: HashMap<String, String>,
    /// path in repo → content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// When set, only `Authorization: Bearer {token}` may read (else 401 GatedRepo).
    pub gated_token: Option<String>,
}

impl MockRepo {
    /// A repo holding every file of `dir` (not recursive), minus test-only files.
    pub fn from_dir(dir: &Path, commit: &str) -> MockRepo {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && name != "case.json" && name != "expected.safetensors" {
                files.insert(name, std::fs::read(entry.path()).unwrap());
            }
        }
        MockRepo {
            commit: commit.to_string(),
            files,
            ..MockRepo::default()
        }
    }

    /// Adds a file.
    pub fn with_file(mut self, name: &str, content: &[u8]) -> MockRepo {
        self.files.insert(name.to_string(), content.to_vec());
        self
    }
}

/// A logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    /// `hub` or `cdn`.
    pub server: &'static str,
    /// `HEAD` or `GET`.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Logged {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the mock serves and how it misbehaves.
#[derive(Default)]
pub struct HubState {
    /// repo id → repo.
    pub repos: HashMap<String, MockRepo>,
    /// old repo id → new repo id (answered with a relative 307).
    pub renamed: HashMap<String, String>,
    /// Blob sha256s whose next CDN `GET` is cut after half the bytes.
    pub cut_once: HashSet<String>,
    /// Milliseconds slept after every 8 KiB the CDN sends.
    pub throttle_ms: u64,
    /// Every request, in order.
    pub log: Vec<Logged>,
}

/// The running mock: its two addresses and its state.
pub struct MockHub {
    /// `http://127.0.0.1:PORT` of the Hub.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the CDN.
    pub cdn_url: String,
    /// Shared state (add repos, read the log).
    pub state: Arc<Mutex<HubState>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// `sha256(content)` in hex.
pub fn sha256_hex(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the Hub serves `name` through the CDN (as Git LFS files are).
fn is_lfs(name: &str, content: &[u8]) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".bin") || content.len() > 1_000_000
}

/// The etag a small file gets (a 40-hex id, like a git blob sha1).
pub fn small_etag(content: &[u8]) -> String {
    sha256_hex(&[b"blob ".as_slice(), content].concat())[..40].to_string()
}

/// The blob name (etag) the cache will use for `name`.
pub fn etag_of(name: &str, content: &[u8]) -> String {
    if is_lfs(name, content) {
        sha256_hex(content)
    } else {
        small_etag(content)
    }
}

impl MockHub {
    /// Starts both servers on free ports of 127.0.0.1.
    pub fn start(state: HubState) -> MockHub {
        Self::start_on(state, 0, 0)
    }

    /// Starts both servers on the given ports (0: any free port).
    pub fn start_on(state: HubState, hub_port: u16, cdn_port: u16) -> MockHub {
        let hub = TcpListener::bind(("127.0.0.1", hub_port)).unwrap();
        let cdn = TcpListener::bind(("127.0.0.1", cdn_port)).unwrap();
        let url = format!("http://{}", hub.local_addr().unwrap());
        let cdn_url = format!("http://{}", cdn.local_addr().unwrap());
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (listener, server) in [(hub, "hub"), (cdn, "cdn")] {
            let state = state.clone();
            let stop = stop.clone();
            let cdn_url = cdn_url.clone();
            threads.push(std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    let cdn_url = cdn_url.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, server, &state, &cdn_url);
                    });
                }
            }));
        }
        MockHub {
            url,
            cdn_url,
            state,
            stop,
            threads,
        }
    }

    /// The requests so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Forgets the requests so far.
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Stops both servers; their ports refuse connections afterwards.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for url in [&self.url, &self.cdn_url] {
            let _ = TcpStream::connect(url.trim_start_matches("http://"));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close.
    cut_at: Option<usize>,
    throttle_ms: u64,
    /// Override the Content-Length header.
    content_length: Option<String>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_at: None,
            throttle_ms: 0,
            content_length: None,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_string(), v.into()));
        self
    }
    fn body(mut self, body: Vec<u8>) -> Reply {
        self.body = body;
        self
    }
    fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
            .body(message.as_bytes().to_vec())
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    }
}

fn write_reply(mut stream: TcpStream, method: &str, reply: Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let length = reply
        .content_length
        .clone()
        .unwrap_or_else(|| reply.body.len().to_string());
    head.push_str(&format!(
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    stream.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return stream.flush();
    }
    let end = reply
        .cut_at
        .unwrap_or(reply.body.len())
        .min(reply.body.len());
    for chunk in reply.body[..end].chunks(8192) {
        stream.write_all(chunk)?;
        if reply.throttle_ms > 0 {
            stream.flush()?;
            std::thread::sleep(Duration::from_millis(reply.throttle_ms));
        }
    }
    stream.flush()?;
    if reply.cut_at.is_some() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    Ok(())
}

fn serve(
    stream: TcpStream,
    server: &'static str,
    state: &Mutex<HubState>,
    cdn_url: &str,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let Some(request) = read_request(&stream) else {
        return Ok(());
    };
    state.lock().unwrap().log.push(Logged {
        server,
        method: request.method.clone(),
        path: request.path.clone(),
        headers: request.headers.clone(),
    });
    let reply = if server == "cdn" {
        cdn(&request, state)
    } else {
        hub(&request, state, cdn_url)
    };
    write_reply(stream, &request.method, reply)
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn range_start(request: &Request) -> Option<usize> {
    header(request, "range")?
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

fn serve_bytes(request: &Request, content: &[u8], reply: Reply) -> Reply {
    match range_start(request) {
        Some(start) if start >= content.len() => Reply::new(416),
        Some(start) => Reply {
            status: 206,
            body: content[start..].to_vec(),
            ..reply
        }
        .header(
            "Content-Range",
            format!("bytes {start}-{}/{}", content.len() - 1, content.len()),
        ),
        None => reply.body(content.to_vec()),
    }
}

fn cdn(request: &Request, state: &Mutex<HubState>) -> Reply {
    let mut state = state.lock().unwrap();
    // /blobs/{sha256}?signature
    let path = request.path.split('?').next().unwrap_or_default();
    if path == "/loop" {
        return Reply::new(302).header("Location", "/loop");
    }
    let Some(sha) = path.strip_prefix("/blobs/") else {
        return Reply::new(404);
    };
    let content = state
        .repos
        .values()
        .flat_map(|r| r.files.values())
        .find(|c| sha256_hex(c) == sha)
        .cloned();
    let Some(content) = content else {
        return Reply::new(404);
    };
    let mut reply = Reply::new(200);
    reply.throttle_ms = state.throttle_ms;
    let mut reply = serve_bytes(request, &content, reply);
    if state.cut_once.remove(sha) {
        reply.cut_at = Some(reply.body.len() / 2);
    }
    reply
}

fn json_reply(value: &serde_json::Value) -> Reply {
    Reply::new(200)
        .header("Content-Type", "application/json")
        .body(value.to_string().into_bytes())
}

fn hub(request: &Request, state: &Mutex<HubState>, cdn_url: &str) -> Reply {
    let path = request
        .path
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let token = header(request, "authorization").and_then(|a| a.strip_prefix("Bearer "));

    // Hostile answers, by repo.
    if let Some(reply) = hostile(&path, cdn_url) {
        return reply;
    }
    let state = state.lock().unwrap();

    if let Some(rest) = path.strip_prefix("/api/models/") {
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        let mut tree = false;
        let (repo_id, revision) = match parts.as_slice() {
            [org, name] => (format!("{org}/{name}"), "main".to_string()),
            [org, name, "revision", rev] => (format!("{org}/{name}"), percent_decode(rev)),
            // huggingface_hub's list_repo_tree (snapshot_download lists files with it).
            [org, name, "tree", rev] => {
                tree = true;
                (format!("{org}/{name}"), percent_decode(rev))
            }
            _ => return Reply::error(404, "RepoNotFound", "Repository not found"),
        };
        if let Some(new) = state.renamed.get(&repo_id) {
            return Reply::new(307).header(
                "Location",
                format!(
                    "/api/models/{new}/revision/{}",
                    parts.get(3).unwrap_or(&"main")
                ),
            );
        }
        let Some(repo) = state.repos.get(&repo_id) else {
            return Reply::error(401, "RepoNotFound", "Repository not found");
        };
        if repo.gated_token.is_some() && repo.gated_token.as_deref() != token {
            return Reply::error(401, "GatedRepo", "Access to model is restricted.");
        }
        let Some(commit) = commit_of(repo, &revision) else {
            return Reply::error(404, "RevisionNotFound", "Invalid rev id");
        };
        if tree {
            let entries: Vec<_> = repo
                .files
                .iter()
                .map(|(path, content)| {
                    let mut entry = serde_json::json!({
                        "type": "file", "path": path, "size": content.len(),
                        "oid": small_etag(content),
                    });
                    if is_lfs(path, content) {
                        entry["lfs"] = serde_json::json!({
                            "oid": sha256_hex(content), "size": content.len(), "pointerSize": 134,
                        });
                    }
                    entry
                })
                .collect();
            return json_reply(&serde_json::Value::Array(entries));
        }
        let siblings: Vec<_> = repo
            .files
            .keys()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        return json_reply(&serde_json::json!({
            "_id": "0", "id": repo_id, "modelId": repo_id, "sha": commit,
            "private": false, "disabled": false, "gated": repo.gated_token.is_some(),
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        }));
    }

    // /{org}/{name}/resolve/{revision}/{path...}
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", revision, file] = segments.as_slice() else {
        return Reply::new(404);
    };
    let repo_id = format!("{org}/{name}");
    let revision = percent_decode(revision);
    let file = percent_decode(file);
    if let Some(new) = state.renamed.get(&repo_id) {
        return Reply::new(307).header(
            "Location",
            format!("/{new}/resolve/{}/{}", segments[3], segments[4]),
        );
    }
    let Some(repo) = state.repos.get(&repo_id) else {
        return Reply::error(401, "RepoNotFound", "Repository not found");
    };
    if repo.gated_token.is_some() && repo.gated_token.as_deref() != token {
        return Reply::error(
            401,
            "GatedRepo",
            "Access to model is restricted and you are not in the authorized list.",
        );
    }
    let Some(commit) = commit_of(repo, &revision) else {
        return Reply::error(404, "RevisionNotFound", "Invalid rev id");
    };
    let Some(content) = repo.files.get(&file) else {
        return Reply::error(404, "EntryNotFound", "Entry not found")
            .header("X-Repo-Commit", commit);
    };
    if is_lfs(&file, content) {
        let sha = sha256_hex(content);
        Reply::new(302)
            .header("X-Repo-Commit", commit)
            .header("X-Linked-Etag", format!("\"{sha}\""))
            .header("X-Linked-Size", content.len().to_string())
            .header("ETag", "\"pointer-etag\"")
            .header(
                "Location",
                format!("{cdn_url}/blobs/{sha}?X-Amz-Signature=abc"),
            )
    } else {
        let reply = Reply::new(200)
            .header("X-Repo-Commit", commit)
            .header("ETag", format!("\"{}\"", small_etag(content)));
        serve_bytes(request, content, reply)
    }
}

fn commit_of(repo: &MockRepo, revision: &str) -> Option<String> {
    if revision == "main" || revision == repo.commit {
        return Some(repo.commit.clone());
    }
    repo.refs.get(revision).cloned()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Hostile repos under `hostile/`: each breaks one rule of the protocol.
fn hostile(path: &str, cdn_url: &str) -> Option<Reply> {
    let rest = path
        .strip_prefix("/hostile/")
        .or_else(|| path.strip_prefix("/api/models/hostile/"))?;
    let name = rest.split('/').next()?;
    let api = path.starts_with("/api/");
    if api {
        let siblings = if name == "traversal" {
            serde_json::json!([{ "rfilename": "config.json" }, { "rfilename": "../../evil.txt" }])
        } else {
            serde_json::json!([{ "rfilename": "config.json" }])
        };
        let sha = if name == "badsha" { "../../x" } else { COMMIT };
        if name == "hugejson" {
            let mut reply = Reply::new(200);
            reply.content_length = Some("99999999999".into());
            reply.body = vec![b' '; 17 * 1024 * 1024];
            return Some(reply);
        }
        return Some(json_reply(
            &serde_json::json!({ "id": format!("hostile/{name}"), "sha": sha, "siblings": siblings }),
        ));
    }
    Some(match name {
        // Every answer redirects (relatively) to itself.
        "loop" => Reply::new(302).header("Location", "/hostile/loop/resolve/main/x"),
        // The CDN redirects to itself forever.
        "cdnloop" => Reply::new(302)
            .header("X-Repo-Commit", COMMIT)
            .header("X-Linked-Etag", format!("\"{}\"", "a".repeat(64)))
            .header("X-Linked-Size", "10")
            .header("Location", format!("{cdn_url}/loop")),
        "badetag" => Reply::new(200)
            .header("X-Repo-Commit", COMMIT)
            .header("ETag", "\"../../../evil\"")
            .body(b"{}".to_vec()),
        "badcommit" => Reply::new(200)
            .header("X-Repo-Commit", "../../../tmp")
            .header("ETag", "\"abc\"")
            .body(b"{}".to_vec()),
        "badsize" => Reply::new(200)
            .header("X-Repo-Commit", COMMIT)
            .header("ETag", "\"abc\"")
            .header("X-Linked-Size", "lots")
            .body(b"{}".to_vec()),
        "nocommit" => Reply::new(200)
            .header("ETag", "\"abc\"")
            .body(b"{}".to_vec()),
        // Announces 2 bytes in HEAD, then a GET claiming an exabyte.
        "huge" => {
            let mut reply = Reply::new(200)
                .header("X-Repo-Commit", COMMIT)
                .header("X-Linked-Size", "2")
                .header("ETag", "\"abc\"")
                .body(b"{}".to_vec());
            reply.content_length = Some("1000000000000000000".into());
            reply
        }
        // Announces 2 bytes, sends more (no Content-Length match is checked on HEAD).
        "toolong" => Reply::new(200)
            .header("X-Repo-Commit", COMMIT)
            .header("X-Linked-Size", "2")
            .header("ETag", "\"abc\"")
            .body(b"{\"much\": \"longer\"}".to_vec()),
        // The content does not match its sha256 etag.
        "badsha256" => Reply::new(200)
            .header("X-Repo-Commit", COMMIT)
            .header("X-Linked-Etag", format!("\"{}\"", "b".repeat(64)))
            .body(b"{}".to_vec()),
        "forbidden" => Reply::error(403, "", "You do not have access to this file"),
        "down" => Reply::new(503),
        // Never answers in time.
        "slow" => {
            std::thread::sleep(Duration::from_secs(5));
            Reply::new(500)
        }
        _ => Reply::error(401, "RepoNotFound", "Repository not found"),
    })
}

/// Serves `dir`'s fixture checkpoints until killed (for the Python interop script).
pub fn repo_from_fixture(fixtures: &Path, case: &str, commit: &str) -> MockRepo {
    MockRepo::from_dir(&fixtures.join(case), commit)
}

/// Reads all of `stream` (used by tests that talk to the mock directly).
pub fn read_all(mut stream: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}
