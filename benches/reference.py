"""The transformers + PyTorch side of `autoclass bench`: same model, same inputs, same output lines.

Usage (mirrors `autoclass bench`):
    /work/refvenv/bin/python benches/reference.py MODEL --task TASK [--batch B]
        [--seq-len L | --image-size S | --audio-seconds S] [--lengths random:8-128]
        [--iters N] [--warmup W] [--dtype f32|bf16] [--threads T]

Inputs are built exactly as crates/autoclass-cli/src/bench.rs builds them (same words, same
SplitMix64 seed for --lengths, same gradient image, same two-sine waveform). The model runs in
eval mode under torch.inference_mode(); --threads calls torch.set_num_threads (intra-op pool).
Prints the median and min/max of the forward pass and of the whole pipeline from raw input
(tokenizer / image processor / feature extractor + forward); the last line is
`throughput: X items/s` (batch / median forward time).
"""

import argparse
import math
import statistics
import sys
import time

SEED = 0x5EED_0001
WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "a", "small", "bird",
    "sings", "in", "green", "tree", "and", "people", "walk", "through", "old", "city", "park",
    "on", "warm", "summer", "evening", "with", "their", "friends", "after", "work",
]
MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed: int) -> None:
        self.state = seed & MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def range(self, lo: int, hi: int) -> int:
        return lo + self.next_u64() % (hi - lo + 1)


def synthetic_text(start: int, words: int) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(words))


def synthetic_image(size: int):
    import numpy as np
    from PIL import Image

    x = np.arange(size, dtype=np.uint64)[None, :]
    y = np.arange(size, dtype=np.uint64)[:, None]
    s = max(size, 1)
    r = np.broadcast_to(x * 255 // s, (size, size))
    g = np.broadcast_to(y * 255 // s, (size, size))
    b = (x + y) * 127 // s
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8), mode="RGB")


def synthetic_wave(seconds: float, rate: int):
    import numpy as np

    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    return (0.5 * np.sin(2 * math.pi * 220.0 * t) + 0.25 * np.sin(2 * math.pi * 330.0 * t)).astype(np.float32)


def parse_lengths(spec: str):
    if not spec.startswith("random:") or "-" not in spec:
        sys.exit(f"error: --lengths `{spec}`: use random:MIN-MAX, e.g. random:8-128")
    lo, hi = (int(v) for v in spec[len("random:"):].split("-", 1))
    if lo < 3 or hi < lo:
        sys.exit(f"error: --lengths `{spec}`: use random:MIN-MAX, e.g. random:8-128")
    return lo, hi


def timed(warmup: int, iters: int, fn):
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(iters):
        cpu_start = time.process_time()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - cpu_start) * 1e3)
    return times, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description="transformers + PyTorch reference for `autoclass bench`")
    ap.add_argument("model")
    ap.add_argument("--task", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--lengths")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--audio-seconds", type=float)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()

    import torch
    import transformers

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtypes = {"f32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if args.dtype not in dtypes:
        sys.exit(f"error: --dtype {args.dtype} is not supported by the reference; use f32 or bf16")
    dtype = dtypes[args.dtype]

    auto = {
        "sequence-classification": "AutoModelForSequenceClassification",
        "token-classification": "AutoModelForTokenClassification",
        "masked-lm": "AutoModelForMaskedLM",
        "question-answering": "AutoModelForQuestionAnswering",
        "base": "AutoModel",
        "image-classification": "AutoModelForImageClassification",
        "backbone": "AutoBackbone",
        "audio-classification": "AutoModelForAudioClassification",
        "ctc": "AutoModelForCTC",
    }
    if args.task not in auto:
        sys.exit(f"error: unknown task {args.task}")

    if args.task in ("audio-classification", "ctc"):
        fe = transformers.AutoFeatureExtractor.from_pretrained(args.model)
        rate = fe.sampling_rate
        waves = [synthetic_wave(args.audio_seconds or 10.0, rate)] * args.batch

        def preprocess():
            return fe(waves, sampling_rate=rate, return_tensors="pt")

        kind = "audio"
    elif args.task in ("image-classification", "backbone"):
        proc = transformers.AutoImageProcessor.from_pretrained(args.model)
        images = [synthetic_image(args.image_size or 224)] * args.batch

        def preprocess():
            return proc(images, return_tensors="pt")

        kind = "image"
    else:
        tok = transformers.AutoTokenizer.from_pretrained(args.model)
        if args.lengths:
            lo, hi = parse_lengths(args.lengths)
            rng = SplitMix64(SEED)
            texts = [synthetic_text(i, rng.range(lo, hi) - 2) for i in range(args.batch)]
            max_length = hi
        else:
            length = args.seq_len or 128
            texts = [synthetic_text(i, length - 2) for i in range(args.batch)]
            max_length = length

        def preprocess():
            return tok(texts, padding="longest", truncation="longest_first", max_length=max_length, return_tensors="pt")

        kind = "text"

    load_start = time.perf_counter()
    if args.task == "backbone":
        # AutoBackbone.from_pretrained asks the Hub whether a local folder is a repo (and falls
        # back to timm): take the class from the backbone mapping instead.
        from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING

        cls = MODEL_FOR_BACKBONE_MAPPING[type(transformers.AutoConfig.from_pretrained(args.model))]
    else:
        cls = getattr(transformers, auto[args.task])
    model = cls.from_pretrained(args.model, dtype=dtype)
    model.eval()
    load_ms = (time.perf_counter() - load_start) * 1e3

    def cast(batch):
        return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in batch.items()}

    batch = cast(preprocess())
    print(f"model: {args.model} task: {args.task} dtype: {args.dtype} batch: {args.batch} threads: {torch.get_num_threads()}")
    print(f"inputs: {kind}; " + ", ".join(f"{k} {list(v.shape)}" for k, v in batch.items()))
    print(f"load: {load_ms:.1f} ms")

    with torch.inference_mode():
        forward, forward_cpu = timed(args.warmup, args.iters, lambda: model(**batch))
        pipeline, _ = timed(min(args.warmup, 1), args.iters, lambda: model(**cast(preprocess())))
    n = args.iters
    for name, times in (("forward", forward), ("pipeline", pipeline), ("forward cpu", forward_cpu)):
        print(f"{name}: median {statistics.median(times):.3f} ms (min {min(times):.3f}, max {max(times):.3f}) over {n} iters")
    print(f"throughput: {args.batch / (statistics.median(forward) / 1e3):.3f} items/s")


if __name__ == "__main__":
    main()
