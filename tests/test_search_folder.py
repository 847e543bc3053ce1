"""A folder of plain photos searched through the on-disk embedding cache: a second start embeds nothing,
an added or changed file is embedded alone, a deleted one drops out, bad files and a damaged cache never
stop the search, and faiss finds what exact search finds."""

import os
import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from clipkit.data.files import SkippedItemsWarning, list_photos, load_image_rgb
from clipkit.interface import embed_images, embed_texts
from clipkit.io import BadFileError
from clipkit.search import EmbeddingIndex, PhotoIndex, exact_top_k
from clipkit.search import cache as store
from clipkit.search.cache import CacheRebuiltWarning, model_fingerprint
from conftest import LeavesAMarker


def picture(seed, size=(24, 20)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def save(image, path, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


@pytest.fixture
def folder(tmp_path):
    """Six photos in nested folders, PNG, JPEG and BMP, two with captions, a README that is no photo."""
    root = tmp_path / "photos"
    save(picture(0), root / "beach.png")
    save(picture(1), root / "2023" / "dog.jpg", quality=95)
    (root / "2023" / "dog.txt").write_text("a dog  on the\nbeach")
    save(picture(2), root / "2023" / "summer" / "cat.bmp")
    save(picture(3), root / "2023" / "summer" / "tree.png")
    (root / "2023" / "summer" / "tree.txt").write_text("a tree")
    save(picture(4), root / "old" / "house.png")
    save(picture(5), root / "old" / "deep" / "er" / "car.png")
    (root / "README.md").write_text("not a photo")
    return root


class Counter:
    """Counts the images the model embeds, by wrapping its encode_image."""

    def __init__(self, model, monkeypatch):
        self.rows = 0
        original = model.encode_image

        def counting(images, normalize=False):
            self.rows += images.shape[0]
            return original(images, normalize=normalize)

        monkeypatch.setattr(model, "encode_image", counting)


def build(folder, model, tmp_path, **options):
    options.setdefault("progress", False)
    return PhotoIndex(folder, model, cache=tmp_path / "cache", **options)


def reference_embeddings(model, photos):
    """What a search must find: every photo decoded and embedded afresh, no cache involved."""
    return embed_images(model, [load_image_rgb(photo.path, draft=model.image_size) for photo in photos])


def test_nested_folders_captions_optional_and_results_match_a_recomputation(folder, tiny_word_clip, tmp_path):
    photos = build(folder, tiny_word_clip, tmp_path)
    names = [photo.name for photo in photos.photos]
    assert names == ["2023/dog.jpg", "2023/summer/cat.bmp", "2023/summer/tree.png", "beach.png",
                     "old/deep/er/car.png", "old/house.png"]
    assert photos.captions == ["a dog on the beach", None, "a tree", None, None, None]
    assert photos.report.embedded == 6 and photos.report.hashed == 6 and photos.report.skipped == 0
    expected = reference_embeddings(tiny_word_clip, photos.photos)
    query = ["a red circle", "a blue square"]
    scores, indices = exact_top_k(embed_texts(tiny_word_clip, query), expected, 3)
    result = photos.search_text(query, k=3)
    assert torch.equal(result.indices, indices) and torch.allclose(result.scores, scores, atol=1e-5)
    assert result.items[0] == [names[i] for i in indices[0]]
    by_path = photos.search_image(folder / "old" / "house.png", k=1)
    assert by_path.items[0] == ["old/house.png"] and by_path.scores[0, 0] > 0.999


def test_second_start_embeds_nothing_and_hashes_nothing(folder, tiny_word_clip, tmp_path, monkeypatch):
    first = build(folder, tiny_word_clip, tmp_path)
    counter = Counter(tiny_word_clip, monkeypatch)
    second = build(folder, tiny_word_clip, tmp_path)
    assert counter.rows == 0
    assert (second.report.embedded, second.report.hashed, second.report.reused) == (0, 0, 6)
    assert torch.equal(second.index.embeddings, first.index.embeddings)


def test_added_file_is_embedded_alone_and_deleted_one_drops_out(folder, tiny_word_clip, tmp_path, monkeypatch):
    build(folder, tiny_word_clip, tmp_path)
    counter = Counter(tiny_word_clip, monkeypatch)
    save(picture(9), folder / "new" / "boat.png")
    added = build(folder, tiny_word_clip, tmp_path)
    assert counter.rows == 1 and added.report.embedded == 1 and added.report.hashed == 1
    assert "new/boat.png" in [photo.name for photo in added.photos]
    (folder / "beach.png").unlink()
    removed = build(folder, tiny_word_clip, tmp_path)
    assert counter.rows == 1 and removed.report.dropped == 1 and len(removed) == 6
    assert "beach.png" not in [photo.name for photo in removed.photos]
    assert torch.allclose(removed.index.embeddings, reference_embeddings(tiny_word_clip, removed.photos), atol=1e-5)


def test_changed_file_is_re_embedded(folder, tiny_word_clip, tmp_path, monkeypatch):
    before = build(folder, tiny_word_clip, tmp_path)
    counter = Counter(tiny_word_clip, monkeypatch)
    target = folder / "old" / "house.png"
    stat = target.stat()
    save(picture(42), target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse file systems: make the change visible
    after = build(folder, tiny_word_clip, tmp_path)
    assert counter.rows == 1 and after.report.embedded == 1 and after.report.dropped == 1
    position = [photo.name for photo in after.photos].index("old/house.png")
    assert not torch.allclose(after.index.embeddings[position], before.index.embeddings[position])
    assert torch.allclose(after.index.embeddings, reference_embeddings(tiny_word_clip, after.photos), atol=1e-5)


def test_moved_or_copied_photo_costs_a_hash_not_an_embedding(folder, tiny_word_clip, tmp_path, monkeypatch):
    build(folder, tiny_word_clip, tmp_path)
    counter = Counter(tiny_word_clip, monkeypatch)
    shutil.copy(folder / "beach.png", folder / "copy of beach.png")
    (folder / "old" / "house.png").rename(folder / "house.png")
    moved = build(folder, tiny_word_clip, tmp_path)
    assert counter.rows == 0 and moved.report.hashed == 2 and len(moved) == 7


def test_corrupt_image_is_skipped_counted_and_not_decoded_again(folder, tiny_word_clip, tmp_path, monkeypatch):
    (folder / "broken.jpg").write_bytes((folder / "2023" / "dog.jpg").read_bytes()[:200])
    (folder / "fake.png").write_bytes(b"not an image at all")
    with pytest.warns(SkippedItemsWarning, match=r"skipped 2 of 8 items"):
        first = build(folder, tiny_word_clip, tmp_path)
    assert len(first) == 6 and {name for name, _ in first.skipped} == {"broken.jpg", "fake.png"}
    decoded = []
    monkeypatch.setattr(PhotoIndex, "_load", lambda self, path: decoded.append(path))
    with pytest.warns(SkippedItemsWarning, match=r"skipped 2 of 8 items"):
        second = build(folder, tiny_word_clip, tmp_path)
    assert decoded == [] and second.report.skipped == 2


def test_identical_copies_are_embedded_once(folder, tiny_word_clip, tmp_path, monkeypatch):
    shutil.copy(folder / "beach.png", folder / "old" / "beach again.png")
    counter = Counter(tiny_word_clip, monkeypatch)
    photos = build(folder, tiny_word_clip, tmp_path)
    assert counter.rows == 6 and len(photos) == 7


def test_another_model_or_changed_weights_never_read_stale_rows(folder, tiny_word_clip, tmp_path, monkeypatch):
    build(folder, tiny_word_clip, tmp_path)
    fingerprint = model_fingerprint(tiny_word_clip)
    counter = Counter(tiny_word_clip, monkeypatch)
    weight = next(tiny_word_clip.visual.parameters())
    with torch.no_grad():
        weight.add_(0.01)
    try:
        assert model_fingerprint(tiny_word_clip) != fingerprint
        rebuilt = build(folder, tiny_word_clip, tmp_path)
        assert counter.rows == 6 and rebuilt.report.embedded == 6
    finally:
        with torch.no_grad():
            weight.sub_(0.01)


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "wrong json", "pickle", "folder in its place"])
@pytest.mark.parametrize("which", ["files", "embeddings"])
def test_damaged_cache_is_rebuilt_with_a_warning(folder, tiny_word_clip, tmp_path, monkeypatch, damage, which):
    first = build(folder, tiny_word_clip, tmp_path)
    fingerprint = model_fingerprint(tiny_word_clip)
    path = (tmp_path / "cache" / store.FILES_FILE if which == "files"
            else tmp_path / "cache" / fingerprint[:16] / store.EMBEDDINGS_FILE)
    data = path.read_bytes()
    path.unlink()
    if damage == "folder in its place":
        path.mkdir()
    else:
        path.write_bytes({"truncated": data[: len(data) // 2], "random bytes": os.urandom(300), "empty": b"",
                          "wrong json": b'{"format": "clipkit.search.EmbeddingCache", "version": 1, "files": [3]}',
                          "pickle": pickle.dumps({"weight": LeavesAMarker(tmp_path / "marker")})}[damage])
    counter = Counter(tiny_word_clip, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = build(folder, tiny_word_clip, tmp_path)
    messages = [str(w.message) for w in caught]
    assert any(w.category is CacheRebuiltWarning and "rebuilt" in str(w.message) for w in caught), messages
    assert not (tmp_path / "marker").exists()  # nothing was unpickled
    if damage == "folder in its place":  # cannot be replaced: the search still works, and says the cache was not saved
        assert any("could not save the search cache" in message for message in messages)
        assert torch.allclose(again.index.embeddings, first.index.embeddings, atol=1e-6)
        return
    assert torch.allclose(again.index.embeddings, first.index.embeddings, atol=1e-6)
    assert counter.rows == (6 if which == "embeddings" else 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheRebuiltWarning)
        assert build(folder, tiny_word_clip, tmp_path).report.embedded == 0  # the rebuilt cache is whole again


def test_faiss_index_is_persisted_reloaded_and_equals_exact_search(folder, tiny_word_clip, tmp_path, monkeypatch):
    first = build(folder, tiny_word_clip, tmp_path, faiss_from=1)
    assert first.index.backend == "faiss"
    saved = list((tmp_path / "cache").rglob("faiss-*.index"))
    assert len(saved) == 1
    loaded = []
    original = EmbeddingIndex.read_faiss
    monkeypatch.setattr(EmbeddingIndex, "read_faiss", classmethod(lambda cls, *a: loaded.append(1) or original(*a)))
    second = build(folder, tiny_word_clip, tmp_path, faiss_from=1)
    assert loaded == [1] and second.index.backend == "faiss"
    queries = embed_texts(tiny_word_clip, ["a red circle", "a green star", "a blue square"])
    scores, indices = exact_top_k(queries, reference_embeddings(tiny_word_clip, second.photos), 4)
    result = second.index.search(queries, 4)
    assert torch.equal(result.indices, indices) and torch.allclose(result.scores, scores, atol=1e-5)
    saved[0].write_bytes(saved[0].read_bytes()[:50])
    with pytest.warns(CacheRebuiltWarning, match="faiss"):
        third = build(folder, tiny_word_clip, tmp_path, faiss_from=1)
    assert torch.equal(third.index.search(queries, 4).indices, indices)
    save(picture(7), folder / "extra.png")
    build(folder, tiny_word_clip, tmp_path, faiss_from=1)
    assert len(list((tmp_path / "cache").rglob("faiss-*.index"))) == 1  # the stale ordering is removed


def test_read_faiss_rejects_damaged_and_mismatched_files(tmp_path):
    pytest.importorskip("faiss")
    index = EmbeddingIndex(8, backend="faiss")
    index.add(torch.randn(5, 8), [str(i) for i in range(5)])
    path = index.write_faiss(tmp_path / "vectors.index")
    with pytest.raises(BadFileError, match="holds 5 vectors"):
        EmbeddingIndex.read_faiss(path, ["a", "b"])
    for damaged in (b"", b"\x00" * 40, os.urandom(500), path.read_bytes()[:60]):
        path.write_bytes(damaged)
        with pytest.raises(BadFileError, match="vectors.index"):
            EmbeddingIndex.read_faiss(path, [str(i) for i in range(5)])


def test_list_photos_reads_any_pil_format_and_reports_bad_captions(tmp_path):
    save(picture(0), tmp_path / "a.webp")
    save(picture(1), tmp_path / "b.tiff")
    save(picture(2), tmp_path / ".hidden" / "c.png")
    (tmp_path / "b.txt").write_bytes("caf\xe9".encode("latin-1"))
    photos, problems = list_photos(tmp_path)
    assert [photo.name for photo in photos] == ["a.webp", "b.tiff"]
    assert photos[1].caption is None and problems[0][0] == "b.txt" and "UTF-8" in problems[0][1]


def test_a_folder_without_usable_photos_is_a_clear_error(tmp_path, tiny_word_clip):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.png").write_bytes(b"nope")
    with pytest.warns(SkippedItemsWarning), pytest.raises(ValueError, match="no photos to search"):
        build(tmp_path / "photos", tiny_word_clip, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build(tmp_path / "missing", tiny_word_clip, tmp_path)


def test_app_folder_collection_serves_plain_photos_through_the_cache(folder, tiny_word_clip, tmp_path, monkeypatch):
    from clipkit.app.collections import folder_collection
    from clipkit.app.services import search

    collection = folder_collection(folder, name="mine", cache=tmp_path / "cache")
    hits = search(tiny_word_clip, collection, folder / "2023" / "summer" / "cat.bmp", k=3)
    assert hits[0][1] == "1.00 2023/summer/cat.bmp"  # no caption: the photo's path in the folder
    labels = [label.split(" ", 1)[1] for _, label in search(tiny_word_clip, collection, "a red circle", k=6)]
    assert "a dog on the beach" in labels and "a tree" in labels
    counter = Counter(tiny_word_clip, monkeypatch)
    again = folder_collection(folder, name="mine", cache=tmp_path / "cache")
    assert search(tiny_word_clip, again, "a red circle", k=6)[0][1].split(" ", 1)[1] == labels[0]
    assert counter.rows == 0  # a restarted app reads the cache
