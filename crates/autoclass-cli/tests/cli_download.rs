//! The CLI against a mock Hub on 127.0.0.1: the acceptance line (`autoclass run org/name` on an
//! empty cache downloads only what it needs, then works offline with the server gone), two
//! concurrent `autoclass download` processes, `--include`, `--offline` and a gated repo.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../autoclass/tests/support/mock_hub.rs"]
mod mock_hub;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use mock_hub::{HubState, Logged, MockHub, MockRepo};

const COMMIT: &str = "1111111111222222222233333333334444444444";
const TOKEN: &str = "hf_cli_token";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../autoclass/tests/fixtures/bert_sequence_classification")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("autoclass-cli-dl-{}-{tag}-{n}", std::process::id()));
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

fn start() -> MockHub {
    let repo = MockRepo::from_dir(&fixture(), COMMIT)
        .with_file("pytorch_model.bin", b"not needed")
        .with_file("README.md", b"# not needed");
    let mut gated = repo.clone();
    gated.gated_token = Some(TOKEN.into());
    let mut state = HubState::default();
    state.repos.insert("org/name".into(), repo);
    state.repos.insert("org/gated".into(), gated);
    MockHub::start(state)
}

/// `autoclass ARGS` with this Hub and cache, online, no token unless given in `env`.
fn autoclass(args: &[&str], endpoint: &str, home: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoclass"));
    cmd.args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env("HF_HUB_CACHE", home.join("hub"))
        .env("HF_HUB_DOWNLOAD_TIMEOUT", "5")
        .env("HF_HUB_ETAG_TIMEOUT", "5")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("TRANSFORMERS_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn file_gets(log: &[Logged]) -> Vec<String> {
    let mut files: Vec<String> = log
        .iter()
        .filter(|l| l.method == "GET" && l.path.contains("/resolve/"))
        .map(|l| l.path.rsplit('/').next().unwrap().to_string())
        .collect();
    files.sort();
    files
}

fn incomplete_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(incomplete_files(&path));
        } else if path.to_string_lossy().ends_with(".incomplete") {
            found.push(path);
        }
    }
    found
}

#[test]
fn run_downloads_only_what_it_needs_then_works_offline() {
    let hub = start();
    let home = TempDir::new("accept");
    let args = [
        "run",
        "org/name",
        "--task",
        "sequence-classification",
        "--text",
        "hi",
    ];
    let local = ok(Command::new(env!("CARGO_BIN_EXE_autoclass"))
        .args(["run", fixture().to_str().unwrap()])
        .args(&args[2..])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap());
    let online = ok(autoclass(&args, &hub.url, &home.0, &[]).output().unwrap());
    assert_eq!(text(&online.stdout), text(&local.stdout));

    // Only the files the load needs were fetched (small ones from the Hub, the weights from the
    // CDN); the optional ones the repo lacks were asked with HEAD only.
    let log = hub.log();
    assert_eq!(
        file_gets(&log),
        ["config.json", "tokenizer.json", "tokenizer_config.json"]
    );
    let cdn: Vec<_> = log.iter().filter(|l| l.server == "cdn").collect();
    assert_eq!(cdn.len(), 1);
    assert!(cdn[0].path.starts_with("/blobs/"));
    assert!(!log
        .iter()
        .any(|l| l.path.contains("pytorch_model.bin") || l.path.contains("README.md")));
    let cache = home.0.join("hub/models--org--name");
    assert_eq!(
        std::fs::read_to_string(cache.join("refs/main")).unwrap(),
        COMMIT
    );
    assert!(cache
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .is_symlink());
    let endpoint = hub.url.clone();
    hub.stop();

    // The server is gone: HF_HUB_OFFLINE=1, --offline, and plain online (with a warning) all work.
    let offline = ok(
        autoclass(&args, &endpoint, &home.0, &[("HF_HUB_OFFLINE", "1")])
            .output()
            .unwrap(),
    );
    assert_eq!(text(&offline.stdout), text(&local.stdout));
    assert!(!text(&offline.stderr).contains("Could not reach"));
    let mut flag_args = args.to_vec();
    flag_args.push("--offline");
    let flagged = ok(autoclass(&flag_args, &endpoint, &home.0, &[])
        .output()
        .unwrap());
    assert_eq!(text(&flagged.stdout), text(&local.stdout));
    let unreachable = ok(autoclass(&args, &endpoint, &home.0, &[]).output().unwrap());
    assert_eq!(text(&unreachable.stdout), text(&local.stdout));
    assert!(
        text(&unreachable.stderr).contains("warning: Could not reach the Hub"),
        "{}",
        text(&unreachable.stderr)
    );
}

#[test]
fn two_concurrent_download_processes_make_one_good_blob() {
    let hub = start();
    hub.state.lock().unwrap().throttle_ms = 60;
    let home = TempDir::new("concurrent");
    let spawn = || {
        autoclass(&["download", "org/name"], &hub.url, &home.0, &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        ok(a.wait_with_output().unwrap()),
        ok(b.wait_with_output().unwrap()),
    );
    let snapshot = home.0.join("hub/models--org--name/snapshots").join(COMMIT);
    assert_eq!(text(&a.stdout).trim(), snapshot.to_str().unwrap());
    assert_eq!(text(&b.stdout).trim(), snapshot.to_str().unwrap());
    let weights = std::fs::read(fixture().join("model.safetensors")).unwrap();
    assert_eq!(
        std::fs::read(snapshot.join("model.safetensors")).unwrap(),
        weights
    );
    let blobs = std::fs::read_dir(home.0.join("hub/models--org--name/blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 6, "one blob per file");
    assert!(incomplete_files(&home.0).is_empty());
    let cdn = hub.log().iter().filter(|l| l.server == "cdn").count();
    assert_eq!(
        cdn, 2,
        "each LFS file fetched once (model.safetensors, pytorch_model.bin)"
    );
    hub.stop();
}

#[test]
fn download_include_offline_and_gated() {
    let hub = start();
    let home = TempDir::new("include");
    let out = ok(autoclass(
        &["download", "org/name", "--include", "*.json"],
        &hub.url,
        &home.0,
        &[],
    )
    .output()
    .unwrap());
    let folder = PathBuf::from(text(&out.stdout).trim());
    let mut names: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", "tokenizer.json", "tokenizer_config.json"]
    );

    // Gated: refused without a token, with transformers' message; HF_TOKEN opens it.
    let denied = autoclass(
        &["tokenize", "org/gated", "--text", "hi"],
        &hub.url,
        &home.0,
        &[],
    )
    .output()
    .unwrap();
    assert!(!denied.status.success());
    assert!(
        text(&denied.stderr).contains("error: You are trying to access a gated repo."),
        "{}",
        text(&denied.stderr)
    );
    ok(autoclass(
        &["tokenize", "org/gated", "--text", "hi"],
        &hub.url,
        &home.0,
        &[("HF_TOKEN", TOKEN)],
    )
    .output()
    .unwrap());
    // The token file under HF_HOME works as well.
    std::fs::write(home.0.join("token"), format!("{TOKEN}\n")).unwrap();
    ok(
        autoclass(&["download", "org/gated"], &hub.url, &home.0, &[])
            .output()
            .unwrap(),
    );

    // HF_HUB_OFFLINE=1 with the server up: what is cached works, and not one request is made.
    hub.clear_log();
    ok(autoclass(
        &["tokenize", "org/name", "--text", "hi"],
        &hub.url,
        &home.0,
        &[("HF_HUB_OFFLINE", "1")],
    )
    .output()
    .unwrap());
    assert!(hub.log().is_empty(), "{:?}", hub.log());

    // --offline on an uncached repo: transformers' connection message, no request.
    let out = autoclass(
        &["tokenize", "org/other", "--text", "hi", "--offline"],
        &hub.url,
        &home.0,
        &[],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("error: We couldn't connect to"));
    assert!(hub.log().is_empty());
    hub.stop();
}

#[cfg(unix)]
#[test]
fn ctrl_c_leaves_a_resumable_incomplete_blob() {
    let hub = start();
    hub.state.lock().unwrap().throttle_ms = 100;
    let home = TempDir::new("sigint");
    let weights = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let sha = mock_hub::sha256_hex(&weights);
    let blobs = home.0.join("hub/models--org--name/blobs");
    let incomplete = blobs.join(format!("{sha}.incomplete"));
    let mut child = autoclass(
        &["download", "org/name", "--include", "model.safetensors"],
        &hub.url,
        &home.0,
        &[],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Wait for some bytes, then send SIGINT as Ctrl-C does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&incomplete).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "no download started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!child.wait().unwrap().success());
    let partial = std::fs::metadata(&incomplete).unwrap().len();
    assert!(partial > 0 && partial < weights.len() as u64, "{partial}");
    assert!(!blobs.join(&sha).exists());

    // The next run resumes from there.
    hub.clear_log();
    hub.state.lock().unwrap().throttle_ms = 0;
    ok(autoclass(
        &["download", "org/name", "--include", "model.safetensors"],
        &hub.url,
        &home.0,
        &[],
    )
    .output()
    .unwrap());
    let log = hub.log();
    let cdn: Vec<_> = log.iter().filter(|l| l.server == "cdn").collect();
    assert_eq!(cdn.len(), 1);
    let range = cdn[0].header("range").unwrap();
    let start: u64 = range
        .strip_prefix("bytes=")
        .unwrap()
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert_eq!(start, partial, "{range}");
    assert_eq!(std::fs::read(blobs.join(&sha)).unwrap(), weights);
    assert!(incomplete_files(&home.0).is_empty());
    hub.stop();
}
