//! The AutoClass tutorial (`../shared/seed`, "Chargement d'instances pré-entraînées avec une
//! AutoClass"), call for call, in Rust.
//!
//! The Hub ids of the tutorial resolve through a Hugging Face cache that this example lays out
//! under `target/seed-tour-cache/` from the checkpoints bundled in `checkpoints/`, exactly as
//! huggingface_hub lays it out (refs/main → snapshots/<commit>/ → blobs), with
//! `HF_HUB_OFFLINE=1`. bert-base-uncased's tokenizer is the real one; the DistilBERT weights are a
//! tiny random stand-in and swin-tiny's weights are regenerated synthetic ones (see
//! `checkpoints/swin-tiny-patch4-window7-224/SYNTHETIC_WEIGHTS.md`), so the numbers are
//! meaningless, but the calls and the shapes are the tutorial's.
//!
//! Run: `cargo run -p autoclass --example seed_tour`

use std::path::{Path, PathBuf};

use autoclass::image::AutoImageProcessor;
use autoclass::weights::synthetic;
use autoclass::{
    AutoBackbone, AutoModelForSequenceClassification, AutoModelForTokenClassification,
    AutoTokenizer, EncodeOptions, LoadOptions, Result,
};
use autoclass::{AutoFeatureExtractor, AutoProcessor};

const COMMIT: &str = "0000000000000000000000000000000000a11c1a";

/// Lays out `models--{org}--{name}` for `repo_id` with the files of `source`.
fn cache_repo(cache: &Path, repo_id: &str, source: &Path) -> std::io::Result<()> {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot)?;
    std::fs::create_dir_all(repo.join("blobs"))?;
    std::fs::create_dir_all(repo.join("refs"))?;
    std::fs::write(repo.join("refs").join("main"), COMMIT)?;
    for entry in std::fs::read_dir(source)? {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        let skip = name.to_string_lossy().ends_with(".md")
            || name.to_string_lossy().starts_with("weights_");
        if !path.is_file() || skip {
            continue;
        }
        let blob = repo.join("blobs").join(format!(
            "{}-{}",
            repo_id.replace('/', "--"),
            name.to_string_lossy()
        ));
        std::fs::copy(&path, &blob)?;
        let link = snapshot.join(name);
        let _ = std::fs::remove_file(&link);
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(blob.file_name().unwrap_or_default()),
            &link,
        )?;
        #[cfg(not(unix))]
        std::fs::copy(&blob, &link)?;
    }
    Ok(())
}

fn setup() -> std::io::Result<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let cache = root.join("target").join("seed-tour-cache");
    let bundled = root.join("checkpoints");
    cache_repo(
        &cache,
        "google-bert/bert-base-uncased",
        &bundled.join("bert-base-uncased"),
    )?;
    cache_repo(
        &cache,
        "distilbert/distilbert-base-uncased",
        &bundled.join("tiny-distilbert-base-uncased"),
    )?;
    cache_repo(
        &cache,
        "google/vit-base-patch16-224",
        &bundled.join("vit-base-patch16-224"),
    )?;
    cache_repo(
        &cache,
        "microsoft/layoutlmv2-base-uncased",
        &bundled.join("layoutlmv2-base-uncased"),
    )?;
    cache_repo(
        &cache,
        "ehcalabres/wav2vec2-lg-xlsr-en-speech-emotion-recognition",
        &bundled.join("wav2vec2-lg-xlsr-en-speech-emotion-recognition"),
    )?;
    let swin = bundled.join("swin-tiny-patch4-window7-224");
    cache_repo(&cache, "microsoft/swin-tiny-patch4-window7-224", &swin)?;
    // swin-tiny's 28M weights are not committed: regenerate the deterministic synthetic ones.
    let repo = cache.join("models--microsoft--swin-tiny-patch4-window7-224");
    let blob = repo.join("blobs").join("synthetic-model.safetensors");
    if !blob.is_file() {
        synthetic::write_checkpoint(&swin.join("weights_manifest.json"), &blob)
            .map_err(std::io::Error::other)?;
    }
    let link = repo
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    std::os::unix::fs::symlink("../../blobs/synthetic-model.safetensors", &link)?;
    #[cfg(not(unix))]
    std::fs::copy(&blob, &link)?;
    Ok(cache)
}

/// Prints a JSON value the way Python prints the equivalent dict: `{'input_ids': [101, ...]}`.
fn python_repr(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("'{k}': {}", python_repr(v)))
                .collect();
            format!("{{{}}}", items.join(", \n "))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
            )
        }
        other => other.to_string(),
    }
}

fn main() -> std::process::ExitCode {
    match tour() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn tour() -> Result<()> {
    autoclass::log_warnings_to_stderr();
    let cache = setup().map_err(|e| autoclass::Error::io("target/seed-tour-cache", e))?;
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_HUB_OFFLINE", "1");
    println!(
        "(Hub ids resolve offline through {}; DistilBERT's weights are tiny and random, swin-tiny's are synthetic)\n",
        cache.display()
    );

    println!("## AutoTokenizer");
    println!(">>> tokenizer = AutoTokenizer.from_pretrained(\"google-bert/bert-base-uncased\")");
    let tokenizer = AutoTokenizer::from_pretrained("google-bert/bert-base-uncased")?;
    let sequence = "In a hole in the ground there lived a hobbit.";
    println!(">>> print(tokenizer(sequence))");
    let encoding = tokenizer.encode(sequence, &EncodeOptions::default())?;
    println!("{}\n", python_repr(&encoding.to_json()));

    println!("## AutoImageProcessor");
    println!(
        ">>> image_processor = AutoImageProcessor.from_pretrained(\"google/vit-base-patch16-224\")"
    );
    let image_processor = AutoImageProcessor::from_pretrained("google/vit-base-patch16-224")?;
    println!("{}\n", image_processor.class_name());

    println!("## AutoBackbone");
    let image =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision/images/chelsea.png");
    println!(">>> image = Image.open(\"{}\")", image.display());
    println!(">>> processor = AutoImageProcessor.from_pretrained(\"microsoft/swin-tiny-patch4-window7-224\")");
    let processor = AutoImageProcessor::from_pretrained("microsoft/swin-tiny-patch4-window7-224")?;
    println!(">>> model = AutoBackbone.from_pretrained(\"microsoft/swin-tiny-patch4-window7-224\", out_indices=(1,))");
    let options = LoadOptions::default().with_out_indices(&[1]);
    let model =
        AutoBackbone::from_pretrained_with("microsoft/swin-tiny-patch4-window7-224", &options)?;
    println!(">>> inputs = processor(image, return_tensors=\"pt\")");
    let inputs = processor.preprocess_paths(&[image])?;
    println!(">>> outputs = model(**inputs)");
    let outputs = model.forward(&inputs)?;
    println!(">>> feature_maps = outputs.feature_maps");
    let feature_maps = outputs.feature_maps.unwrap_or_default();
    println!(">>> list(feature_maps[0].shape)");
    match feature_maps.first() {
        Some(map) => println!("{:?}\n", map.dims()),
        None => println!("(no feature map)\n"),
    }

    println!("## AutoFeatureExtractor");
    println!(">>> feature_extractor = AutoFeatureExtractor.from_pretrained(");
    println!("...     \"ehcalabres/wav2vec2-lg-xlsr-en-speech-emotion-recognition\"");
    println!("... )");
    let feature_extractor = AutoFeatureExtractor::from_pretrained(
        "ehcalabres/wav2vec2-lg-xlsr-en-speech-emotion-recognition",
    )?;
    println!("{feature_extractor}\n");

    println!("## AutoProcessor");
    println!(
        ">>> processor = AutoProcessor.from_pretrained(\"microsoft/layoutlmv2-base-uncased\")"
    );
    let processor = AutoProcessor::from_pretrained("microsoft/layoutlmv2-base-uncased")?;
    println!("{}\n", processor.class_name());

    println!("## AutoModel");
    println!(">>> model = AutoModelForSequenceClassification.from_pretrained(\"distilbert/distilbert-base-uncased\")");
    let model =
        AutoModelForSequenceClassification::from_pretrained("distilbert/distilbert-base-uncased")?;
    let distil_tokenizer = AutoTokenizer::from_pretrained("distilbert/distilbert-base-uncased")?;
    let inputs = distil_tokenizer
        .encode(sequence, &EncodeOptions::default())?
        .to_batch(model.device())?;
    let outputs = model.forward(&inputs)?;
    println!(
        "{} -> logits {:?}",
        model.class_name(),
        outputs.require("logits")?.to_vec2::<f32>()?
    );

    println!(">>> model = AutoModelForTokenClassification.from_pretrained(\"distilbert/distilbert-base-uncased\")");
    let model =
        AutoModelForTokenClassification::from_pretrained("distilbert/distilbert-base-uncased")?;
    let outputs = model.forward(&inputs)?;
    println!(
        "{} -> logits of shape {:?}",
        model.class_name(),
        outputs.require("logits")?.dims()
    );
    Ok(())
}
