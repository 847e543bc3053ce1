"""Searching a folder of photos through the on-disk embedding cache (`clipkit.search.PhotoIndex`).

    python benchmarks/photo_search.py                                # 10,000 images, the mini-CLIP
    python benchmarks/photo_search.py --model open_clip:ViT-B-32     # a random-init ViT-B/32 at 224 px
    python benchmarks/photo_search.py --quick                        # 200 images: a smoke run

A folder of N images is generated in a temporary directory (random crops of the `skimage.data`
photos saved as JPEG, shapes-world scenes and emoji saved as PNG, in nested folders; every file's
content is distinct, so nothing is deduplicated). Measured:

- first start: every image decoded, embedded and cached (images indexed per second);
- second start: a new `PhotoIndex` on the same folder and cache, the model's fingerprint computed
  afresh as in a new process (target <= 5 s for 10,000 images); it must embed nothing;
- one added photo: embedded alone;
- search latency: median of text queries and of image queries (target <= 50 ms), embedding the
  query included, and the index's own share (a precomputed query embedding).

`--model` takes `mini` (notebook 05's checkpoint when it exists, else a random-init model of the
same profile: timing does not depend on the weights) or any model spec `clipkit.checkpoint`
understands (`open_clip:ViT-B-32`, `hf:folder`, a checkpoint folder). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clipkit.interface import embed_images, embed_texts
from clipkit.search import PhotoIndex
from clipkit.search import cache as store

TEXT_QUERIES = ["a red circle", "a photo of a cat", "a cup of coffee", "a rocket on the launch pad", "a smiling face"]


def load_model(spec: str, device: str):
    """(model, description) for `--model`."""
    from clipkit.checkpoint import load_checkpoint, load_model_spec
    from clipkit.model import CONFIG_FILE
    from clipkit.train import build_model, default_out_dir

    if spec != "mini":
        model, parsed = load_model_spec(spec, device=device)
        return model.eval(), parsed.describe()
    saved = default_out_dir(0, "cpu")
    if (saved / CONFIG_FILE).exists():
        return load_checkpoint(saved, device=device), f"notebook 05's mini-CLIP ({saved})"
    model, _ = build_model("cpu")
    return model.to(device).eval(), "a random-init mini-CLIP of the cpu profile (no notebook 05 checkpoint here)"


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel")


def write_folder(root: Path, count: int, seed: int = 0) -> None:
    """`count` distinct images in 100 nested folders: a third photo crops (JPEG), a third shapes scenes
    and a third emoji (PNG). A random 2x2 corner patch makes every file's content unique."""
    import skimage.data

    from clipkit.data import ShapesConfig, ShapesWorld, load_emoji

    photos = [getattr(skimage.data, name)() for name in PHOTOS]  # [H, W, 3] uint8 each
    emoji = load_emoji(64).images  # [E, 3, 64, 64]
    rng = np.random.default_rng(seed)
    shapes = ShapesWorld(ShapesConfig(image_size=64)).sample(count // 3 + 1, seed=seed, split="all").images
    for position in range(count):
        kind = position % 3
        if kind == 0:
            photo = photos[rng.integers(len(photos))]
            side = int(rng.integers(160, min(photo.shape[:2]) + 1))
            top, left = (int(rng.integers(0, extent - side + 1)) for extent in photo.shape[:2])
            pixels = photo[top : top + side, left : left + side].copy()
        else:
            source = shapes[position // 3] if kind == 1 else emoji[position % len(emoji)]
            pixels = source.permute(1, 2, 0).numpy().copy()  # [3, H, W] -> [H, W, 3]
        pixels[:2, :2] = rng.integers(0, 256, (2, 2, 3), dtype=np.uint8)
        folder = root / f"{position % 10}" / f"{position // 10 % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels)
        if kind == 0:
            image.save(folder / f"{position:06d}.jpg", quality=90)
        else:
            image.save(folder / f"{position:06d}.png")


def median_ms(call, repeats: int) -> float:
    call()  # one untimed call: lazy imports and first-use allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="images in the generated folder")
    parser.add_argument("--model", default="mini", help="`mini` or a model spec such as open_clip:ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call")
    parser.add_argument("--workers", type=int, default=4, help="threads decoding images")
    parser.add_argument("--repeats", type=int, default=20, help="timed searches of each kind (median reported)")
    parser.add_argument("--device", default=None, help="where the model runs (default: clipkit.get_device())")
    parser.add_argument("--folder", type=Path, help="index this folder instead of generating one (kept as it is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 images, 5 repeats: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = 200, 5

    from clipkit.env import get_device

    device = args.device or str(get_device())
    model, description = load_model(args.model, device)
    with tempfile.TemporaryDirectory(prefix="clipkit-photo-search-") as scratch:
        scratch = Path(scratch)
        root = args.folder or scratch / "photos"
        if args.folder is None:
            start = time.perf_counter()
            write_folder(root, args.images, args.seed)
            generate_seconds = time.perf_counter() - start
        else:
            generate_seconds = 0.0
        options = {"cache": scratch / "cache", "batch_size": args.batch_size, "workers": args.workers, "progress": False}

        embed_images(model, [Image.new("RGB", (64, 64))])  # untimed: lazy imports (torchvision) and first-use allocations
        first = PhotoIndex(root, model, **options)
        store._fingerprints.clear()  # a second start is a new process: it hashes the weights again
        start = time.perf_counter()
        second = PhotoIndex(root, model, **options)
        second_seconds = time.perf_counter() - start
        second_embedded = second.report.embedded  # refresh() below replaces the report
        added = root / "added.png"
        Image.fromarray(np.full((64, 64, 3), 77, dtype=np.uint8)).save(added)
        start = time.perf_counter()
        third = second.refresh()
        add_seconds = time.perf_counter() - start

        query_image = second.image(0)
        text_ms = median_ms(lambda: second.search_text(TEXT_QUERIES[0], k=10), args.repeats)
        image_ms = median_ms(lambda: second.search_image(query_image, k=10), args.repeats)
        query = embed_texts(model, TEXT_QUERIES[:1])  # [1, D]: the index's own share of a search, without the encoder
        index_ms = median_ms(lambda: second.index.search(query, k=10), args.repeats)
        cache_mib = sum(path.stat().st_size for path in (scratch / "cache").rglob("*") if path.is_file()) / 2**20

    figures = {
        "model": description,
        "device": device,
        "images": first.report.photos,
        "image_size": model.image_size,
        "index_backend": second.index.backend,
        "generate_seconds": round(generate_seconds, 2),
        "first_start_seconds": round(first.report.seconds, 2),
        "images_indexed_per_second": round(first.report.embedded / first.report.seconds, 1),
        "second_start_seconds": round(second_seconds, 3),
        "second_start_embedded": second_embedded,
        "add_one_seconds": round(add_seconds, 3),
        "add_one_embedded": third.embedded,
        "text_search_p50_ms": round(text_ms, 2),
        "image_search_p50_ms": round(image_ms, 2),
        "index_search_p50_ms": round(index_ms, 3),
        "cache_mib": round(cache_mib, 1),
        "target_second_start_seconds": 5.0,
        "target_search_ms": 50.0,
    }
    print(f"photo search: {figures['images']:,} images, {description}, {model.image_size} px, {device}, {second.index.backend} index")
    rows = [
        ("first start (embed all)", f"{figures['first_start_seconds']:.2f} s", f"{figures['images_indexed_per_second']:.1f} images/s"),
        ("second start (cache)", f"{second_seconds:.3f} s", f"embedded {second_embedded}; target <= 5 s"),
        ("one photo added", f"{add_seconds:.3f} s", f"embedded {third.embedded}"),
        ("text search p50", f"{text_ms:.2f} ms", "target <= 50 ms"),
        ("image search p50", f"{image_ms:.2f} ms", "target <= 50 ms"),
        ("  of which the index", f"{index_ms:.3f} ms", "a precomputed query embedding, top-10"),
        ("cache on disk", f"{cache_mib:.1f} MiB", ""),
    ]
    for name, value, note in rows:
        print(f"  {name:<26} {value:>12}   {note}")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
