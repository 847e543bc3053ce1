"""WebDataset tar shards: the format the field trains on at scale (open_clip, img2dataset).

A shard is a tar file of samples, each a few members sharing a key: `KEY.jpg` (or `.png`) and
`KEY.txt`. `write_shards` writes them from any clipkit data source (the shapes world, Fashion-MNIST,
a CSV or folder of your own); `ShardData` trains from them (`--data 'webdataset:DIR/{000000..000009}.tar'`).

Shards are read as a stream, not by index, so the batch of a step is fixed differently from
`clipkit.data.stream`: every epoch the shards are shuffled with (seed, epoch), process `rank` takes
every `world`-th of them and its DataLoader worker `w` every W-th of those (or every W-th sample
when there are fewer shards than workers), and each worker makes whole batches from its stream in
order. The DataLoader takes batches from its workers in turn, so local batch k is worker k % W's
(k // W)-th: which samples a step sees follows from (seed, step, rank) alone, and a resumed run
skips to its place by reading tar headers, without decoding an image. A sample whose image cannot
be decoded is skipped and counted (`skipped`, one `SkippedItemsWarning` per batch that met one,
as the other loaders do); its place in the batch goes to another sample of the same batch, so
every process still encodes a full share and the positions of later samples do not move.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from clipkit.data.files import BadImageError, SkippedItemsWarning, _to_rgb, skip_summary
from clipkit.io import MissingFileError, atomic_write

IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")  # image extensions read from a sample, in this order of preference


def expand_shards(pattern: str) -> list[str]:
    """'DIR/{000000..000009}.tar' -> the ten paths (brace expansion, as webdataset and open_clip do);
    every one must exist."""
    from webdataset.shardlists import expand_urls

    paths = expand_urls(pattern)
    missing = [path for path in paths if not Path(path).is_file()]
    if not paths or missing:
        raise MissingFileError(
            missing[0] if missing else pattern,
            f"webdataset shards {pattern!r}: {len(missing)} of {len(paths)} files missing (first: {missing[:3]}). "
            "Write shards with `python -m clipkit.data.shards write`, or fix the pattern, e.g. 'DIR/{000000..000009}.tar'."
        )
    return paths


def _samples(path: str) -> Iterator[dict]:
    """A shard's samples as webdataset groups them: {"__key__": key, "png": bytes, "txt": bytes, ...}."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    with open(path, "rb") as stream:
        members = ({**member, "__url__": path} for member in tar_file_iterator(stream))
        yield from group_by_keys(members)


def _complete(sample: dict) -> bool:
    """A sample counts (and takes a place in a batch) when it has a caption and an image member."""
    return "txt" in sample and any(ext in sample for ext in IMAGE_MEMBERS)


def decode_image(data: bytes, image_size: int) -> torch.Tensor:
    """Image file bytes -> uint8 [3, S, S]: RGB, the shorter side resized to S, centre-cropped.
    Raises BadImageError when the bytes are not a readable image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                image.draft("RGB", (image_size, image_size))
            image.load()
            image = _to_rgb(image)
    except UnidentifiedImageError as error:
        raise BadImageError("not an image PIL can read (corrupt, or another kind of file)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"corrupt or truncated ({error})") from error
    if image.size != (image_size, image_size):
        image = ImageOps.fit(image, (image_size, image_size), Image.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(image_size, image_size, 3).permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]


class _LocalBatches(torch.utils.data.IterableDataset):
    """The endless batches of one process (rank): each DataLoader worker makes every W-th of them."""

    def __init__(self, paths: list[str], image_size: int, size: int, seed: int, start: int, rank: int, world: int):
        self.paths, self.image_size, self.size, self.seed = paths, image_size, size, seed
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], list]]:
        info = torch.utils.data.get_worker_info()
        loader_worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader asks worker 0 first, so on resuming at `start` worker 0 must make batch
        # `start`: it plays the part of the worker that made batch k, k % W, in an unbroken run.
        first = self.start + loader_worker
        worker = first % workers
        samples = self._stream(worker, workers)
        for _ in range(first // workers * self.size):  # skip to the place: headers only, nothing decoded
            next(samples)
        while True:
            yield self._batch([next(samples) for _ in range(self.size)])

    def _stream(self, worker: int, workers: int) -> Iterator[dict]:
        """This worker's complete samples, epoch after epoch."""
        epoch = 0
        while True:
            order = torch.randperm(len(self.paths), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
            mine = [self.paths[i] for i in order[self.rank :: self.world].tolist()]
            by_shard = len(mine) >= workers
            index = 0
            for path in mine[worker::workers] if by_shard else mine:
                for sample in _samples(path):
                    if not _complete(sample):
                        continue
                    index += 1
                    if by_shard or (index - 1) % workers == worker:
                        yield sample
            epoch += 1

    def _batch(self, samples: list[dict]) -> tuple[torch.Tensor, list[str], list]:
        images, captions, skipped, bad = [], [], [], []
        for sample in samples:
            ext = next(ext for ext in IMAGE_MEMBERS if ext in sample)
            try:
                images.append(decode_image(sample[ext], self.image_size))
                captions.append(" ".join(sample["txt"].decode("utf-8", "replace").split()))
            except BadImageError as error:
                skipped.append((f"{sample['__url__']}:{sample['__key__']}.{ext}", str(error)))
                bad.append(len(images) + len(bad))
        if not images:
            raise BadImageError(f"no image of a whole batch could be decoded (first: {skipped[0]}); check the shards")
        for position in bad:  # a good sample of the same batch takes the bad one's place
            images.insert(position, images[position % (len(images))])
            captions.insert(position, captions[position % (len(captions))])
        return torch.stack(images), captions, skipped


class ShardData:
    """Training data read from WebDataset shards, each process (rank) from its own.

    Has what the training loop needs from a data source: `spec`, `vocabulary()` and `sources`
    (none: shards keep nothing back, so training evaluates nothing on them), and instead of
    `batch(size, seed, step)` the rank-local `local_batches`."""

    sources: tuple = ()

    def __init__(self, pattern: str, image_size: int = 64):
        self.pattern, self.image_size = pattern, image_size
        self.paths = expand_shards(pattern)
        self.spec = {"webdataset": pattern, "image_size": image_size}
        self.skipped: list[tuple[str, str]] = []  # (shard:member, reason) of every sample left out so far
        self._captions: list[str] | None = None

    def vocabulary(self) -> list[str]:
        """Every caption in the shards (tar headers and text members only: no image is decoded)."""
        if self._captions is None:
            self._captions = [" ".join(sample["txt"].decode("utf-8", "replace").split())
                              for path in self.paths for sample in _samples(path) if _complete(sample)]
        return list(self._captions)

    def __len__(self) -> int:
        return len(self.vocabulary())

    def local_batches(self, size: int, seed: int, start: int, rank: int = 0, world: int = 1,
                      workers: int = 0) -> Iterator[tuple[torch.Tensor, list[str]]]:
        """This process's batches from local step `start` on: (uint8 images [size, 3, S, S], captions)."""
        if len(self.paths) < world:
            raise ValueError(f"{len(self.paths)} shards cannot be shared by {world} processes: "
                             "write at least one shard per process (write_shards(..., per_shard=...))")
        dataset = _LocalBatches(self.paths, self.image_size, size, seed, start, rank, world)
        loader = iter(dataset) if workers == 0 else iter(torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=workers, prefetch_factor=4, persistent_workers=False))
        for images, captions, skipped in loader:
            if skipped:
                self.skipped += skipped
                warnings.warn(f"{self.pattern}: skipped {len(self.skipped)} samples so far ({skip_summary(self.skipped)}), "
                              f"latest {skipped[0][0]} ({skipped[0][1]}); see .skipped, or repair or drop the shard",
                              SkippedItemsWarning, stacklevel=2)
            yield images, captions


# ---------------------------------------------------------------------------------------------
# Writing shards


def _pairs(source, count: int | None, image_size: int, seed: int) -> Iterator[tuple[object, str]]:
    """(image, caption) pairs from a clipkit source: anything with `sample(n, seed)` (ShapesWorld),
    `batch(size, seed, step)` (a TrainingData), or indexing to (image, caption) (CaptionedImages,
    ImageCaptionCSV, ImageCaptionFolder)."""
    if hasattr(source, "sample"):
        drawn = source.sample(count or 1000, seed=seed)
        yield from zip(drawn.images, drawn.captions)
    elif hasattr(source, "batch"):
        step, left = 0, count or 1000
        while left > 0:
            batch = source.batch(min(256, left), seed, step)
            yield from zip(batch.images, batch.captions)
            step, left = step + 1, left - len(batch.captions)
    else:
        for index in range(min(count or len(source), len(source))):
            yield source[index]


def _encode(image, image_format: str) -> bytes:
    from PIL import Image

    if isinstance(image, torch.Tensor):
        image = Image.fromarray(image.expand(3, -1, -1).permute(1, 2, 0).numpy())  # uint8 [3 or 1, H, W] -> [H, W, 3]
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG" if image_format == "jpg" else "PNG", quality=95)
    return buffer.getvalue()


def write_shards(source, out_dir: str | Path, count: int | None = None, per_shard: int = 1000,
                 image_format: str = "png", seed: int = 0, image_size: int = 64) -> str:
    """Write `count` (image, caption) pairs of `source` as shards `out_dir/000000.tar`, ... in open_clip's
    layout (KEY.png or KEY.jpg + KEY.txt); each shard is written whole or not at all. Returns the
    brace pattern to train from: 'out_dir/{000000..00000N}.tar'."""
    from webdataset import TarWriter

    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format {image_format!r}: use 'png' (lossless) or 'jpg' (smaller)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs, shard = _pairs(source, count, image_size, seed), 0
    while True:
        chunk = [pair for _, pair in zip(range(per_shard), pairs)]
        if not chunk:
            break

        def write(path: Path, chunk=chunk, shard=shard) -> None:
            path.chmod(0o644)  # a data set for others to read, unlike the private temporary file
            # Plain ustar headers: webdataset's default (pax, for its float mtimes) doubles the headers a reader parses.
            with open(path, "wb") as stream, TarWriter(stream, encoder=False, format=tarfile.USTAR_FORMAT, mtime=0) as writer:
                for index, (image, caption) in enumerate(chunk):
                    writer.write({"__key__": f"{shard:06d}{index:06d}", image_format: _encode(image, image_format),
                                  "txt": caption.encode("utf-8")})

        atomic_write(out_dir / f"{shard:06d}.tar", write)
        shard += 1
    if shard == 0:
        raise ValueError("the source gave no images: nothing to write")
    return str(out_dir / f"{{000000..{shard - 1:06d}}}.tar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipkit.data.shards", description="Write WebDataset shards.")
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write shards from a clipkit data source")
    write.add_argument("source", help="'shapes', 'fashion', 'csv:PATH' (open_clip's TSV layout) or 'folder:PATH'")
    write.add_argument("out", type=Path, help="folder for 000000.tar, 000001.tar, ...")
    write.add_argument("--count", type=int, help="pairs to write (default: all, or 1000 drawn shapes)")
    write.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    write.add_argument("--image-size", type=int, default=64, help="shapes' image size (default 64)")
    write.add_argument("--format", default="png", choices=("png", "jpg"), help="image format (default png)")
    write.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kind, _, path = args.source.partition(":")
    if kind == "shapes":
        from clipkit.data.shapes import ShapesConfig, ShapesWorld

        source = ShapesWorld(ShapesConfig(image_size=args.image_size))
    elif kind == "fashion":
        from clipkit.data.fashion import load_fashion_mnist

        source = load_fashion_mnist("train")
    elif kind in ("csv", "folder") and path:
        from clipkit.data.files import ImageCaptionCSV, ImageCaptionFolder

        source = ImageCaptionCSV(path) if kind == "csv" else ImageCaptionFolder(path)
    else:
        parser.error(f"unknown source {args.source!r}: use 'shapes', 'fashion', 'csv:PATH' or 'folder:PATH'")
    pattern = write_shards(source, args.out, args.count, args.per_shard, args.format, args.seed, args.image_size)
    print(pattern)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
