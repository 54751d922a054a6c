//! The CLI's vision contract: `run --task image-classification|backbone --image`, `preprocess`,
//! and bad images / bad stage selections as one clear error line, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

use std::path::PathBuf;

use autoclass::candle_core::Device;

fn vision(rel: &str) -> PathBuf {
    repo()
        .join("crates/autoclass/tests/fixtures/vision")
        .join(rel)
}

/// swin-tiny's committed config files plus its synthetic weights, in a scratch folder.
fn swin_tiny(tag: &str) -> PathBuf {
    let src = repo().join("checkpoints/swin-tiny-patch4-window7-224");
    let dir = std::env::temp_dir().join(format!("autoclass-cli-swin-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    autoclass::weights::synthetic::write_checkpoint(
        &src.join("weights_manifest.json"),
        &dir.join("model.safetensors"),
    )
    .unwrap();
    dir
}

/// The seed's call: `--task backbone --out-indices 1` saves `feature_maps.0` of shape
/// [1, 96, 56, 56] equal to transformers, and `pixel_values` equal to its PIL path.
#[test]
fn seed_backbone_through_the_cli() {
    let dir = swin_tiny("backbone");
    let save = dir.join("out.safetensors");
    let image = vision("images/chelsea.png");
    let out = autoclass(&[
        "run",
        s(&dir),
        "--task",
        "backbone",
        "--image",
        s(&image),
        "--out-indices",
        "1",
        "--save",
        s(&save),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("feature_maps.0: shape [1,96,56,56]"));
    let saved = autoclass::candle_core::safetensors::load(&save, &Device::Cpu).unwrap();
    let expected = autoclass::candle_core::safetensors::load(
        vision("seed_swin_tiny/expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(saved["feature_maps.0"].dims(), &[1, 96, 56, 56]);
    assert!(max_diff(&saved["pixel_values"], &expected["pixel_values"]) <= 1e-5);
    assert!(max_diff(&saved["feature_maps.0"], &expected["feature_maps.0"]) <= 1e-4);

    // image-classification prints transformers' top-5 labels.
    let out = autoclass(&[
        "run",
        s(&dir),
        "--task",
        "image-classification",
        "--image",
        s(&image),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vision("seed_swin_tiny/case.json")).unwrap())
            .unwrap();
    let ours: Vec<&str> = report["results"][0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    let theirs: Vec<&str> = case["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert_eq!(ours, theirs);
    let _ = std::fs::remove_dir_all(dir);
}

/// `preprocess` runs only the image processor and saves `pixel_values`.
#[test]
fn preprocess_saves_pixel_values() {
    let case = vision("processors/vit_google");
    let save = std::env::temp_dir().join(format!(
        "autoclass-cli-pre-{}.safetensors",
        std::process::id()
    ));
    let images = ["chelsea.png", "coffee_crop.png", "astronaut_small.png"]
        .map(|n| vision(&format!("images/{n}")));
    let mut args = vec!["preprocess", s(&case), "--save", s(&save)];
    for i in &images {
        args.extend(["--image", s(i)]);
    }
    let out = autoclass(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = autoclass::candle_core::safetensors::load(&save, &Device::Cpu).unwrap();
    let expected =
        autoclass::candle_core::safetensors::load(case.join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(max_diff(&saved["pixel_values"], &expected["pixel_values"]) <= 1e-5);
    let _ = std::fs::remove_file(save);
}

/// The tiny Swin classifier with a ViT image processor, in a scratch folder.
fn tiny_swin_with_processor(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "autoclass-cli-tinyswin-{tag}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            vision("models/swin_image_classification").join(f),
            dir.join(f),
        )
        .unwrap();
    }
    std::fs::copy(
        vision("processors/vit_google/preprocessor_config.json"),
        dir.join("preprocessor_config.json"),
    )
    .unwrap();
    dir
}

#[test]
fn bad_images() {
    let model = tiny_swin_with_processor("badimages");
    for (file, needle) in [
        ("truncated.png", "truncated.png"),
        ("garbage.jpg", "garbage.jpg"),
        ("huge_header.png", "huge_header.png"),
        ("zero_pixel.png", "zero_pixel.png"),
    ] {
        fails_with(
            &[
                "run",
                s(&model),
                "--task",
                "image-classification",
                "--image",
                s(&vision(&format!("images/{file}"))),
            ],
            needle,
        );
    }
    fails_with(
        &[
            "run",
            s(&model),
            "--task",
            "image-classification",
            "--image",
            "/no/such/image.png",
        ],
        "/no/such/image.png",
    );
    fails_with(
        &["run", s(&model), "--task", "image-classification"],
        "--image",
    );
    // A good image runs.
    let out = autoclass(&[
        "run",
        s(&model),
        "--task",
        "image-classification",
        "--image",
        s(&vision("images/chelsea.png")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(model);
}

#[test]
fn bad_stage_selections() {
    let model = tiny_swin_with_processor("stages");
    let image = vision("images/chelsea.png");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", s(&model), "--task", "backbone", "--image", s(&image)];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let call = |extra: &[&str], needle: &str| {
        let args = run(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&refs, needle);
    };
    call(
        &["--out-indices", "7"],
        "out_indices must be valid indices for stage_names ['stem', 'stage1', 'stage2'], got [7]",
    );
    call(
        &["--out-features", "stage9"],
        "out_features must be a subset of stage_names: ['stem', 'stage1', 'stage2'] got ['stage9']",
    );
    call(
        &["--out-indices", "1", "--out-features", "stage2"],
        "out_features and out_indices should correspond to the same stages if both are set",
    );
    call(
        &["--out-indices", "2,1"],
        "out_indices must be in the same order as stage_names, expected [1, 2] got [2, 1]",
    );
    // A valid selection with a negative index runs.
    let args = run(&["--out-indices", "-1", "--json"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = autoclass(&refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
