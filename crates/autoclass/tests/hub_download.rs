//! Downloads from a mock Hub on 127.0.0.1 (tests/support/mock_hub.rs): the protocol
//! (HEAD metadata, CDN redirects, errors), the cache layout Python writes, resuming, locking,
//! offline use, and hostile servers. No external address is ever contacted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mock_hub.rs"]
mod mock_hub;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autoclass::hub::download::sha256_file;
use autoclass::hub::Checkpoint;
use autoclass::{
    AutoModelForSequenceClassification, AutoTokenizer, Error, HttpDownloader, HubOptions,
    LoadOptions,
};
use mock_hub::{etag_of, sha256_hex, HubState, Logged, MockHub, MockRepo};

const COMMIT: &str = "aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd";
const REPO: &str = "org/tiny-bert";
const TOKEN: &str = "hf_secret_token";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert_sequence_classification")
}

/// A fresh folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("autoclass-hub-dl-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tiny_repo() -> MockRepo {
    let mut repo = MockRepo::from_dir(&fixture(), COMMIT)
        // Files a sequence-classification load must not fetch.
        .with_file("pytorch_model.bin", b"not needed")
        .with_file("README.md", b"# tiny");
    repo.refs.insert("v1".into(), COMMIT.into());
    repo
}

fn start() -> MockHub {
    let mut state = HubState::default();
    state.repos.insert(REPO.into(), tiny_repo());
    let mut gated = tiny_repo();
    gated.gated_token = Some(TOKEN.into());
    state.repos.insert("org/gated".into(), gated);
    state.renamed.insert("old-org/old-name".into(), REPO.into());
    MockHub::start(state)
}

fn downloader(hub: &MockHub, token: Option<&str>) -> Arc<HttpDownloader> {
    Arc::new(
        HttpDownloader::new(&hub.url, token.map(str::to_string))
            .with_progress(false)
            .with_timeout(Duration::from_secs(5)),
    )
}

fn options(hub: &MockHub, cache: &Path, token: Option<&str>) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        downloader: Some(downloader(hub, token)),
        ..HubOptions::default()
    }
}

fn load_options(hub: HubOptions) -> LoadOptions {
    LoadOptions {
        hub,
        ..LoadOptions::default()
    }
}

fn storage(cache: &Path, repo: &str) -> PathBuf {
    cache.join(autoclass::hub::repo_folder_name(repo))
}

/// `(server, method, path without query)` of each request.
fn requests(log: &[Logged]) -> Vec<(String, String, String)> {
    log.iter()
        .map(|l| {
            (
                l.server.to_string(),
                l.method.clone(),
                l.path.split('?').next().unwrap().to_string(),
            )
        })
        .collect()
}

fn gets_of_files(log: &[Logged]) -> Vec<String> {
    log.iter()
        .filter(|l| l.method == "GET" && l.server == "hub" && l.path.contains("/resolve/"))
        .map(|l| l.path.rsplit('/').next().unwrap().to_string())
        .collect()
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(leftovers(&path));
            } else if path.to_string_lossy().ends_with(".incomplete") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn from_pretrained_downloads_what_it_needs_into_pythons_cache_layout() {
    let hub = start();
    let cache = TempDir::new("layout");
    let opts = options(&hub, &cache.0, Some(TOKEN));
    let tokenizer = AutoTokenizer::from_pretrained_with(REPO, &opts).unwrap();
    let model =
        AutoModelForSequenceClassification::from_pretrained_with(REPO, &load_options(opts.clone()))
            .unwrap();
    let local =
        AutoModelForSequenceClassification::from_pretrained(fixture().to_str().unwrap()).unwrap();
    let batch = tokenizer
        .encode("hello world", &Default::default())
        .unwrap()
        .to_batch(&autoclass::candle_core::Device::Cpu)
        .unwrap();
    let a = model.forward(&batch).unwrap();
    let b = local.forward(&batch).unwrap();
    let (a, b) = (
        a.get("logits")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        b.get("logits")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
    );
    assert_eq!(a, b);

    // Layout: refs/main, snapshots/<commit>/<file> -> ../../blobs/<etag>, blobs named by etag.
    let store = storage(&cache.0, REPO);
    assert_eq!(
        std::fs::read_to_string(store.join("refs/main")).unwrap(),
        COMMIT
    );
    let weights = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let sha = sha256_hex(&weights);
    let pointer = store
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert_eq!(
        std::fs::read_link(&pointer).unwrap(),
        Path::new("../../blobs").join(&sha)
    );
    assert_eq!(sha256_file(&store.join("blobs").join(&sha)).unwrap(), sha);
    let config = std::fs::read(fixture().join("config.json")).unwrap();
    assert!(store
        .join("blobs")
        .join(etag_of("config.json", &config))
        .is_file());
    assert!(cache
        .0
        .join(".locks")
        .join("models--org--tiny-bert")
        .join(format!("{sha}.lock"))
        .is_file());
    // Optional files the repo lacks are recorded in .no_exist.
    assert!(store
        .join(".no_exist")
        .join(COMMIT)
        .join("special_tokens_map.json")
        .is_file());
    assert!(leftovers(&cache.0).is_empty());
    assert!(std::fs::read_to_string(cache.0.join("CACHEDIR.TAG"))
        .unwrap()
        .starts_with("Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by huggingface_hub.\n"));

    // Only what the load needs was fetched: no .bin, no README.
    let log = hub.log();
    let mut fetched = gets_of_files(&log);
    fetched.sort();
    fetched.dedup();
    assert!(
        !fetched.contains(&"pytorch_model.bin".to_string()),
        "{fetched:?}"
    );
    assert!(!fetched.contains(&"README.md".to_string()), "{fetched:?}");
    let cdn: Vec<_> = log.iter().filter(|l| l.server == "cdn").collect();
    assert_eq!(cdn.len(), 1, "one CDN GET for model.safetensors");
    // The token goes to the Hub, never to the CDN on another port.
    assert!(cdn.iter().all(|l| l.header("authorization").is_none()));
    assert!(log
        .iter()
        .filter(|l| l.server == "hub")
        .all(|l| l.header("authorization") == Some(&format!("Bearer {TOKEN}"))));

    // A second load: the revision is resolved again, every file is known at that commit.
    hub.clear_log();
    AutoModelForSequenceClassification::from_pretrained_with(REPO, &load_options(opts)).unwrap();
    let log = requests(&hub.log());
    assert!(
        log.iter().all(|(_, _, p)| p.starts_with("/api/models/")),
        "{log:?}"
    );
    hub.stop();
}

#[test]
fn gated_repo_needs_the_token() {
    let hub = start();
    let cache = TempDir::new("gated");
    let err = AutoTokenizer::from_pretrained_with("org/gated", &options(&hub, &cache.0, None))
        .unwrap_err();
    assert!(matches!(err, Error::GatedRepo { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("You are trying to access a gated repo.\nMake sure to have access to it at https://huggingface.co/org/gated."),
        "{err}"
    );
    let opts = options(&hub, &cache.0, Some(TOKEN));
    AutoTokenizer::from_pretrained_with("org/gated", &opts).unwrap();
    hub.stop();
}

#[test]
fn missing_files_unknown_repos_and_revisions() {
    let hub = start();
    let cache = TempDir::new("missing");
    let opts = options(&hub, &cache.0, None);
    let checkpoint = Checkpoint::resolve(REPO, &opts).unwrap();
    let err = checkpoint.require("nothing.json").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("org/tiny-bert does not appear to have a file named nothing.json."),
        "{err}"
    );
    let marker = storage(&cache.0, REPO)
        .join(".no_exist")
        .join(COMMIT)
        .join("nothing.json");
    assert!(marker.is_file());
    // Known missing: not asked again.
    hub.clear_log();
    assert_eq!(checkpoint.get("nothing.json").unwrap(), None);
    assert!(hub.log().is_empty());
    // The cache-only resolver honours the marker too.
    let cached = Checkpoint::resolve(
        REPO,
        &HubOptions {
            cache_dir: Some(cache.0.clone()),
            ..HubOptions::default()
        },
    )
    .unwrap();
    assert_eq!(cached.get("nothing.json").unwrap(), None);

    let err = Checkpoint::resolve("org/nope", &opts).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("org/nope is not a local folder and is not a valid model identifier"),
        "{err}"
    );
    let err = Checkpoint::resolve(
        REPO,
        &HubOptions {
            revision: Some("nobranch".into()),
            ..opts.clone()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::RevisionNotFound { .. }), "{err:?}");
    assert!(err.to_string().starts_with(
        "nobranch is not a valid git identifier (branch name, tag name or commit id)"
    ));
    // A tag is recorded in refs/.
    Checkpoint::resolve(
        REPO,
        &HubOptions {
            revision: Some("v1".into()),
            ..opts
        },
    )
    .unwrap()
    .require("config.json")
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(storage(&cache.0, REPO).join("refs/v1")).unwrap(),
        COMMIT
    );
    hub.stop();
}

#[test]
fn renamed_repo_follows_the_relative_redirect() {
    let hub = start();
    let cache = TempDir::new("renamed");
    let opts = options(&hub, &cache.0, None);
    let path = Checkpoint::resolve("old-org/old-name", &opts)
        .unwrap()
        .require("config.json")
        .unwrap();
    assert!(path.starts_with(storage(&cache.0, "old-org/old-name")));
    let log = requests(&hub.log());
    assert!(log
        .iter()
        .any(|(_, m, p)| m == "HEAD" && p == &format!("/{REPO}/resolve/{COMMIT}/config.json")));
    hub.stop();
}

#[test]
fn a_cut_connection_is_resumed_with_range_and_checked() {
    let hub = start();
    let weights = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let sha = sha256_hex(&weights);
    hub.state.lock().unwrap().cut_once.insert(sha.clone());
    let cache = TempDir::new("cut");
    let d = downloader(&hub, None);
    let path = d
        .download_file(&cache.0, REPO, "main", "model.safetensors")
        .unwrap()
        .unwrap();
    assert_eq!(sha256_file(&path).unwrap(), sha);
    let cdn: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|l| l.server == "cdn")
        .collect();
    assert_eq!(cdn.len(), 2, "{cdn:?}");
    assert_eq!(cdn[0].header("range"), None);
    assert_eq!(
        cdn[1].header("range"),
        Some(format!("bytes={}-", weights.len() / 2).as_str())
    );
    assert!(leftovers(&cache.0).is_empty());
    hub.stop();
}

#[test]
fn an_interrupted_download_leaves_a_resumable_incomplete_file() {
    // What Ctrl-C leaves: blobs/<etag>.incomplete holding the first bytes.
    let hub = start();
    let weights = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let sha = sha256_hex(&weights);
    let cache = TempDir::new("resume");
    let blobs = storage(&cache.0, REPO).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{sha}.incomplete")), &weights[..1000]).unwrap();
    let path = downloader(&hub, None)
        .download_file(&cache.0, REPO, "main", "model.safetensors")
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), weights);
    let cdn: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|l| l.server == "cdn")
        .collect();
    assert_eq!(cdn.len(), 1);
    assert_eq!(cdn[0].header("range"), Some("bytes=1000-"));
    assert!(leftovers(&cache.0).is_empty());
    hub.stop();
}

#[test]
fn a_complete_incomplete_file_is_checked_and_renamed_without_a_request() {
    let hub = start();
    let weights = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let sha = sha256_hex(&weights);
    let cache = TempDir::new("complete");
    let blobs = storage(&cache.0, REPO).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{sha}.incomplete")), &weights).unwrap();
    downloader(&hub, None)
        .download_file(&cache.0, REPO, "main", "model.safetensors")
        .unwrap()
        .unwrap();
    assert_eq!(hub.log().iter().filter(|l| l.server == "cdn").count(), 0);
    // A corrupt one of the right size is refused and removed, and the next call fetches it.
    let cache = TempDir::new("corrupt");
    let blobs = storage(&cache.0, REPO).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(
        blobs.join(format!("{sha}.incomplete")),
        vec![0u8; weights.len()],
    )
    .unwrap();
    let d = downloader(&hub, None);
    let err = d
        .download_file(&cache.0, REPO, "main", "model.safetensors")
        .unwrap_err();
    assert!(err.to_string().contains("has sha256"), "{err}");
    assert!(leftovers(&cache.0).is_empty());
    let path = d
        .download_file(&cache.0, REPO, "main", "model.safetensors")
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), weights);
    hub.stop();
}

#[test]
fn concurrent_downloads_of_one_file_make_one_blob() {
    let hub = start();
    hub.state.lock().unwrap().throttle_ms = 20;
    let cache = TempDir::new("concurrent");
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let d = downloader(&hub, None);
            let cache = cache.0.clone();
            std::thread::spawn(move || {
                d.download_file(&cache, REPO, "main", "model.safetensors")
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let blobs: Vec<_> = std::fs::read_dir(storage(&cache.0, REPO).join("blobs"))
        .unwrap()
        .collect();
    assert_eq!(blobs.len(), 1);
    assert!(leftovers(&cache.0).is_empty());
    let cdn = hub.log().into_iter().filter(|l| l.server == "cdn").count();
    assert_eq!(cdn, 1, "the lock kept the other downloads waiting");
    hub.stop();
}

#[test]
fn offline_and_unreachable_hub_use_the_cache() {
    let hub = start();
    let cache = TempDir::new("offline");
    let opts = options(&hub, &cache.0, None);
    AutoModelForSequenceClassification::from_pretrained_with(REPO, &load_options(opts.clone()))
        .unwrap();
    // local_files_only: not one request.
    hub.clear_log();
    let local = HubOptions {
        local_files_only: true,
        ..opts.clone()
    };
    AutoModelForSequenceClassification::from_pretrained_with(REPO, &load_options(local)).unwrap();
    assert!(hub.log().is_empty());
    // The Hub goes away: the cached commit is used (with a warning).
    hub.stop();
    AutoModelForSequenceClassification::from_pretrained_with(REPO, &load_options(opts.clone()))
        .unwrap();
    // An uncached repo then fails with transformers' connection message.
    let err = Checkpoint::resolve("org/other", &opts).unwrap_err();
    assert!(
        err.to_string().starts_with("We couldn't connect to"),
        "{err}"
    );
}

#[test]
fn snapshot_downloads_the_whole_repo_or_the_included_files() {
    let hub = start();
    let cache = TempDir::new("snapshot");
    let d = downloader(&hub, None);
    let folder = d
        .snapshot(&cache.0, REPO, "main", &["*.json".to_string()])
        .unwrap();
    assert_eq!(
        folder,
        storage(&cache.0, REPO).join("snapshots").join(COMMIT)
    );
    let mut names: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", "tokenizer.json", "tokenizer_config.json"]
    );
    d.snapshot(&cache.0, REPO, "main", &[]).unwrap();
    assert!(folder.join("README.md").is_file());
    assert!(folder.join("model.safetensors").is_file());
    // Unreachable: the cached snapshot is returned.
    hub.stop();
    assert_eq!(d.snapshot(&cache.0, REPO, "main", &[]).unwrap(), folder);
}

fn hostile_error(repo: &str) -> Error {
    let hub = MockHub::start(HubState::default());
    let cache = TempDir::new("hostile");
    let d = HttpDownloader::new(&hub.url, Some(TOKEN.into()))
        .with_progress(false)
        .with_timeout(Duration::from_secs(1));
    let result = d.download_file(&cache.0, repo, "main", "config.json");
    // Nothing escaped the cache folder, nothing half-written stays under a final name.
    assert!(!cache.0.parent().unwrap().join("evil").exists());
    let err = match result {
        Ok(path) => panic!("{repo}: accepted {path:?}"),
        Err(e) => e,
    };
    hub.stop();
    err
}

#[test]
fn hostile_servers_get_clear_errors() {
    for (repo, needle) in [
        ("hostile/loop", "more than 10 redirects"),
        ("hostile/cdnloop", "more than 10 redirects"),
        ("hostile/badetag", "cannot name a cache file"),
        ("hostile/badcommit", "is not a commit hash"),
        ("hostile/badsize", "invalid file size header"),
        ("hostile/nocommit", "no X-Repo-Commit header"),
        ("hostile/huge", "does not match the announced size"),
        ("hostile/toolong", "does not match the announced size"),
        ("hostile/badsha256", "has sha256"),
        ("hostile/slow", "could not reach"),
        ("hostile/down", "could not reach"),
        (
            "hostile/forbidden",
            "There was a specific connection error when trying to load hostile/forbidden:\n403 Forbidden: You do not have access to this file.",
        ),
    ] {
        let err = hostile_error(repo);
        assert!(err.to_string().contains(needle), "{repo}: {err}");
    }
}

#[test]
fn hostile_repo_listings_are_refused() {
    let hub = MockHub::start(HubState::default());
    let cache = TempDir::new("listing");
    let d = HttpDownloader::new(&hub.url, None).with_progress(false);
    for (repo, needle) in [
        ("hostile/traversal", "escapes the snapshot"),
        ("hostile/badsha", "has no commit sha"),
        ("hostile/hugejson", "larger than"),
    ] {
        let err = d.snapshot(&cache.0, repo, "main", &[]).unwrap_err();
        assert!(err.to_string().contains(needle), "{repo}: {err}");
    }
    assert!(!cache.0.join("evil.txt").exists());
    // File names and revisions from the caller are checked before any request.
    hub.clear_log();
    assert!(d.download_file(&cache.0, REPO, "main", "../x").is_err());
    assert!(d
        .download_file(&cache.0, REPO, "../../x", "config.json")
        .is_err());
    assert!(hub.log().is_empty());
    hub.stop();
}

#[test]
fn sharded_weights_are_fetched_in_transformers_order() {
    let sharded = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert_sharded");
    let mut state = HubState::default();
    state.repos.insert(
        "org/sharded".into(),
        MockRepo::from_dir(&sharded, COMMIT).with_file("pytorch_model.bin", b"not needed"),
    );
    let hub = MockHub::start(state);
    let cache = TempDir::new("sharded");
    let opts = options(&hub, &cache.0, None);
    autoclass::AutoModelForTokenClassification::from_pretrained_with(
        "org/sharded",
        &load_options(opts),
    )
    .unwrap();
    let log = requests(&hub.log());
    let position = |method: &str, file: &str| {
        log.iter()
            .position(|(_, m, p)| m == method && p.ends_with(&format!("/{file}")))
    };
    // model.safetensors is asked first (missing), then the index, then every shard from the CDN;
    // pytorch_model.bin is never asked.
    let single = position("HEAD", "model.safetensors").unwrap();
    let index = position("GET", "model.safetensors.index.json").unwrap();
    assert!(single < index);
    for i in 1..=6 {
        let shard = format!("model-{i:05}-of-00006.safetensors");
        assert!(position("HEAD", &shard).unwrap() > index, "{shard}");
    }
    assert_eq!(log.iter().filter(|(s, _, _)| s == "cdn").count(), 6);
    assert_eq!(position("HEAD", "pytorch_model.bin"), None);
    assert!(storage(&cache.0, "org/sharded")
        .join(".no_exist")
        .join(COMMIT)
        .join("model.safetensors")
        .is_file());
    hub.stop();
}
