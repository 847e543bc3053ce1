"""Saliency maps: the gradient against finite differences, patch similarities against a recomputation,
and the saliency image in the app's zero-shot tab."""

import pytest
import torch
import torch.nn.functional as F

from clipkit.data import ShapesWorld
from clipkit.data.transforms import normalize_images
from clipkit.config import config_from_preset
from clipkit.interface import embed_texts
from clipkit.model import MiniCLIP
from clipkit.saliency import (
    as_float_image,
    gradient_saliency,
    overlay,
    patch_similarity,
    similarity_gradient,
    text_embedding,
)
from clipkit.tokenizer import WordTokenizer


@pytest.fixture(scope="module")
def world():
    return ShapesWorld()


@pytest.fixture(scope="module")
def tokenizer(world):
    return WordTokenizer.fit(world.sample(300, seed=1).captions, context_length=24)


def _model(preset, tokenizer, **overrides):
    torch.manual_seed(0)
    return MiniCLIP(config_from_preset(preset, tokenizer=tokenizer, embed_dim=32, **overrides)).eval()


@pytest.fixture(scope="module")
def cnn(tokenizer):
    return _model("tiny-cpu", tokenizer)


@pytest.fixture(scope="module")
def vit(tokenizer):
    return _model("tiny-cpu-vit", tokenizer, vision={"layers": 2})


@pytest.fixture(scope="module")
def image(world):
    return world.sample(1, seed=3, objects=1).images[0]


def _similarity(model, pixels, text):
    """cos(image embedding, caption embedding) for float pixels [3, H, W] at the model's size."""
    x = normalize_images(pixels[None], model.image_mean, model.image_std)
    return (F.normalize(model.encode_image(x), dim=-1) @ text_embedding(model, text).to(x.dtype)).item()


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_similarity_gradient_matches_finite_differences(kind, tokenizer, image):
    model = _model("tiny-cpu" if kind == "cnn" else "tiny-cpu-vit", tokenizer).double()
    pixels = image.double() / 255
    gradient = similarity_gradient(model, pixels, "a red circle")
    assert gradient.shape == (3, 32, 32) and gradient.dtype == torch.float64
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        direction = torch.randn(pixels.shape, generator=generator, dtype=torch.float64)
        step = 1e-6
        numeric = (_similarity(model, pixels + step * direction, "a red circle")
                   - _similarity(model, pixels - step * direction, "a red circle")) / (2 * step)
        assert abs(numeric - (gradient * direction).sum().item()) < 1e-6 * max(1.0, abs(numeric))


def test_gradient_saliency_is_a_normalised_map_and_leaves_the_model_alone(cnn, image):
    cnn.train()
    state = {name: tensor.clone() for name, tensor in cnn.state_dict().items()}
    rng = torch.get_rng_state()
    saliency = gradient_saliency(cnn, image, "a red circle", samples=3)
    assert saliency.shape == (32, 32) and float(saliency.min()) >= 0 and float(saliency.max()) == pytest.approx(1.0)
    assert cnn.training and all(torch.equal(state[n], t) for n, t in cnn.state_dict().items())
    assert all(p.grad is None for p in cnn.parameters()) and torch.equal(rng, torch.get_rng_state())
    cnn.eval()
    assert torch.equal(saliency, gradient_saliency(cnn, image, "a red circle", samples=3))  # seeded noise


def test_plain_gradient_saliency_is_the_largest_absolute_gradient_over_colours(cnn, image):
    expected = similarity_gradient(cnn, image, "a red circle").abs().amax(dim=0)
    assert torch.allclose(gradient_saliency(cnn, image, "a red circle", blur=0), expected / expected.max(), atol=1e-6)


def test_inputs_of_every_kind_give_the_same_map(cnn, image):
    from PIL import Image

    picture = Image.fromarray(image.permute(1, 2, 0).numpy())
    reference = gradient_saliency(cnn, image, "a red circle")
    assert torch.allclose(gradient_saliency(cnn, picture, "a red circle"), reference, atol=1e-6)
    assert torch.allclose(gradient_saliency(cnn, image.float() / 255, embed_texts(cnn, ["a red circle"])[0]), reference, atol=1e-5)
    with pytest.raises(ValueError, match="one image"):
        gradient_saliency(cnn, torch.zeros(2, 3, 32, 32), "a red circle")
    with pytest.raises(ValueError, match="non-empty caption"):
        gradient_saliency(cnn, image, "")


def test_a_list_of_captions_is_averaged_like_a_prompt_ensemble(cnn):
    captions = ["a red circle", "a picture of a red circle"]
    expected = F.normalize(F.normalize(embed_texts(cnn, captions), dim=-1).mean(dim=0), dim=-1)
    assert torch.allclose(text_embedding(cnn, captions), expected, atol=1e-6)


def test_cnn_patch_similarity_decomposes_the_image_text_score(cnn, image):
    """The CNN's embedding is the projection of the mean feature vector, so the per-position scores
    (unnormalised) average to the image embedding's dot product with the caption."""
    scores = patch_similarity(cnn, image, "a red circle", normalize=False)
    assert scores.shape == (4, 4)  # 32 px, stem stride 2, two halving stages
    x = normalize_images(image[None].float() / 255, cnn.image_mean, cnn.image_std)
    with torch.no_grad():
        whole = (cnn.encode_image(x)[0] @ text_embedding(cnn, "a red circle")).item()
    assert scores.mean().item() == pytest.approx(whole, abs=1e-5)
    cosines = patch_similarity(cnn, image, "a red circle")
    assert float(cosines.abs().max()) <= 1 + 1e-6


def test_vit_patch_similarity_matches_a_recomputation_by_hand(vit, image):
    visual = vit.visual
    x = normalize_images(image[None].float() / 255, vit.image_mean, vit.image_std)
    with torch.no_grad():
        patches = F.unfold(x, visual.patch_embedding.kernel_size, stride=visual.patch_embedding.stride)  # [1, 3p², g²]
        tokens = patches.transpose(1, 2) @ visual.patch_embedding.weight.flatten(1).T  # [1, g², width]
        tokens = torch.cat([visual.class_embedding.expand(1, 1, -1), tokens], dim=1) + visual.positional_embedding
        hidden = visual.ln_pre(tokens)
        for block in visual.transformer.blocks:
            hidden = block(hidden)
        final = F.layer_norm(hidden, (hidden.shape[-1],), visual.ln_post.weight, visual.ln_post.bias)
        projected = final @ visual.projection.weight.T  # [1, 1 + g², D]
        assert torch.allclose(projected[0, 0], vit.encode_image(x)[0], atol=1e-5)  # the class token is the embedding
        text = text_embedding(vit, "a red circle")
        expected = (F.normalize(projected[0, 1:], dim=-1) @ text).view(visual.grid_size, visual.grid_size)
    assert torch.allclose(patch_similarity(vit, image, "a red circle"), expected, atol=1e-5)


def test_vit_values_mode_lets_each_patch_attend_only_to_itself(vit, image):
    """MaskCLIP's last block, recomputed with the fused kernel and a mask that lets a token see only itself."""
    visual = vit.visual
    x = normalize_images(image[None].float() / 255, vit.image_mean, vit.image_std)
    with torch.no_grad():
        hidden = visual.tokens(x)
        *first, last = visual.transformer.blocks
        for block in first:
            hidden = block(hidden)
        batch, length, width = hidden.shape
        heads = last.attention.heads
        qkv = last.attention.qkv(last.attention_norm(hidden)).view(batch, length, 3, heads, width // heads)  # [B, L, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, L, Dh]
        itself = torch.eye(length, dtype=torch.bool)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=itself).transpose(1, 2).reshape(batch, length, width)
        hidden = hidden + last.attention.out_proj(attended)
        hidden = hidden + last.mlp(last.mlp_norm(hidden))
        projected = visual.projection(visual.ln_post(hidden[0, 1:]))  # [grid², D]
        expected = (F.normalize(projected, dim=-1) @ text_embedding(vit, "a red circle")).view(visual.grid_size, -1)
    assert torch.allclose(patch_similarity(vit, image, "a red circle", mode="values"), expected, atol=1e-5)
    assert not torch.allclose(patch_similarity(vit, image, "a red circle"), expected, atol=1e-3)


def test_values_mode_is_for_a_vit_and_modes_are_checked(cnn, image):
    with pytest.raises(ValueError, match="a CNN has none"):
        patch_similarity(cnn, image, "a red circle", mode="values")
    with pytest.raises(ValueError, match="mode must be one of"):
        patch_similarity(cnn, image, "a red circle", mode="attention")


def test_patch_similarity_needs_a_clipkit_image_tower(image):
    from clipkit.interface import CLIPBase

    class Other(CLIPBase):  # a model of the interface whose image tower is not one of clipkit's
        image_size, image_mean, image_std = 32, (0.5,) * 3, (0.5,) * 3

        def __init__(self):
            super().__init__()
            self.logit_scale = torch.nn.Parameter(torch.zeros(()))

    with pytest.raises(TypeError, match="to_miniclip"):
        patch_similarity(Other(), image, torch.ones(4))


def test_overlay_paints_salient_pixels_and_keeps_the_rest(image):
    saliency = torch.zeros(4, 4)
    saliency[0, 0] = 1.0
    painted = overlay(image, saliency, scale=2)
    assert painted.shape == (64, 64, 3) and painted.dtype.name == "uint8"
    original = (as_float_image(image).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert (painted[::2, ::2][-8:, -8:] == original[-8:, -8:]).all()  # far from the salient corner: untouched
    assert (painted[0, 0] != original[0, 0]).any()
    assert (overlay(image, torch.zeros(4, 4)) == original).all()


# ---------------------------------------------------------------------------------------------
# The app's zero-shot tab


def test_the_app_paints_the_saliency_of_the_top_label(cnn, tmp_path, image):
    from PIL import Image

    from clipkit.app import classify, saliency_picture

    path = tmp_path / "red.png"
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    labels = "red circle, blue square, green star"
    painted, label = saliency_picture(cnn, str(path), labels, "a {}")
    probabilities = classify(cnn, str(path), labels, "a {}")
    assert label == max(probabilities, key=probabilities.get)
    assert painted.shape == (256, 256, 3)  # 32 px enlarged 8 times
    expected = overlay(image, gradient_saliency(cnn, image, [f"a {label}"], samples=4), scale=8)
    assert abs(painted.astype(int) - expected.astype(int)).max() <= 1


def test_the_zero_shot_tab_shows_the_map_without_a_new_endpoint(cnn):
    import gradio as gr

    from clipkit.app import build_app

    app = build_app(cnn, tabs=("zero-shot",), examples=[])
    names = {fn.api_name for fn in app.fns.values() if fn.api_visibility != "private"}
    assert names == {"classify", "classify_sketch"}
    explains = [fn for fn in app.fns.values() if fn.name == "explain"]
    assert len(explains) == 2 and all(fn.api_visibility == "private" for fn in explains)
    images = [block for block in app.blocks.values() if isinstance(block, gr.Image) and block.elem_id == "zero-shot-saliency"]
    assert len(images) == 1 and all(images[0]._id in [out._id for out in fn.outputs] for fn in explains)


def test_a_centroid_pooled_cnn_maps_the_mean_share_of_each_position(tokenizer, image):
    """With centroid pooling the embedding is projection([mean, centroid x, centroid y]); the
    per-position scores average to the mean third's share of the image-caption score."""
    cnn = _model("tiny-cpu", tokenizer, vision={"cnn_pool": "centroid"})
    scores = patch_similarity(cnn, image, "a red circle", normalize=False)
    x = normalize_images(image[None].float() / 255, cnn.image_mean, cnn.image_std)
    with torch.no_grad():
        maps = cnn.visual.feature_maps(x)
        mean_share = maps.mean(dim=(2, 3)) @ cnn.visual.projection.weight[:, : maps.shape[1]].T
        whole = (mean_share[0] @ text_embedding(cnn, "a red circle")).item()
    assert scores.shape == maps.shape[-2:]
    assert scores.mean().item() == pytest.approx(whole, abs=1e-5)
