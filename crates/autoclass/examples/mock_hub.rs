//! Serves the tiny fixture checkpoints as a mock Hugging Face Hub on 127.0.0.1 until killed,
//! for `tests/fixtures/hub/check_interop.py` (Python's huggingface_hub against the same server
//! the Rust tests use). Prints `HUB http://127.0.0.1:PORT` once listening.
//!
//! `cargo run -p autoclass --example mock_hub [-- PORT]`; repos: `org/name`
//! (bert_sequence_classification), `org/sharded` (bert_sharded), `org/big` (one 3 MiB file, to
//! see the progress bar). `MOCK_HUB_THROTTLE_MS` slows the CDN (milliseconds per 8 KiB).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mock_hub.rs"]
mod mock_hub;

use std::io::Write;
use std::path::PathBuf;

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut state = mock_hub::HubState::default();
    state.repos.insert(
        "org/name".into(),
        mock_hub::MockRepo::from_dir(
            &fixtures.join("bert_sequence_classification"),
            "1111111111222222222233333333334444444444",
        )
        .with_file("README.md", b"# tiny bert for interop tests\n"),
    );
    state.repos.insert(
        "org/sharded".into(),
        mock_hub::MockRepo::from_dir(
            &fixtures.join("bert_sharded"),
            "5555555555666666666677777777778888888888",
        ),
    );
    // 3 MiB of deterministic bytes: large enough for a progress bar.
    let big: Vec<u8> = (0..3u32 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    state.repos.insert(
        "org/big".into(),
        mock_hub::MockRepo {
            commit: "9999999999aaaaaaaaaabbbbbbbbbbcccccccccc".into(),
            ..Default::default()
        }
        .with_file("big.bin", &big),
    );
    state.throttle_ms = std::env::var("MOCK_HUB_THROTTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let hub = mock_hub::MockHub::start_on(state, port, 0);
    println!("HUB {}", hub.url);
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}
