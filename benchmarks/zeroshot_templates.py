"""Prompt templates for zero-shot classification: each template alone against their ensemble.

    python benchmarks/zeroshot_templates.py            # the "cpu" mini-CLIP (trained first if missing), 2,048 images
    python benchmarks/zeroshot_templates.py --quick    # a "ci" model trained for a few seconds, 256 images

The model is `clipkit.train.load_or_train(profile)`; --quick trains its tiny model into a temporary
folder so it never touches your checkpoints. Images are one-object shapes-world images of the
seen pairs (labels: all 64 pairs) and of the held-out pairs (labels: all 64, generalised
zero-shot). Every template of `clipkit.zeroshot.TEMPLATES["shapes"]` is scored alone, then their
ensemble (normalised embeddings averaged, as the CLIP paper does). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from clipkit.data import ShapesWorld
from clipkit.interface import embed_images
from clipkit.prompts import TEMPLATES
from clipkit.zeroshot import topk_accuracy, zeroshot_classifier, zeroshot_logits


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help="training profile of the model (clipkit.train.PROFILES)")
    parser.add_argument("--images", type=int, default=2048, help="images per split (seen pairs, held-out pairs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a 'ci' model trained for 30 steps, 256 images: seconds")
    args = parser.parse_args(argv)

    from clipkit.train import load_or_train

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            args.profile, args.images = "ci", 256
            model = load_or_train("ci", out_dir=scratch, seed=args.seed, steps=30, progress=False)
        else:
            model = load_or_train(args.profile, seed=args.seed, progress=False)
    model_seconds = time.perf_counter() - started

    world = ShapesWorld()
    splits = {split: world.sample(args.images, seed=args.seed + 7, split=split, objects=1) for split in ("train", "heldout")}
    embeddings = {split: embed_images(model, sample.images) for split, sample in splits.items()}
    templates = TEMPLATES["shapes"]

    rows, build_seconds = [], []
    for name, chosen in [(template, [template]) for template in templates] + [(f"ensemble of {len(templates)}", templates)]:
        started = time.perf_counter()
        classifier = zeroshot_classifier(model, world.class_names, chosen)
        build_seconds.append((time.perf_counter() - started) / len(chosen))
        accuracy = {
            split: topk_accuracy(zeroshot_logits(embeddings[split], classifier).cpu(), splits[split].labels, ks=(1,))["top1"]
            for split in splits
        }
        rows.append((name, accuracy["train"], accuracy["heldout"]))

    print(f"profile {args.profile!r}, {args.images} images per split, labels: all {len(world.class_names)} pairs")
    print(f"{'template':<50}{'seen top-1':>12}{'held-out top-1':>16}")
    for name, seen, heldout in rows:
        print(f"{name:<50}{seen:>12.3f}{heldout:>16.3f}")
    singles = rows[:-1]
    figures = {
        "profile": args.profile,
        "images_per_split": args.images,
        "templates": len(templates),
        "single_template_mean_seen_top1_fraction": sum(r[1] for r in singles) / len(singles),
        "single_template_best_seen_top1_fraction": max(r[1] for r in singles),
        "ensemble_seen_top1_fraction": rows[-1][1],
        "single_template_mean_heldout_top1_fraction": sum(r[2] for r in singles) / len(singles),
        "ensemble_heldout_top1_fraction": rows[-1][2],
        "classifier_seconds_per_template": sum(build_seconds) / len(build_seconds),
        "model_seconds": model_seconds,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
