"""Start-up reference for the Rust port: load tokenizer + sequence-classification model, one forward pass.

Usage (timed as a whole process):
    time ../refvenv/bin/python benches/startup_reference.py MODEL_DIR "some text"

MODEL_DIR is e.g. what `crates/autoclass/tests/fixtures/generate.py --startup-checkpoint MODEL_DIR` writes
(a random, real-size DistilBertForSequenceClassification). This script measures nothing itself.
"""

import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} MODEL_DIR TEXT")
    model_dir, text = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(**tok(text, return_tensors="pt")).logits
    print(logits.tolist())


if __name__ == "__main__":
    main()
