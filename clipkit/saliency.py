"""Where does the model look? Saliency maps for an image and a caption.

- `gradient_saliency`: how much each pixel moves the image-caption cosine similarity, i.e. the
  gradient of the similarity with respect to the input pixels (Simonyan et al., 2014), optionally
  averaged over noisy copies of the image (SmoothGrad, Smilkov et al., 2017), as a magnitude per
  pixel, blurred a little and scaled to [0, 1]. Works with any model of the clipkit interface.
- `patch_similarity`: which parts of the image the caption matches. Each patch token of a ViT,
  after the final LayerNorm and the projection, lives in the shared space and can be compared with
  the caption directly; mode="values" keeps each patch's own value in the last block (MaskCLIP,
  Zhou et al., 2022), which localises far better. For the CNN the same is exact: the image
  embedding is the projection of the *mean* feature vector, so the projected feature at each
  position is that position's share of it (a class activation map, Zhou et al., 2016).
- `overlay`: a map drawn over its image, as an RGB array for matplotlib or Gradio.

The model is never changed: no parameter gradients are kept and its train/eval mode is restored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from clipkit.image_encoder import ConvEncoder, VisionTransformer
from clipkit.interface import CLIPBase, embed_texts
from clipkit.prompts import class_prompts


def as_float_image(image) -> torch.Tensor:
    """One image as float [3, H, W] in [0, 1], from a uint8 or float tensor [3, H, W] (or [1, 3, H, W]),
    a PIL image or an H x W x 3 uint8 array."""
    if not isinstance(image, torch.Tensor):
        array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"expected an H x W x 3 picture, got an array of shape {array.shape}")
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected one image [3, H, W], got shape {tuple(image.shape)}: pass images one at a time")
    if image.dtype == torch.uint8:
        return image.float() / 255
    if not image.is_floating_point():
        raise TypeError(f"images must be uint8 or float in [0, 1], got {image.dtype}")
    return image


def text_embedding(model: CLIPBase, text) -> torch.Tensor:
    """The caption's unit embedding [D]: `text` is a caption, a list of captions (their unit embeddings
    averaged and normalised again, like a prompt ensemble) or an embedding [D] already."""
    if isinstance(text, torch.Tensor):
        if text.ndim != 1:
            raise ValueError(f"a text embedding must be one vector [D], got shape {tuple(text.shape)}")
        return F.normalize(text.detach().float(), dim=-1)
    texts = [text] if isinstance(text, str) else list(text)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("text must be a non-empty caption, a list of them, or an embedding tensor [D]")
    return F.normalize(embed_texts(model, texts).mean(dim=0), dim=-1)


def _on_model(model: CLIPBase, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels on the model's device, in its dtype (float64 models are how the tests check gradients)."""
    return pixels.to(device=model.device, dtype=model.logit_scale.dtype)


def similarity_gradient(model: CLIPBase, image, text) -> torch.Tensor:
    """d cos(image embedding, caption embedding) / d pixels, [3, H, W] at the image's own resolution
    (pixels in [0, 1]); the raw material of `gradient_saliency`."""
    pixels = _on_model(model, as_float_image(image)[None]).requires_grad_(True)  # [3, H, W] -> [1, 3, H, W]
    target = text_embedding(model, text).to(pixels)
    # Eval mode (BatchNorm must not learn from a saliency request) without parameter gradients; the
    # gradient wanted is the pixels', so autograd is switched back on inside.
    with model.evaluating(), torch.enable_grad():
        similarity = F.normalize(model.encode_image(model.to_model_input(pixels)), dim=-1) @ target
        (gradient,) = torch.autograd.grad(similarity.sum(), pixels)
    return gradient[0]


def _gaussian_blur(saliency: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=saliency.dtype, device=saliency.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = saliency[None, None]  # [H, W] -> [1, 1, H, W]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))  # along rows
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))  # along columns
    return x[0, 0]


def gradient_saliency(
    model,
    image,
    text,
    samples: int = 1,
    noise: float = 0.1,
    blur: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """Saliency [H, W] in [0, 1] of `image` for `text`: the largest absolute gradient of their cosine
    similarity over the three colours of each pixel, averaged over `samples` copies of the image with
    Gaussian pixel noise of std `noise` (SmoothGrad; samples=1 is the plain gradient, no noise),
    blurred with a Gaussian of std `blur` pixels (0 for none), divided by its maximum."""
    if samples < 1 or noise < 0 or blur < 0:
        raise ValueError(f"samples must be >= 1 and noise, blur >= 0; got samples={samples}, noise={noise}, blur={blur}")
    clean = as_float_image(image)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(clean.shape[1:])
    for index in range(samples):
        copy = clean if samples == 1 else (clean + noise * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
        total += similarity_gradient(model, copy, text).abs().amax(dim=0).float().cpu()  # [3, H, W] -> [H, W]
    saliency = total / samples
    if blur > 0:
        saliency = _gaussian_blur(saliency, blur)
    peak = saliency.max()
    return saliency / peak if peak > 0 else saliency


PATCH_MODES = ("tokens", "values")


def _own_values_block(block, hidden: torch.Tensor) -> torch.Tensor:
    """A residual attention block in which every token attends only to itself: its attention output
    is its own value, projected (MaskCLIP's change to the last block)."""
    width = hidden.shape[-1]
    values = block.attention.qkv(block.attention_norm(hidden))[..., 2 * width :]  # q, k, v side by side: keep v
    hidden = hidden + block.attention.out_proj(values)
    return hidden + block.mlp(block.mlp_norm(hidden))


def _projected_tokens(model: CLIPBase, pixels: torch.Tensor, mode: str) -> torch.Tensor:
    """Every spatial token of the image tower, taken to the shared space: [B, h, w, D]. Only clipkit's
    own towers (a MiniCLIP's `visual`) expose their tokens; other models' image towers are opaque."""
    visual = getattr(model, "visual", None)
    if isinstance(visual, VisionTransformer):
        hidden = visual.tokens(pixels)  # [B, 1 + grid², width]
        blocks = list(visual.transformer.blocks)
        for block in blocks[:-1] if mode == "values" else blocks:
            hidden = block(hidden)
        if mode == "values":
            hidden = _own_values_block(blocks[-1], hidden)
        patches = visual.projection(visual.ln_post(hidden[:, 1:]))  # [B, grid², D]: LayerNorm acts per token
        return patches.view(len(pixels), visual.grid_size, visual.grid_size, -1)  # [B, grid², D] -> [B, g, g, D]
    if isinstance(visual, ConvEncoder):
        if mode != "tokens":
            raise ValueError(f"mode={mode!r} changes a ViT's last attention; a CNN has none (its map is exact): use mode='tokens'")
        maps = visual.feature_maps(pixels)  # [B, C, h, w]
        positions = maps.permute(0, 2, 3, 1)  # [B, C, h, w] -> [B, h, w, C]
        if visual.pool == "centroid":
            # only the mean's third of the projection splits into per-position shares; the centroids
            # (where each channel fires) belong to no one position and are left out
            return positions @ visual.projection.weight[:, : maps.shape[1]].T  # [B, h, w, D]
        return visual.projection(positions)  # [B, h, w, D]
    raise TypeError(
        f"patch_similarity needs a MiniCLIP whose image tower is clipkit's ViT or CNN, got {type(model).__name__}"
        f" with {type(visual).__name__}: for an open_clip model convert it first with model.to_miniclip(), or "
        "use gradient_saliency, which works with any model"
    )


@torch.no_grad()
def patch_similarity(model, image, text, normalize: bool = True, mode: str = "tokens") -> torch.Tensor:
    """[h, w]: how well each patch token (ViT) or feature-map position (CNN), taken through the image
    tower's final LayerNorm and projection, matches the caption. normalize=True gives cosine
    similarities; normalize=False gives dot products with the unit caption embedding, whose mean over
    positions is the (unnormalised) image embedding's dot product for the CNN.

    ViT only, mode="values": in the last block each patch attends only to itself (MaskCLIP, Zhou et al.,
    2022). Only the class token's output is ever trained to match captions; the last attention mixes
    the other tokens with the whole image, and keeping each patch's own value undoes that mixing."""
    if mode not in PATCH_MODES:
        raise ValueError(f"mode must be one of {PATCH_MODES}, got {mode!r}")
    pixels = _on_model(model, as_float_image(image)[None])  # [3, H, W] -> [1, 3, H, W]
    target = text_embedding(model, text).to(pixels)
    with model.evaluating():
        tokens = _projected_tokens(model, model.to_model_input(pixels), mode)[0]  # [h, w, D]
    if normalize:
        tokens = F.normalize(tokens, dim=-1)
    return (tokens @ target).cpu()


def overlay(image, saliency: torch.Tensor, alpha: float = 0.7, cmap: str = "inferno", scale: int = 1) -> np.ndarray:
    """`image` with `saliency` (any [h, w], resized to the image, values in [0, 1]) painted over it:
    uint8 [H * scale, W * scale, 3]. Salient pixels take the colour map's colour, the rest stay visible."""
    from matplotlib import colormaps

    picture = as_float_image(image).float().cpu()  # [3, H, W]
    height, width = picture.shape[1:]
    heat = saliency.detach().float().cpu()
    low, high = heat.min(), heat.max()
    heat = (heat - low) / (high - low) if high > low else torch.zeros_like(heat)
    heat = F.interpolate(heat[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]  # [h, w] -> [H, W]
    colours = torch.from_numpy(colormaps[cmap](heat.numpy())[..., :3]).float()  # [H, W, 3]
    weight = (alpha * heat)[..., None]  # [H, W] -> [H, W, 1]
    blended = picture.permute(1, 2, 0) * (1 - weight) + colours * weight  # [H, W, 3]
    if scale > 1:
        blended = blended.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
    return (blended.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def top_label_text(label: str, templates: Sequence[str]) -> list[str]:
    """The captions a zero-shot label was scored with: the label in each template ("a {}" -> "a red circle")."""
    return [class_prompts([label], template)[0] for template in templates]
