"""How fast the data side is: shapes images per second on one core, data set loading, tokenizers.

    python benchmarks/data.py            # full run (about a minute on a laptop)
    python benchmarks/data.py --quick    # seconds: a smoke run for the tests

Prints a table, then as its last line one JSON object of the figures (units in the key names).
Times are the best of a few repeats, which is the least disturbed by other work on the machine.
The issue's target: at least 5,000 shapes images per second at 32 px on one core (the grid world);
the randomised world (turned, scaled, shaded, blurred: `variation="random"`) draws thousands.
Both render in torch (on any device); the grid world's original numpy pasting is measured beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipkit.data import ShapesConfig, ShapesWorld, load_emoji, load_fashion_mnist  # noqa: E402
from clipkit.data.emoji import EmojiFontNotFoundError  # noqa: E402
from clipkit.data.fashion import FashionMNISTNotFoundError  # noqa: E402
from clipkit.tokenizer import (  # noqa: E402
    BPETokenizer,
    OpenCLIPTokenizer,
    TextTruncatedWarning,
    WordTokenizer,
    build_tokenizer,
)


def best_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def shapes_rate(image_size: int, count: int, repeats: int, variation: str = "grid", backend: str = "torch") -> float:
    world = ShapesWorld(ShapesConfig(image_size=image_size, variation=variation), backend=backend)
    world.sample(16, seed=0)  # warm up allocators and caches
    return count / best_seconds(lambda: world.sample(count, seed=1), repeats)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the target is per core
    count, repeats = (2_000, 1) if args.quick else (20_000, 3)
    rows: list[tuple[str, float, str]] = []
    figures: dict[str, float] = {}

    def record(key: str, label: str, value: float, unit: str) -> None:
        figures[key] = round(value, 4)
        rows.append((label, value, unit))

    for size, images in ((32, count), (64, count // 2)):
        rate = shapes_rate(size, images, repeats)
        record(f"shapes_{size}px_images_per_second", f"shapes world (grid, torch), {size} px, 1 thread", rate, "images/s")
        rate = shapes_rate(size, images, repeats, backend="numpy")
        record(f"shapes_numpy_{size}px_images_per_second", f"shapes world (grid, numpy), {size} px, 1 thread", rate, "images/s")
        rate = shapes_rate(size, images, repeats, variation="random")
        record(f"shapes_random_{size}px_images_per_second", f"shapes world (random, torch), {size} px, 1 thread", rate, "images/s")
    world = ShapesWorld()
    probe_pairs = count // 4
    seconds = best_seconds(lambda: world.binding_probe(probe_pairs, seed=1), repeats)
    record("binding_probe_32px_pairs_per_second", "binding probe, 32 px", probe_pairs / seconds, "pairs/s")

    captions = world.sample(count, seed=2).captions
    word = WordTokenizer.fit(captions)
    start = time.perf_counter()
    bpe = BPETokenizer.train(captions, vocab_size=512)
    seconds = time.perf_counter() - start
    record("bpe_train_seconds", f"BPE training, {len(captions):,} captions -> {bpe.vocab_size} tokens", seconds, "s")
    long_caption = " ".join(" ".join(captions).split()[:10_000])
    for key, tokenizer in (("word", word), ("bpe", bpe), ("open_clip", OpenCLIPTokenizer())):
        rate = len(captions) / best_seconds(lambda: tokenizer(captions), repeats)
        record(f"{key}_tokenizer_captions_per_second", f"{key} tokenizer, shapes captions", rate, "captions/s")
        fresh = build_tokenizer(tokenizer.to_dict())  # an empty word cache, as for a user's first long text
        seconds = best_seconds(lambda: _quietly(fresh, long_caption), 1)
        record(f"{key}_tokenizer_10000_word_seconds", f"{key} tokenizer, one 10,000-word text", seconds, "s")

    try:
        split, limit = ("test", 2_000) if args.quick else ("train", None)
        seconds = best_seconds(lambda: load_fashion_mnist(split, limit=limit), 1)
        record(f"fashion_mnist_{split}_load_seconds", f"Fashion-MNIST {split} from IDX", seconds, "s")
    except FashionMNISTNotFoundError as error:
        print(f"(skipped Fashion-MNIST: {error})")

    if not args.quick:
        try:
            # An empty cache, so the first load renders.
            with tempfile.TemporaryDirectory() as folder, mock.patch.dict(os.environ, {"CLIPKIT_CACHE_DIR": folder}):
                seconds = best_seconds(lambda: load_emoji(64), 1)
                record("emoji_render_seconds", "emoji, first load (render 64 px)", seconds, "s")
                seconds = best_seconds(lambda: load_emoji(64), repeats)
                record("emoji_cached_load_seconds", "emoji, cached load", seconds, "s")
                record("emoji_pairs", "emoji image-caption pairs", len(load_emoji(64)), "pairs")
        except EmojiFontNotFoundError as error:
            print(f"(skipped emoji: {error})")

    width = max(len(label) for label, _, _ in rows)
    print(f"{'measure':<{width}}  {'value':>12}  unit")
    for label, value, unit in rows:
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.4f}"
        print(f"{label:<{width}}  {shown:>12}  {unit}")
    target = figures["shapes_32px_images_per_second"] >= 5_000
    print(f"target (>= 5,000 shapes images/s at 32 px on one core): {'met' if target else 'NOT met'}")
    target = figures["shapes_random_32px_images_per_second"] >= 1_000
    print(f"target (>= 1,000 randomised shapes images/s at 32 px on one core): {'met' if target else 'NOT met'}")
    print(json.dumps(figures))
    return figures


def _quietly(tokenizer, text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TextTruncatedWarning)
        tokenizer([text])


if __name__ == "__main__":
    main()
