"""An on-disk cache of image embeddings, per model and per file content.

Two things are remembered, each in one file written with `clipkit.io.atomic_write`:

- `files.json` (any model): each photo's size, modification time and content digest, so a second
  start hashes only the files that changed, and which contents could not be decoded (skipped, and
  not tried again until they change);
- `<model fingerprint>/embeddings.safetensors`: one unit row per distinct file content, with the
  content digests as a second tensor, so rows and digests can never disagree.

The model fingerprint hashes the model's class, description, preprocessing and every weight, so
another model, or the same model trained further, never reads stale rows. A cache file that cannot
be read is rebuilt with a `CacheRebuiltWarning`: a cache is never a reason to crash.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import weakref
from pathlib import Path

import torch

from clipkit.interface import CLIPBase
from clipkit.io import BadFileError, atomic_write, load_safetensors, read_json, read_safetensors_header

CACHE_FORMAT = "clipkit.search.EmbeddingCache"
CACHE_VERSION = 1
FILES_FILE = "files.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
DIGEST_BYTES = 16  # 128-bit BLAKE2b: collisions are out of reach for any photo collection

_fingerprints: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (weights stamp, fingerprint)


class CacheRebuiltWarning(UserWarning):
    """A cache file was damaged or foreign; it is rebuilt (the photos themselves are untouched)."""


def _weights_stamp(model: torch.nn.Module) -> tuple:
    """Changes whenever a weight is replaced or updated in place (torch bumps `_version` on every write)."""
    return tuple((name, t.data_ptr(), t._version) for name, t in model.state_dict(keep_vars=True).items())


def model_fingerprint(model: CLIPBase) -> str:
    """A hex digest of everything that decides a model's image embeddings: its class, description,
    preprocessing (image size, mean, std) and every weight's bytes.

    Hashing a ViT-B/32's ~600 MB of weights takes about a second, once per model object: the result
    is remembered until a weight changes (in-place training updates included).
    """
    stamp = _weights_stamp(model)
    known = _fingerprints.get(model)
    if known is not None and known[0] == stamp:
        return known[1]
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    about = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "describe": model.describe(),
        "image": [model.image_size, list(model.image_mean), list(model.image_std)],
    }
    digest.update(json.dumps(about, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # raw bytes, whatever the dtype
    fingerprint = digest.hexdigest()
    _fingerprints[model] = (stamp, fingerprint)
    return fingerprint


def file_digest(path: Path) -> str:
    """The hex BLAKE2b digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def warn_rebuilt(path: Path, error: Exception) -> None:
    """The one warning for a cache file that is thrown away and rebuilt."""
    warnings.warn(
        f"the search cache {path} could not be read and is rebuilt ({error}). Nothing is lost but time: "
        f"the photos are hashed or embedded again.", CacheRebuiltWarning, stacklevel=3,
    )


# -- files.json: what each file held when last seen -----------------------------------------------


def read_file_memo(folder: Path) -> dict[str, dict]:
    """name -> {"size", "mtime_ns", "digest"}; an empty memo when there is none or it is damaged."""
    path = folder / FILES_FILE
    if not path.exists():
        return {}
    try:
        document = read_json(path, "photo search cache")
        if document.get("format") != CACHE_FORMAT or document.get("version") != CACHE_VERSION:
            raise BadFileError(path, f"format {document.get('format')!r} version {document.get('version')!r}")
        files = document["files"]
        if not isinstance(files, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("size"), int) and isinstance(entry.get("mtime_ns"), int)
            and isinstance(entry.get("digest"), str) for entry in files.values()
        ):
            raise BadFileError(path, "the file entries are damaged")
        return files
    except (BadFileError, KeyError) as error:
        warn_rebuilt(path, error)
        return {}


def write_file_memo(folder: Path, files: dict[str, dict]) -> None:
    document = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "files": files}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / FILES_FILE, lambda path: path.write_text(json.dumps(document)))


def bad_digests(files: dict[str, dict]) -> dict[str, str]:
    """digest -> reason, for contents that failed to decode (remembered so they are not decoded again)."""
    return {entry["digest"]: entry["bad"] for entry in files.values() if isinstance(entry.get("bad"), str)}


# -- <fingerprint>/embeddings.safetensors: one row per file content ------------------------------


def read_embeddings(folder: Path, fingerprint: str, dim: int) -> dict[str, torch.Tensor]:
    """digest -> unit row [dim] saved for this model; empty when none, damaged or another model's."""
    path = folder / EMBEDDINGS_FILE
    if not path.exists():
        return {}
    try:
        metadata = read_safetensors_header(path, "photo search cache").get("__metadata__") or {}
        if metadata.get("format") != CACHE_FORMAT or metadata.get("model") != fingerprint:
            raise BadFileError(path, f"it belongs to another model or format ({metadata.get('format')!r})")
        tensors = load_safetensors(path, "photo search cache")
        rows, digests = tensors.get("embeddings"), tensors.get("digests")
        if (rows is None or digests is None or rows.ndim != 2 or rows.shape[1] != dim or rows.dtype != torch.float32
                or digests.shape != (rows.shape[0], DIGEST_BYTES) or digests.dtype != torch.uint8
                or not bool(torch.isfinite(rows).all())):
            raise BadFileError(path, "its tensors have the wrong shapes or types, or hold NaN")
    except BadFileError as error:
        warn_rebuilt(path, error)
        return {}
    raw = digests.numpy().tobytes()
    hexes = [raw[i : i + DIGEST_BYTES].hex() for i in range(0, len(raw), DIGEST_BYTES)]
    return dict(zip(hexes, rows))


def write_embeddings(folder: Path, fingerprint: str, dim: int, rows: dict[str, torch.Tensor]) -> None:
    """Save digest -> unit row for one model, as one file (rows and digests land together or not at all)."""
    import numpy as np
    from safetensors.torch import save_file

    digests = list(rows)
    matrix = torch.stack([rows[d] for d in digests]).float() if digests else torch.empty(0, dim)  # [N, D]
    packed = np.frombuffer(b"".join(bytes.fromhex(d) for d in digests), dtype=np.uint8)
    packed = torch.from_numpy(packed.copy()).reshape(len(digests), DIGEST_BYTES)  # [N * 16] -> [N, 16]
    tensors = {"embeddings": matrix.contiguous(), "digests": packed}
    metadata = {"format": CACHE_FORMAT, "version": str(CACHE_VERSION), "model": fingerprint}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / EMBEDDINGS_FILE, lambda path: save_file(tensors, str(path), metadata=metadata))
