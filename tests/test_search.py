"""The embedding index against a brute-force reference, and recall against a naive loop."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from clipkit.interface import CLIPBase, embed_images, embed_texts
from clipkit.search import EmbeddingIndex, exact_top_k, index_images, retrieval_recall, search_image, search_text


def _random(rows: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))


def _brute_force(vectors: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: full cosine-similarity matrix, sorted."""
    scores = F.normalize(queries, dim=1) @ F.normalize(vectors, dim=1).T  # [Q, N]
    order = scores.argsort(dim=1, descending=True)[:, :k]
    return scores.gather(1, order), order


@pytest.fixture
def filled() -> tuple[EmbeddingIndex, torch.Tensor]:
    vectors = _random(3000, 16, seed=0) * 5  # not unit length: the index normalises
    index = EmbeddingIndex(16)
    for start in range(0, 3000, 700):  # several adds exercise the geometric growth
        batch = vectors[start : start + 700]
        index.add(batch, items=[{"id": start + row} for row in range(batch.shape[0])])
    return index, vectors


def test_search_matches_brute_force(filled):
    index, vectors = filled
    queries = _random(7, 16, seed=1)
    result = index.search(queries, k=12)
    ref_scores, ref_indices = _brute_force(vectors, queries, 12)
    assert len(index) == 3000
    assert torch.equal(result.indices, ref_indices)
    torch.testing.assert_close(result.scores, ref_scores, rtol=0, atol=1e-5)
    assert result.items == [[{"id": int(position)} for position in row] for row in ref_indices]


def test_chunked_merge_matches_one_block():
    vectors, queries = F.normalize(_random(1000, 8, seed=2), dim=1), F.normalize(_random(5, 8, seed=3), dim=1)
    # 5 queries x 17 rows per chunk forces ~60 chunks, some smaller than k at the end
    chunked = exact_top_k(queries, vectors, k=20, max_score_elements=5 * 17)
    whole = exact_top_k(queries, vectors, k=20, max_score_elements=10**9)
    assert torch.equal(chunked[1], whole[1])
    torch.testing.assert_close(chunked[0], whole[0], rtol=0, atol=0)


def test_single_query_and_scale_invariance(filled):
    index, vectors = filled
    one = index.search(vectors[42], k=3)
    assert one.scores.shape == (1, 3) and one.indices.shape == (1, 3)
    assert int(one.indices[0, 0]) == 42 and float(one.scores[0, 0]) == pytest.approx(1.0, abs=1e-5)
    assert one.hits(0)[0] == (pytest.approx(float(one.scores[0, 0])), 42, {"id": 42})
    assert torch.equal(index.search(vectors[42] * 1e-3, k=3).indices, one.indices)
    torch.testing.assert_close(index.embeddings.norm(dim=1), torch.ones(3000))


def test_items_default_to_none():
    index = EmbeddingIndex(4)
    index.add(torch.eye(4))
    assert index.search(torch.tensor([0.0, 0.0, 1.0, 0.1]), k=2).items == [[None, None]]


def test_k_larger_than_index_returns_all_with_warning():
    index = EmbeddingIndex(4)
    index.add(_random(3, 4, seed=4), items=["a", "b", "c"])
    with pytest.warns(UserWarning, match="larger than the index"):
        result = index.search(_random(2, 4, seed=5), k=10)
    assert result.indices.shape == (2, 3)
    assert sorted(result.indices[0].tolist()) == [0, 1, 2]


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (lambda index: EmbeddingIndex(4).search(torch.ones(4), k=1), ValueError, "index is empty"),
        (lambda index: index.search(torch.ones(5), k=1), ValueError, "dimension 5 .* dimension 4"),
        (lambda index: index.add(torch.ones(2, 3)), ValueError, "dimension 3 .* dimension 4"),
        (lambda index: index.add(torch.tensor([[1.0, float("nan"), 0, 0]])), ValueError, "row 0 contains NaN"),
        (lambda index: index.search(torch.tensor([1.0, float("inf"), 0, 0]), k=1), ValueError, "NaN or inf"),
        (lambda index: index.add(torch.zeros(1, 4)), ValueError, "all zeros"),
        (lambda index: index.add(torch.tensor([[1e30, 0, 0, 0]])), ValueError, "too large to normalise"),
        (lambda index: index.search(torch.empty(0, 4), k=1), ValueError, "queries is empty"),
        (lambda index: index.search(torch.ones(4), k=0), ValueError, "positive int"),
        (lambda index: index.add(torch.ones(2, 4), items=["only one"]), ValueError, "one item per vector"),
        (lambda index: index.add(torch.ones(1, 4), items=[object()]), TypeError, "item 0 .* JSON"),
        (lambda index: index.add(torch.ones(1, 4, 1)), ValueError, r"shape \[N, D\]"),
        (lambda index: EmbeddingIndex(4, backend="annoy"), ValueError, "backend must be one of"),
    ],
)
def test_bad_input_names_the_problem(action, error, message):
    index = EmbeddingIndex(4)
    index.add(torch.eye(4))
    with pytest.raises(error, match=message):
        action(index)
    assert len(index) == 4  # a rejected add leaves the index as it was


def test_save_load_round_trip(filled, tmp_path):
    index, _ = filled
    index.save(tmp_path / "index")
    assert sorted(path.name for path in (tmp_path / "index").iterdir()) == ["embeddings.safetensors", "index.json"]
    loaded = EmbeddingIndex.load(tmp_path / "index")
    assert len(loaded) == len(index) and loaded.dim == index.dim and loaded.items == index.items
    assert torch.equal(loaded.embeddings, index.embeddings)
    queries = _random(3, 16, seed=6)
    assert torch.equal(loaded.search(queries, k=5).indices, index.search(queries, k=5).indices)


def test_load_rejects_missing_and_inconsistent_folders(filled, tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json is missing"):
        EmbeddingIndex.load(tmp_path / "nothing-here")
    index, _ = filled
    folder = index.save(tmp_path / "index")
    metadata = json.loads((folder / "index.json").read_text())
    metadata["items"] = metadata["items"][:-1]
    (folder / "index.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="inconsistent"):
        EmbeddingIndex.load(folder)


def test_empty_index_saves_and_loads(tmp_path):
    EmbeddingIndex(8).save(tmp_path)
    loaded = EmbeddingIndex.load(tmp_path)
    assert len(loaded) == 0 and loaded.dim == 8


def test_faiss_backend_matches_torch(filled, tmp_path):
    pytest.importorskip("faiss")
    index, vectors = filled
    with_faiss = EmbeddingIndex(16, backend="faiss")
    with_faiss.add(vectors[:1000], items=index.items[:1000])
    with_faiss.add(vectors[1000:], items=index.items[1000:])
    queries = _random(9, 16, seed=7)
    expected, got = index.search(queries, k=10), with_faiss.search(queries, k=10)
    assert torch.equal(got.indices, expected.indices)
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-5)
    assert got.items == expected.items
    reloaded = EmbeddingIndex.load(with_faiss.save(tmp_path), backend="torch")
    assert reloaded.backend == "torch" and torch.equal(reloaded.search(queries, k=10).indices, expected.indices)


def test_missing_faiss_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        EmbeddingIndex(4, backend="faiss")


@pytest.mark.gpu
def test_search_on_gpu_matches_cpu(filled):
    index, vectors = filled
    on_gpu = EmbeddingIndex(16, device="cuda")
    on_gpu.add(vectors.cuda())
    queries = _random(4, 16, seed=8)
    assert torch.equal(on_gpu.search(queries, k=10).indices, index.search(queries, k=10).indices)


# --- model-facing helpers, with a stub model -----------------------------------------------


class _PositionTokenizer:
    """Reads the caption "image i" as the single token i."""

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[int(text.removeprefix("image "))] for text in texts])  # [B, 1]


class ProjectionModel(CLIPBase):
    """A deterministic stand-in for a CLIP model behind the clipkit interface: images are embedded by
    a fixed random projection of their pixels, and the caption "image i" by the same projection of
    registered image i."""

    tokenizer = _PositionTokenizer()

    def __init__(self, images: torch.Tensor, dim: int = 12):
        super().__init__()
        self.pixels = images.float() / 255  # what to_model_input makes of uint8 images with mean 0, std 1
        self.projection = _random(images[0].numel(), dim, seed=9)
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))
        self.image_calls = 0

    image_size, image_mean, image_std = 6, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    @property
    def embed_dim(self) -> int:
        return self.projection.shape[1]

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        self.image_calls += 1
        features = images.flatten(1) @ self.projection  # [B, 3, H, W] -> [B, 3*H*W] -> [B, D]
        return F.normalize(features, dim=1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.pixels[tokens[:, 0]].flatten(1) @ self.projection  # [B, 3, H, W] -> [B, D]
        return F.normalize(features, dim=1) if normalize else features


@pytest.fixture
def photos() -> torch.Tensor:
    return torch.randint(0, 256, (50, 3, 6, 6), generator=torch.Generator().manual_seed(10), dtype=torch.uint8)


def test_index_images_equals_embedding_then_adding(photos):
    model = ProjectionModel(photos)
    names = [f"photo-{i}.png" for i in range(50)]
    index = index_images(model, photos, items=names, batch_size=16, progress=False)
    assert model.image_calls == 4  # ceil(50 / 16) batches
    assert len(index) == 50 and index.items == names and index.dim == 12
    torch.testing.assert_close(index.embeddings, embed_images(model, photos))


def test_index_images_extends_an_existing_index(photos):
    model = ProjectionModel(photos)
    index = index_images(model, photos[:20], progress=False)
    assert index_images(model, photos[20:], index=index, progress=False) is index
    assert len(index) == 50


def test_search_text_and_image_find_the_right_photo(photos):
    model = ProjectionModel(photos)
    index = index_images(model, photos, items=list(range(50)), progress=False)
    by_text = search_text(index, model, "image 17", k=3)
    assert by_text.items[0][0] == 17 and float(by_text.scores[0, 0]) == pytest.approx(1.0, abs=1e-5)
    by_texts = search_text(index, model, ["image 3", "image 44"], k=1)
    assert by_texts.items == [[3], [44]]
    assert search_image(index, model, photos[29], k=1).items == [[29]]
    with pytest.raises(ValueError, match="non-empty list of captions"):
        search_text(index, model, [], k=1)


def test_helpers_follow_the_clipkit_model_interface(photos):
    """A real (untrained) MiniCLIP through the helpers gives what embed_images/embed_texts give."""
    from clipkit.config import config_from_preset
    from clipkit.model import MiniCLIP
    from clipkit.tokenizer import WordTokenizer

    tokenizer = WordTokenizer(["a", "red", "blue", "circle", "square"], context_length=12)
    model = MiniCLIP(config_from_preset("tiny-cpu", tokenizer=tokenizer))
    index = index_images(model, photos, items=list(range(50)), batch_size=32, progress=False)
    torch.testing.assert_close(index.embeddings, embed_images(model, photos), rtol=0, atol=1e-5)
    expected = index.search(embed_texts(model, ["a red circle"]), k=4)
    assert torch.equal(search_text(index, model, "a red circle", k=4).indices, expected.indices)
    assert search_image(index, model, photos[7], k=1).items == [[7]]


# --- retrieval recall against a naive loop -------------------------------------------------


def _naive_recall(images: torch.Tensor, texts: torch.Tensor, owners: list[int], k: int) -> tuple[float, float]:
    """One query at a time: sort every candidate, take the first k, look for a hit."""
    images, texts = F.normalize(images, dim=1), F.normalize(texts, dim=1)
    text_hits = 0
    for text, owner in zip(texts, owners):
        ranked = sorted(range(len(images)), key=lambda i: -float(text @ images[i]))
        text_hits += owner in ranked[:k]
    image_hits, scored_images = 0, 0
    for image_id, image in enumerate(images):
        if image_id not in owners:
            continue
        scored_images += 1
        ranked = sorted(range(len(texts)), key=lambda t: -float(image @ texts[t]))
        image_hits += any(owners[t] == image_id for t in ranked[:k])
    return text_hits / len(texts), image_hits / scored_images


def test_recall_matches_naive_loop():
    generator = torch.Generator().manual_seed(11)
    images = torch.randn(40, 8, generator=generator)
    # 1 to 4 captions per image, each a noisy copy of its image; the last 5 images own none
    owners = [image for image in range(35) for _ in range(1 + image % 4)]
    texts = images[owners] + 1.2 * torch.randn(len(owners), 8, generator=generator)
    got = retrieval_recall(images, texts, torch.tensor(owners), ks=(1, 5, 10), max_score_elements=97)
    for k in (1, 5, 10):
        text_to_image, image_to_text = _naive_recall(images, texts, owners, k)
        assert got[f"text_to_image_recall@{k}"] == pytest.approx(text_to_image)
        assert got[f"image_to_text_recall@{k}"] == pytest.approx(image_to_text)
    assert 0 < got["text_to_image_recall@1"] < got["text_to_image_recall@10"] < 1  # a non-trivial case


def test_recall_with_k_beyond_gallery_counts_everything():
    images = _random(3, 4, seed=12)
    with pytest.warns(UserWarning, match="exceeds the gallery"):
        got = retrieval_recall(images, images[[0, 1, 2, 2]], torch.tensor([0, 1, 2, 2]), ks=(1, 10))
    assert got["text_to_image_recall@10"] == 1.0 and got["image_to_text_recall@10"] == 1.0


@pytest.mark.parametrize(
    ("owners", "message"),
    [
        (torch.tensor([0, 1, 5]), "outside"),
        (torch.tensor([0.0, 1.0, 2.0]), "integer tensor"),
        (torch.tensor([0, 1]), "one image index per caption"),
    ],
)
def test_recall_rejects_bad_caption_owners(owners, message):
    with pytest.raises(ValueError, match=message):
        retrieval_recall(_random(3, 4, seed=13), _random(3, 4, seed=14), owners, ks=(1,))


def test_recall_rejects_mismatched_widths():
    with pytest.raises(ValueError, match="dimension 5 .* dimension 4"):
        retrieval_recall(_random(3, 4, seed=15), _random(3, 5, seed=16), torch.arange(3), ks=(1,))
