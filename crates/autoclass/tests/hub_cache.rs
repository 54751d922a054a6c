//! Resolution through a Hugging Face cache built exactly as Python's huggingface_hub lays it out
//! (`models--org--name/{blobs,snapshots,refs,.no_exist}`), the error messages of a failed lookup,
//! and the environment variables that pick the cache folder and offline mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use autoclass::candle_core::{Device, Tensor};
use autoclass::hub::{default_cache_dir, offline_mode, Checkpoint, Downloader};
use autoclass::{
    AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, Batch, Error, HubOptions,
    LoadOptions,
};
use common::*;
use serde_json::Value;

const REPO: &str = "org/name";
const REPO_DIR: &str = "models--org--name";
/// What `refs/main` points to.
const MAIN: &str = "4f1e6c2a9b0d3e5f7a8c1b2d4e6f8a0b1c3d5e7f";
/// What the tag `refs/v1` points to; its config.json has other labels.
const V1: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
/// A commit in `snapshots/` that no ref points to: reachable by its hash only.
const OLD: &str = "0000000000111111111122222222223333333333";
/// What the fake Hub says `main` of a repo missing from the cache points to.
const OTHER: &str = "9999999999888888888877777777776666666666";
const FIXTURE: &str = "bert_sequence_classification";
const FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];
const MAIN_LABELS: [&str; 3] = ["negative", "neutral", "positive"];
const V1_LABELS: [&str; 3] = ["v1-bad", "v1-meh", "v1-good"];
const OLD_LABELS: [&str; 3] = ["old-a", "old-b", "old-c"];
const SUB_LABELS: [&str; 3] = ["sub-no", "sub-maybe", "sub-yes"];

/// A fresh folder under the system temp dir, removed when dropped (also when a test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "autoclass-hub-cache-{}-{tag}-{n}",
            std::process::id()
        ));
        if path.exists() {
            std::fs::remove_dir_all(&path).unwrap();
        }
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A stand-in for a blob's etag: 64 hex digits derived from the content (FNV-1a with four seeds),
/// so equal contents share a blob as they do in a real cache.
fn blob_name(content: &[u8]) -> String {
    let mut out = String::new();
    for seed in 0u64..4 {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for &b in content {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// One repo folder of the cache, written as huggingface_hub writes it.
struct Repo {
    dir: PathBuf,
}

impl Repo {
    fn new(cache: &Path, repo_id: &str) -> Self {
        let dir = cache.join(autoclass::hub::repo_folder_name(repo_id));
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::create_dir_all(dir.join("snapshots")).unwrap();
        Repo { dir }
    }

    /// `blobs/<sha>` holds the bytes; `snapshots/<commit>/<path>` is a relative symlink to it.
    fn add_file(&self, commit: &str, path_in_repo: &str, content: &[u8]) {
        let sha = blob_name(content);
        let blob = self.dir.join("blobs").join(&sha);
        if !blob.exists() {
            std::fs::write(&blob, content).unwrap();
        }
        let link = self.dir.join("snapshots").join(commit).join(path_in_repo);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        // `snapshots/<commit>/a` -> `../../blobs/<sha>`, `snapshots/<commit>/sub/a` -> `../../../blobs/<sha>`.
        let depth = path_in_repo.split('/').count();
        let target = format!("{}blobs/{sha}", "../".repeat(depth + 1));
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // huggingface_hub copies the blob where symlinks are not available.
        #[cfg(not(unix))]
        std::fs::copy(&blob, &link).unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), content, "{}", link.display());
    }

    /// `refs/<name>` holds the commit hash, written with no trailing newline.
    fn set_ref(&self, name: &str, content: &str) {
        std::fs::write(self.dir.join("refs").join(name), content).unwrap();
    }

    /// `.no_exist/<commit>/<path>`: an empty marker for a file known to be absent at `commit`.
    fn mark_missing(&self, commit: &str, path_in_repo: &str) {
        let marker = self.dir.join(".no_exist").join(commit).join(path_in_repo);
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(marker, b"").unwrap();
    }
}

fn fixture_file(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(FIXTURE).join(name)).unwrap()
}

/// The fixture's config.json with `id2label` replaced by `labels`.
fn config_with_labels(labels: &[&str; 3]) -> Vec<u8> {
    let mut config: Value = serde_json::from_slice(&fixture_file("config.json")).unwrap();
    let id2label: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), Value::String((*l).to_string())))
        .collect();
    config["id2label"] = Value::Object(id2label);
    serde_json::to_vec_pretty(&config).unwrap()
}

/// The fixture's tokenizer_config.json with another `model_max_length`.
fn tokenizer_config_with_max_length(max: u64) -> Vec<u8> {
    let mut config: Value = serde_json::from_slice(&fixture_file("tokenizer_config.json")).unwrap();
    config["model_max_length"] = Value::from(max);
    serde_json::to_vec_pretty(&config).unwrap()
}

/// Builds `<root>/hub` holding `org/name`:
/// * commit MAIN (`refs/main`): the fixture files, plus `sub/` with the same files except a
///   config.json labelled SUB_LABELS and a tokenizer_config.json with model_max_length 32,
///   plus README.md; `.no_exist` markers for vocab.txt, README.md and sub/vocab.txt;
/// * commit V1 (`refs/v1`): the fixture files with a config.json labelled V1_LABELS;
/// * commit OLD (no ref): the fixture files with a config.json labelled OLD_LABELS;
/// * `refs/newline`: MAIN followed by "\n".
fn build_cache(root: &Path) -> PathBuf {
    let cache = root.join("hub");
    let repo = Repo::new(&cache, REPO);
    for file in FILES {
        repo.add_file(MAIN, file, &fixture_file(file));
        let sub_content = match file {
            "config.json" => config_with_labels(&SUB_LABELS),
            "tokenizer_config.json" => tokenizer_config_with_max_length(32),
            _ => fixture_file(file),
        };
        repo.add_file(MAIN, &format!("sub/{file}"), &sub_content);
        for (commit, labels) in [(V1, &V1_LABELS), (OLD, &OLD_LABELS)] {
            let content = match file {
                "config.json" => config_with_labels(labels),
                _ => fixture_file(file),
            };
            repo.add_file(commit, file, &content);
        }
    }
    repo.add_file(MAIN, "README.md", b"# org/name\n");
    repo.mark_missing(MAIN, "vocab.txt");
    repo.mark_missing(MAIN, "README.md");
    repo.mark_missing(MAIN, "sub/vocab.txt");
    repo.set_ref("main", MAIN);
    repo.set_ref("v1", V1);
    repo.set_ref("newline", &format!("{MAIN}\n"));
    cache
}

/// Cache-only options that do not depend on the environment.
fn hub(cache: &Path) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        local_files_only: true,
        ..Default::default()
    }
}

fn hub_at(cache: &Path, revision: &str) -> HubOptions {
    HubOptions {
        revision: Some(revision.to_string()),
        ..hub(cache)
    }
}

fn labels(config: &autoclass::Config) -> Vec<&str> {
    config.id2label.values().map(String::as_str).collect()
}

fn expected_labels(labels: &[&str; 3]) -> BTreeMap<usize, String> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i, (*l).to_string()))
        .collect()
}

fn snapshot(cache: &Path, commit: &str) -> PathBuf {
    cache.join(REPO_DIR).join("snapshots").join(commit)
}

/// The fixture's reference inputs as a batch, and its reference logits.
fn reference_batch() -> (Batch, Tensor) {
    let path = fixtures().join(FIXTURE).join("expected.safetensors");
    let mut tensors = autoclass::candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut batch = Batch::new();
    for key in ["input_ids", "attention_mask", "token_type_ids"] {
        batch.insert(key, tensors.remove(key).unwrap());
    }
    (batch, tensors.remove("logits").unwrap())
}

fn logits(name_or_path: &str, options: &LoadOptions, batch: &Batch) -> Tensor {
    let model = AutoModelForSequenceClassification::from_pretrained_with(name_or_path, options)
        .unwrap_or_else(|e| panic!("{name_or_path}: {e}"));
    assert_eq!(model.class_name(), "BertForSequenceClassification");
    let info = model.loading_info();
    assert!(info.missing.is_empty(), "missing {:?}", info.missing);
    assert!(
        info.unexpected.is_empty(),
        "unexpected {:?}",
        info.unexpected
    );
    model.forward(batch).unwrap().get("logits").unwrap().clone()
}

fn assert_not_cached(result: autoclass::Result<impl std::fmt::Debug>, what: &str) {
    match result {
        Err(e @ Error::NotCached { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("We couldn't connect to 'https://huggingface.co'"),
                "{what}: {msg}"
            );
        }
        other => panic!("{what}: expected Error::NotCached, got {other:?}"),
    }
}

#[test]
fn main_ref_resolves_to_its_snapshot() {
    let tmp = TempDir::new("main");
    let cache = build_cache(tmp.path());

    // The cache as huggingface_hub writes it: relative symlinks into blobs/, refs without newline.
    #[cfg(unix)]
    {
        let link = snapshot(&cache, MAIN).join("config.json");
        let target = std::fs::read_link(&link).unwrap();
        assert!(target.is_relative(), "{}", target.display());
        assert!(target.starts_with("../../blobs"), "{}", target.display());
        let sub_target =
            std::fs::read_link(snapshot(&cache, MAIN).join("sub/config.json")).unwrap();
        assert!(
            sub_target.starts_with("../../../blobs"),
            "{}",
            sub_target.display()
        );
    }
    assert_eq!(
        std::fs::read(cache.join(REPO_DIR).join("refs/main")).unwrap(),
        MAIN.as_bytes()
    );

    let checkpoint = Checkpoint::resolve(REPO, &hub(&cache)).unwrap();
    assert_eq!(checkpoint.name(), REPO);
    assert_eq!(checkpoint.revision(), "main");
    assert_eq!(checkpoint.dir(), Some(snapshot(&cache, MAIN)));
    // Paths point into the snapshot (the symlink), as try_to_load_from_cache returns them.
    for file in FILES {
        let path = checkpoint.get(file).unwrap().unwrap();
        assert_eq!(path, snapshot(&cache, MAIN).join(file));
        assert_eq!(std::fs::read(&path).unwrap(), fixture_file(file));
        assert_eq!(checkpoint.require(file).unwrap(), path);
    }
    assert_eq!(checkpoint.get("pytorch_model.bin").unwrap(), None);
    assert!(matches!(
        checkpoint.get("../refs/main"),
        Err(Error::Input { .. })
    ));

    let config = AutoConfig::from_pretrained_with(REPO, &hub(&cache), &Default::default()).unwrap();
    assert_eq!(config.id2label, expected_labels(&MAIN_LABELS));
    assert_eq!(config.model_type, "bert");

    // Explicit "main" is the same as the default.
    let config =
        AutoConfig::from_pretrained_with(REPO, &hub_at(&cache, "main"), &Default::default())
            .unwrap();
    assert_eq!(labels(&config), MAIN_LABELS);
}

#[test]
fn tag_and_commit_revisions() {
    let tmp = TempDir::new("revisions");
    let cache = build_cache(tmp.path());

    // A tag ref pointing to another commit.
    let checkpoint = Checkpoint::resolve(REPO, &hub_at(&cache, "v1")).unwrap();
    assert_eq!(checkpoint.revision(), "v1");
    assert_eq!(checkpoint.dir(), Some(snapshot(&cache, V1)));
    let config =
        AutoConfig::from_pretrained_with(REPO, &hub_at(&cache, "v1"), &Default::default()).unwrap();
    assert_eq!(labels(&config), V1_LABELS);

    // A commit hash is used directly, with or without a ref pointing to it.
    for (commit, expected) in [(V1, V1_LABELS), (MAIN, MAIN_LABELS), (OLD, OLD_LABELS)] {
        let checkpoint = Checkpoint::resolve(REPO, &hub_at(&cache, commit)).unwrap();
        assert_eq!(checkpoint.dir(), Some(snapshot(&cache, commit)));
        let config =
            AutoConfig::from_pretrained_with(REPO, &hub_at(&cache, commit), &Default::default())
                .unwrap();
        assert_eq!(labels(&config), expected, "revision {commit}");
    }

    // The revision reaches the model loader too.
    let options = LoadOptions {
        hub: hub_at(&cache, "v1"),
        ..Default::default()
    };
    let model = AutoModelForSequenceClassification::from_pretrained_with(REPO, &options).unwrap();
    assert_eq!(model.config().id2label, expected_labels(&V1_LABELS));
    assert_eq!(model.config().label(2), "v1-good");
}

#[test]
fn subfolder_resolves_inside_the_snapshot() {
    let tmp = TempDir::new("subfolder");
    let cache = build_cache(tmp.path());
    let options = HubOptions {
        subfolder: Some("sub".to_string()),
        ..hub(&cache)
    };

    let checkpoint = Checkpoint::resolve(REPO, &options).unwrap();
    assert_eq!(checkpoint.dir(), Some(snapshot(&cache, MAIN).join("sub")));
    assert_eq!(
        checkpoint.get("config.json").unwrap(),
        Some(snapshot(&cache, MAIN).join("sub/config.json"))
    );
    // The top-level README.md is not inside the subfolder.
    assert_eq!(checkpoint.get("README.md").unwrap(), None);
    // `.no_exist/<commit>/sub/vocab.txt`.
    assert_eq!(checkpoint.get("vocab.txt").unwrap(), None);

    let config = AutoConfig::from_pretrained_with(REPO, &options, &Default::default()).unwrap();
    assert_eq!(labels(&config), SUB_LABELS);

    let tokenizer = AutoTokenizer::from_pretrained_with(REPO, &options).unwrap();
    assert_eq!(tokenizer.model_max_length(), Some(32));
    let top = AutoTokenizer::from_pretrained_with(REPO, &hub(&cache)).unwrap();
    assert_eq!(top.model_max_length(), Some(64));

    let (batch, expected) = reference_batch();
    let load = LoadOptions {
        hub: options.clone(),
        ..Default::default()
    };
    let model = AutoModelForSequenceClassification::from_pretrained_with(REPO, &load).unwrap();
    assert_eq!(model.config().label(0), "sub-no");
    assert_close(
        "sub/logits",
        model.forward(&batch).unwrap().get("logits").unwrap(),
        &expected,
        1e-4,
    );

    // An empty subfolder means none.
    let empty = HubOptions {
        subfolder: Some(String::new()),
        ..hub(&cache)
    };
    let config = AutoConfig::from_pretrained_with(REPO, &empty, &Default::default()).unwrap();
    assert_eq!(labels(&config), MAIN_LABELS);
}

#[test]
fn no_exist_marker_means_missing() {
    let tmp = TempDir::new("no-exist");
    let cache = build_cache(tmp.path());
    let checkpoint = Checkpoint::resolve(REPO, &hub(&cache)).unwrap();

    // A marker for a file absent from the snapshot.
    assert_eq!(checkpoint.get("vocab.txt").unwrap(), None);
    // The marker is consulted before the snapshot, as in try_to_load_from_cache: README.md is in
    // the snapshot, but `.no_exist/<MAIN>/README.md` says it is not at that commit.
    assert!(snapshot(&cache, MAIN).join("README.md").is_file());
    assert_eq!(checkpoint.get("README.md").unwrap(), None);
    match checkpoint.require("README.md") {
        Err(e @ Error::MissingFile { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("org/name does not appear to have a file named README.md"),
                "{msg}"
            );
            assert!(
                msg.contains("https://huggingface.co/org/name/tree/main"),
                "{msg}"
            );
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    // Markers belong to one commit: V1 has no marker (and no file) for README.md.
    let v1 = Checkpoint::resolve(REPO, &hub_at(&cache, "v1")).unwrap();
    assert_eq!(v1.get("README.md").unwrap(), None);
    assert!(v1.get("config.json").unwrap().is_some());

    // A marker on a file the loader needs makes it unavailable.
    let repo = Repo {
        dir: cache.join(REPO_DIR),
    };
    repo.mark_missing(V1, "model.safetensors");
    let options = LoadOptions {
        hub: hub_at(&cache, "v1"),
        ..Default::default()
    };
    match AutoModelForSequenceClassification::from_pretrained_with(REPO, &options) {
        Err(Error::NoWeights { name }) => assert_eq!(name, REPO),
        Err(e) => panic!("expected NoWeights, got {e}"),
        Ok(_) => panic!("expected NoWeights, got a model"),
    }
}

#[test]
fn not_cached_errors() {
    let tmp = TempDir::new("not-cached");
    let cache = build_cache(tmp.path());

    // A repo id that is not in the cache.
    assert_not_cached(
        Checkpoint::resolve("org/other", &hub(&cache)),
        "unknown repo",
    );
    assert_not_cached(
        AutoConfig::from_pretrained_with("other-model", &hub(&cache), &Default::default()),
        "unknown repo without org",
    );
    assert_not_cached(
        AutoTokenizer::from_pretrained_with("org/other", &hub(&cache)),
        "unknown repo (tokenizer)",
    );
    let options = LoadOptions {
        hub: hub(&cache),
        ..Default::default()
    };
    assert_not_cached(
        AutoModelForSequenceClassification::from_pretrained_with("org/other", &options).map(|_| ()),
        "unknown repo (model)",
    );
    // An empty cache folder, and one that does not exist at all.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_not_cached(Checkpoint::resolve(REPO, &hub(&empty)), "empty cache");
    assert_not_cached(
        Checkpoint::resolve(REPO, &hub(&tmp.path().join("nowhere"))),
        "missing cache",
    );

    // Unknown revisions: a branch without a ref, a commit without a snapshot, and an upper-case
    // hash (not a commit hash to huggingface_hub, so looked up as a ref name).
    for revision in [
        "v2",
        "dev",
        "ffffffffffffffffffffffffffffffffffffffff",
        &MAIN.to_uppercase(),
        &MAIN[..39],
    ] {
        let result = Checkpoint::resolve(REPO, &hub_at(&cache, revision));
        match &result {
            Err(Error::NotCached {
                repo_id,
                revision: r,
                cache: c,
                ..
            }) => {
                assert_eq!(repo_id, REPO);
                assert_eq!(r, revision);
                assert_eq!(c, &cache);
            }
            other => panic!("revision {revision}: expected NotCached, got {other:?}"),
        }
        assert_not_cached(result, revision);
    }

    // A ref read verbatim: a trailing newline is not stripped, so the lookup fails.
    assert_eq!(
        std::fs::read_to_string(cache.join(REPO_DIR).join("refs/newline")).unwrap(),
        format!("{MAIN}\n")
    );
    assert_not_cached(
        Checkpoint::resolve(REPO, &hub_at(&cache, "newline")),
        "ref with trailing newline",
    );
    assert_not_cached(
        AutoConfig::from_pretrained_with(REPO, &hub_at(&cache, "newline"), &Default::default()),
        "ref with trailing newline (config)",
    );
    // The same ref without the newline works.
    Repo {
        dir: cache.join(REPO_DIR),
    }
    .set_ref("newline", MAIN);
    assert_eq!(
        Checkpoint::resolve(REPO, &hub_at(&cache, "newline"))
            .unwrap()
            .dir(),
        Some(snapshot(&cache, MAIN))
    );

    // A ref to a commit whose snapshot is gone.
    Repo {
        dir: cache.join(REPO_DIR),
    }
    .set_ref("dangling", "9999999999999999999999999999999999999999");
    assert_not_cached(
        Checkpoint::resolve(REPO, &hub_at(&cache, "dangling")),
        "dangling ref",
    );
}

#[test]
fn not_found_errors() {
    let tmp = TempDir::new("not-found");
    let cache = build_cache(tmp.path());

    // Neither a folder nor a valid repo id.
    for name in [
        "./does/not/exist",
        "../nope",
        "a/b/c",
        "org--x/name",
        "-bad/name",
    ] {
        match Checkpoint::resolve(name, &hub(&cache)) {
            Err(e @ Error::NotFound { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!(
                        "{name} is not a local folder and is not a valid model identifier"
                    )),
                    "{msg}"
                );
                assert!(msg.contains("'https://huggingface.co/models'"), "{msg}");
            }
            other => panic!("{name}: expected NotFound, got {other:?}"),
        }
    }
    match AutoConfig::from_pretrained_with("./does/not/exist", &hub(&cache), &Default::default()) {
        Err(e @ Error::NotFound { .. }) => assert!(
            e.to_string()
                .contains("is not a local folder and is not a valid model identifier"),
            "{e}"
        ),
        other => panic!("expected NotFound, got {other:?}"),
    }

    // A local folder wins over the cache, and one without config.json says so.
    let folder = tmp.path().join("no-config");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("tokenizer.json"),
        fixture_file("tokenizer.json"),
    )
    .unwrap();
    let name = folder.to_str().unwrap();
    let checkpoint = Checkpoint::resolve(name, &hub(&cache)).unwrap();
    assert_eq!(checkpoint.dir(), Some(folder.clone()));
    assert_eq!(
        checkpoint.get("tokenizer.json").unwrap(),
        Some(folder.join("tokenizer.json"))
    );
    match AutoConfig::from_pretrained_with(name, &hub(&cache), &Default::default()) {
        Err(e @ Error::MissingFile { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!(
                    "{name} does not appear to have a file named config.json"
                )),
                "{msg}"
            );
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    let options = LoadOptions {
        hub: hub(&cache),
        ..Default::default()
    };
    match AutoModelForSequenceClassification::from_pretrained_with(name, &options) {
        Err(e) => assert!(
            e.to_string()
                .contains("does not appear to have a file named config.json"),
            "{e}"
        ),
        Ok(_) => panic!("loaded a model from a folder without config.json"),
    }
}

#[test]
fn model_through_cache_matches_fixture_folder() {
    let tmp = TempDir::new("model");
    let cache = build_cache(tmp.path());
    let (batch, expected) = reference_batch();
    let through_cache = LoadOptions {
        hub: hub(&cache),
        ..Default::default()
    };
    let cached = logits(REPO, &through_cache, &batch);
    let folder = fixtures().join(FIXTURE);
    let direct = logits(folder.to_str().unwrap(), &LoadOptions::default(), &batch);
    assert_close("cache vs expected", &cached, &expected, 1e-4);
    assert_close("cache vs folder", &cached, &direct, 1e-4);
    // The same weights under the tag and under a bare commit hash.
    for revision in ["v1", OLD] {
        let options = LoadOptions {
            hub: hub_at(&cache, revision),
            ..Default::default()
        };
        let other = logits(REPO, &options, &batch);
        assert_close(revision, &other, &expected, 1e-4);
    }

    // The tokenizer through the cache reproduces the reference ids.
    let case = case(FIXTURE);
    let tokenizer = AutoTokenizer::from_pretrained_with(REPO, &hub(&cache)).unwrap();
    assert_eq!(tokenizer.class_name(), "BertTokenizer");
    let texts = strings(&case["texts"]);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pairs = strings(&case["text_pairs"]);
    let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
    let encoding = tokenizer
        .encode_batch(&texts, Some(&pairs), &encode_options(&case))
        .unwrap();
    let encoded = encoding.to_batch(&Device::Cpu).unwrap();
    for key in ["input_ids", "attention_mask", "token_type_ids"] {
        assert_ids(key, encoded.get(key).unwrap(), batch.get(key).unwrap());
    }
    let tokenized = logits(REPO, &through_cache, &encoded);
    assert_close("tokenized through cache", &tokenized, &expected, 1e-4);
}

/// Records every download request and answers "the Hub does not have it"; revisions resolve to
/// what the cache's refs hold (`OTHER` for repos it lacks), as the Hub would answer.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(PathBuf, String, String, String)>>,
}

impl Recorder {
    fn take(&self) -> Vec<(PathBuf, String, String, String)> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Downloader for Recorder {
    fn resolve_revision(
        &self,
        cache_dir: &Path,
        repo_id: &str,
        revision: &str,
    ) -> autoclass::Result<String> {
        let refs = cache_dir
            .join(autoclass::hub::repo_folder_name(repo_id))
            .join("refs")
            .join(revision);
        Ok(std::fs::read_to_string(refs).unwrap_or_else(|_| OTHER.to_string()))
    }

    fn download(
        &self,
        cache_dir: &Path,
        repo_id: &str,
        revision: &str,
        filename: &str,
    ) -> autoclass::Result<Option<PathBuf>> {
        self.calls.lock().unwrap().push((
            cache_dir.to_path_buf(),
            repo_id.to_string(),
            revision.to_string(),
            filename.to_string(),
        ));
        Ok(None)
    }
}

const ENV_VARS: [&str; 8] = [
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HOME",
    "XDG_CACHE_HOME",
    "HOME",
    "USERPROFILE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
];

/// Restores the variables it saved when dropped, also when the test panics.
struct SavedEnv(Vec<(&'static str, Option<OsString>)>);

impl SavedEnv {
    fn save() -> Self {
        SavedEnv(
            ENV_VARS
                .iter()
                .map(|&name| (name, std::env::var_os(name)))
                .collect(),
        )
    }
}

impl Drop for SavedEnv {
    fn drop(&mut self) {
        for (name, value) in &self.0 {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
    }
}

fn set_env(vars: &[(&str, Option<&str>)]) {
    for (name, value) in vars {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }
}

/// Every environment check lives here: the environment is process-wide and tests run in
/// parallel, so no other test in this file reads it (they pass `cache_dir` and
/// `local_files_only`).
#[test]
fn environment_variables() {
    let _saved = SavedEnv::save();
    let tmp = TempDir::new("env");
    let root = tmp.path();
    let p = |s: &str| root.join(s);
    for name in ENV_VARS {
        std::env::remove_var(name);
    }

    // --- default_cache_dir: HF_HUB_CACHE > HUGGINGFACE_HUB_CACHE > HF_HOME/hub >
    //     XDG_CACHE_HOME/huggingface/hub > ~/.cache/huggingface/hub.
    std::env::set_var("HOME", p("home"));
    assert_eq!(default_cache_dir(), p("home/.cache/huggingface/hub"));
    std::env::set_var("XDG_CACHE_HOME", p("xdg"));
    assert_eq!(default_cache_dir(), p("xdg/huggingface/hub"));
    std::env::set_var("HF_HOME", p("hf-home"));
    assert_eq!(default_cache_dir(), p("hf-home/hub"));
    // HF_HOME is expanded like os.path.expanduser.
    std::env::set_var("HF_HOME", "~/my-hf");
    assert_eq!(default_cache_dir(), p("home/my-hf/hub"));
    std::env::set_var("HUGGINGFACE_HUB_CACHE", p("legacy"));
    assert_eq!(default_cache_dir(), p("legacy"));
    std::env::set_var("HF_HUB_CACHE", p("hub-cache"));
    assert_eq!(default_cache_dir(), p("hub-cache"));
    std::env::set_var("HF_HUB_CACHE", "~/tilde-cache");
    assert_eq!(default_cache_dir(), p("home/tilde-cache"));
    // Removing the higher ones falls back in order.
    std::env::remove_var("HF_HUB_CACHE");
    assert_eq!(default_cache_dir(), p("legacy"));
    std::env::remove_var("HUGGINGFACE_HUB_CACHE");
    assert_eq!(default_cache_dir(), p("home/my-hf/hub"));
    std::env::remove_var("HF_HOME");
    assert_eq!(default_cache_dir(), p("xdg/huggingface/hub"));
    std::env::remove_var("XDG_CACHE_HOME");
    assert_eq!(default_cache_dir(), p("home/.cache/huggingface/hub"));

    // The default cache is where a resolve without `cache_dir` looks.
    let cache = build_cache(&p("via-env"));
    std::env::set_var("HF_HUB_CACHE", &cache);
    let default_hub = HubOptions {
        local_files_only: true,
        ..Default::default()
    };
    let checkpoint = Checkpoint::resolve(REPO, &default_hub).unwrap();
    assert_eq!(checkpoint.dir(), Some(snapshot(&cache, MAIN)));
    let config = AutoConfig::from_pretrained_with(REPO, &default_hub, &Default::default()).unwrap();
    assert_eq!(labels(&config), MAIN_LABELS);
    // ... found through HF_HOME/hub as well.
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", p("via-env"));
    assert_eq!(
        Checkpoint::resolve(REPO, &default_hub).unwrap().dir(),
        Some(snapshot(&cache, MAIN))
    );
    // An explicit cache_dir overrides the environment.
    std::env::set_var("HF_HUB_CACHE", p("elsewhere"));
    assert_not_cached(
        Checkpoint::resolve(REPO, &default_hub),
        "HF_HUB_CACHE elsewhere",
    );
    assert_eq!(
        Checkpoint::resolve(REPO, &hub(&cache)).unwrap().dir(),
        Some(snapshot(&cache, MAIN))
    );
    set_env(&[("HF_HUB_CACHE", None), ("HF_HOME", None)]);

    // --- offline_mode: _is_true(HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE).
    assert!(!offline_mode());
    for truthy in ["1", "ON", "on", "YES", "yes", "TRUE", "true", "True"] {
        set_env(&[
            ("HF_HUB_OFFLINE", Some(truthy)),
            ("TRANSFORMERS_OFFLINE", None),
        ]);
        assert!(offline_mode(), "HF_HUB_OFFLINE={truthy}");
        set_env(&[
            ("HF_HUB_OFFLINE", None),
            ("TRANSFORMERS_OFFLINE", Some(truthy)),
        ]);
        assert!(offline_mode(), "TRANSFORMERS_OFFLINE={truthy}");
    }
    for falsy in ["0", "OFF", "no", "false", "2", " 1", "y"] {
        set_env(&[
            ("HF_HUB_OFFLINE", Some(falsy)),
            ("TRANSFORMERS_OFFLINE", None),
        ]);
        assert!(!offline_mode(), "HF_HUB_OFFLINE={falsy:?}");
        set_env(&[
            ("HF_HUB_OFFLINE", None),
            ("TRANSFORMERS_OFFLINE", Some(falsy)),
        ]);
        assert!(!offline_mode(), "TRANSFORMERS_OFFLINE={falsy:?}");
    }
    // Python's `or`: a non-empty HF_HUB_OFFLINE, even "0", shadows TRANSFORMERS_OFFLINE ...
    set_env(&[
        ("HF_HUB_OFFLINE", Some("0")),
        ("TRANSFORMERS_OFFLINE", Some("1")),
    ]);
    assert!(!offline_mode());
    set_env(&[
        ("HF_HUB_OFFLINE", Some("false")),
        ("TRANSFORMERS_OFFLINE", Some("1")),
    ]);
    assert!(!offline_mode());
    set_env(&[
        ("HF_HUB_OFFLINE", Some("1")),
        ("TRANSFORMERS_OFFLINE", Some("0")),
    ]);
    assert!(offline_mode());
    // ... while an empty one falls through to it.
    set_env(&[
        ("HF_HUB_OFFLINE", Some("")),
        ("TRANSFORMERS_OFFLINE", Some("1")),
    ]);
    assert!(offline_mode());
    set_env(&[
        ("HF_HUB_OFFLINE", Some("")),
        ("TRANSFORMERS_OFFLINE", Some("")),
    ]);
    assert!(!offline_mode());

    // --- offline mode acts like local_files_only.
    let missing = HubOptions {
        cache_dir: Some(cache.clone()),
        ..Default::default()
    };
    set_env(&[("HF_HUB_OFFLINE", None), ("TRANSFORMERS_OFFLINE", None)]);
    // Online without a downloader: the repo cannot be found.
    assert!(
        matches!(
            Checkpoint::resolve("org/other", &missing),
            Err(Error::NotFound { .. })
        ),
        "online, no downloader"
    );
    set_env(&[("HF_HUB_OFFLINE", Some("1"))]);
    assert_not_cached(
        Checkpoint::resolve("org/other", &missing),
        "HF_HUB_OFFLINE=1",
    );
    set_env(&[
        ("HF_HUB_OFFLINE", None),
        ("TRANSFORMERS_OFFLINE", Some("yes")),
    ]);
    assert_not_cached(
        Checkpoint::resolve("org/other", &missing),
        "TRANSFORMERS_OFFLINE=yes",
    );
    set_env(&[
        ("HF_HUB_OFFLINE", Some("0")),
        ("TRANSFORMERS_OFFLINE", Some("1")),
    ]);
    assert!(
        matches!(
            Checkpoint::resolve("org/other", &missing),
            Err(Error::NotFound { .. })
        ),
        "HF_HUB_OFFLINE=0 shadows TRANSFORMERS_OFFLINE=1"
    );

    // --- with a downloader: the revision is resolved to a commit once, files neither cached nor
    // marked missing at that commit are fetched pinned to it, and offline mode (env or
    // local_files_only) never fetches.
    set_env(&[("HF_HUB_OFFLINE", None), ("TRANSFORMERS_OFFLINE", None)]);
    let recorder = Arc::new(Recorder::default());
    let online = HubOptions {
        cache_dir: Some(cache.clone()),
        downloader: Some(recorder.clone()),
        ..Default::default()
    };
    let checkpoint = Checkpoint::resolve(REPO, &online).unwrap();
    assert!(checkpoint.get("config.json").unwrap().is_some());
    assert_eq!(checkpoint.get("vocab.txt").unwrap(), None);
    assert!(
        recorder.take().is_empty(),
        "cached or .no_exist files are not fetched"
    );
    assert_eq!(checkpoint.get("added_tokens.json").unwrap(), None);
    assert_eq!(
        recorder.take(),
        vec![(
            cache.clone(),
            REPO.to_string(),
            MAIN.to_string(),
            "added_tokens.json".to_string()
        )]
    );
    let sub = HubOptions {
        subfolder: Some("sub".to_string()),
        revision: Some("v1".to_string()),
        ..online.clone()
    };
    let checkpoint = Checkpoint::resolve(REPO, &sub).unwrap();
    assert_eq!(checkpoint.get("config.json").unwrap(), None);
    assert_eq!(
        recorder.take(),
        vec![(
            cache.clone(),
            REPO.to_string(),
            V1.to_string(),
            "sub/config.json".to_string()
        )]
    );
    // A repo not in the cache resolves (to be downloaded) when online.
    let checkpoint = Checkpoint::resolve("org/other", &online).unwrap();
    assert_eq!(
        checkpoint.dir(),
        Some(cache.join("models--org--other/snapshots").join(OTHER))
    );
    assert_eq!(checkpoint.get("config.json").unwrap(), None);
    assert_eq!(recorder.take().len(), 1);
    // Offline: no fetch, and an uncached repo is an error.
    for (var, value) in [("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "true")] {
        set_env(&[
            ("HF_HUB_OFFLINE", None),
            ("TRANSFORMERS_OFFLINE", None),
            (var, Some(value)),
        ]);
        let checkpoint = Checkpoint::resolve(REPO, &online).unwrap();
        assert_eq!(checkpoint.get("added_tokens.json").unwrap(), None);
        assert!(recorder.take().is_empty(), "{var}={value}: fetched offline");
        assert_not_cached(Checkpoint::resolve("org/other", &online), var);
    }
    set_env(&[("HF_HUB_OFFLINE", None), ("TRANSFORMERS_OFFLINE", None)]);
    let local_only = HubOptions {
        local_files_only: true,
        ..online.clone()
    };
    let checkpoint = Checkpoint::resolve(REPO, &local_only).unwrap();
    assert_eq!(checkpoint.get("added_tokens.json").unwrap(), None);
    assert!(recorder.take().is_empty(), "local_files_only: fetched");
    assert_not_cached(
        Checkpoint::resolve("org/other", &local_only),
        "local_files_only",
    );
}

/// A cached repo with only `tf_model.h5`: transformers 4.x's Hub wording of the "Use
/// `from_tf=True`" error, and `from_tf` loads it.
#[test]
fn tf_only_repo_in_the_cache() {
    let tmp = TempDir::new("tf-only");
    let cache = tmp.path().join("hub");
    let repo_id = "org/tf-only";
    let repo = Repo::new(&cache, repo_id);
    let src = fixtures().join("weights/tf_flax/tf_only");
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tf_model.h5",
    ] {
        repo.add_file(MAIN, file, &std::fs::read(src.join(file)).unwrap());
    }
    repo.set_ref("main", MAIN);
    let options = LoadOptions {
        hub: hub(&cache),
        ..Default::default()
    };
    let err = AutoModelForSequenceClassification::from_pretrained_with(repo_id, &options)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "org/tf-only does not appear to have a file named pytorch_model.bin but there is a file for \
         TensorFlow weights. Use `from_tf=True` to load this model from those weights."
    );
    let options = LoadOptions {
        from_tf: true,
        ..options
    };
    let (batch, expected) = reference_batch();
    let got = logits(repo_id, &options, &batch);
    assert_close("tf-only via cache", &got, &expected, 1e-4);
}
