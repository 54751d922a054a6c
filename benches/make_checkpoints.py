"""Writes the real-size, random-weight checkpoints of the speed workloads (issue 7).

Usage:
    /work/refvenv/bin/python benches/make_checkpoints.py [OUTDIR]   # default target/bench-checkpoints

OUTDIR/
    distilbert-base   DistilBertForSequenceClassification (W1, W8, W9), BERT uncased tokenizer
    bert-base         BertForSequenceClassification (W2, W3, W4), config of checkpoints/bert-base-uncased
    swin-tiny         SwinBackbone, out_features stage1..stage4 (W5), config + preprocessor of
                      checkpoints/swin-tiny-patch4-window7-224
    vit-base          ViTForImageClassification (W6), config + preprocessor of checkpoints/vit-base-patch16-224
    wav2vec2-base     Wav2Vec2ForSequenceClassification (W7), facebook/wav2vec2-base's architecture
                      (transformers' Wav2Vec2Config defaults) and feature extractor settings

Weights are random (fixed seed): right for speed, meaningless for accuracy. Nothing here is
committed; a folder that already holds a model.safetensors is left alone (pass --force to redo).
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    SwinBackbone,
    SwinConfig,
    ViTConfig,
    ViTForImageClassification,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForSequenceClassification,
)

ROOT = Path(__file__).resolve().parent.parent
CKPTS = ROOT / "checkpoints"
VOCAB = CKPTS / "bert-base-uncased" / "vocab.txt"

# facebook/wav2vec2-base's preprocessor_config.json (the repo's wav2vec2 checkpoint is a large,
# layer-norm model whose extractor returns an attention mask; base does not).
WAV2VEC2_BASE_PREPROCESSOR = {
    "do_normalize": True,
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "sampling_rate": 16000,
}


def save_bert_tokenizer(out: Path) -> None:
    bert_tokenizer().save_pretrained(out)
    shutil.copy(VOCAB, out / "vocab.txt")


def bert_tokenizer():
    cls = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
    return cls(vocab_file=str(VOCAB), do_lower_case=True, model_max_length=512)


def load_config(cls, folder: Path, **overrides):
    data = json.loads((folder / "config.json").read_text())
    data.update(overrides)
    return cls.from_dict(data)


def save(model, out: Path, extra=None) -> None:
    model.eval()
    model.save_pretrained(out)
    if extra is not None:
        extra(out)
    print(f"wrote {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")


def copy_preprocessor(src: Path):
    return lambda out: shutil.copy(src / "preprocessor_config.json", out / "preprocessor_config.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", nargs="?", default=str(ROOT / "target" / "bench-checkpoints"))
    ap.add_argument("--force", action="store_true", help="rewrite checkpoints that exist")
    ap.add_argument("--only", nargs="*", help="subset of: distilbert-base bert-base swin-tiny vit-base wav2vec2-base")
    args = ap.parse_args()
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    def wanted(name: str) -> bool:
        if args.only and name not in args.only:
            return False
        if (outdir / name / "model.safetensors").exists() and not args.force:
            print(f"kept {outdir / name}")
            return False
        return True

    if wanted("distilbert-base"):
        # DistilBertConfig() is distilbert-base-uncased: 6 layers, dim 768, vocab 30522.
        config = DistilBertConfig(num_labels=2)
        save(DistilBertForSequenceClassification(config), outdir / "distilbert-base",
             save_bert_tokenizer)
    if wanted("bert-base"):
        config = load_config(BertConfig, CKPTS / "bert-base-uncased", num_labels=2)
        save(BertForSequenceClassification(config), outdir / "bert-base",
             save_bert_tokenizer)
    if wanted("swin-tiny"):
        src = CKPTS / "swin-tiny-patch4-window7-224"
        config = load_config(SwinConfig, src, out_features=["stage1", "stage2", "stage3", "stage4"])
        save(SwinBackbone(config), outdir / "swin-tiny", copy_preprocessor(src))
    if wanted("vit-base"):
        src = CKPTS / "vit-base-patch16-224"
        config = load_config(ViTConfig, src)
        save(ViTForImageClassification(config), outdir / "vit-base", copy_preprocessor(src))
    if wanted("wav2vec2-base"):
        # Wav2Vec2Config() is facebook/wav2vec2-base: 12 layers, 768, group-norm feature encoder.
        config = Wav2Vec2Config(num_labels=2)

        def extra(out: Path) -> None:
            Wav2Vec2FeatureExtractor(**{k: v for k, v in WAV2VEC2_BASE_PREPROCESSOR.items()
                                        if k != "feature_extractor_type"}).save_pretrained(out)

        save(Wav2Vec2ForSequenceClassification(config), outdir / "wav2vec2-base", extra)
    return None


if __name__ == "__main__":
    sys.exit(main())
