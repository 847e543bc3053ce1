"""Notebook 03's exercises: cutting an image into patch vectors, and the ViT's class token and positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipkit.exercises.core import check
from clipkit.exercises.spec import Case, Exercise, Mistake, Output, register

NOTEBOOK = "03_image_encoder"


# ---------------------------------------------------------------------------------------------
# patchify(pixels, patch_size) -> [B, grid², 3 * p * p]


def patchify(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    patches = F.unfold(pixels, kernel_size=patch_size, stride=patch_size)  # [B, 3 * p * p, grid²]
    return patches.transpose(1, 2)  # [B, grid², 3 * p * p]: one row per patch, left to right, top to bottom


def _split(pixels, p):
    batch, channels, height, width = pixels.shape
    return pixels.reshape(batch, channels, height // p, p, width // p, p)  # [B, C, H, W] -> [B, C, gy, p, gx, p]


def _join(blocks, order):
    batch = blocks.shape[0]
    arranged = blocks.permute(*order)
    return arranged.reshape(batch, arranged.shape[1] * arranged.shape[2], -1)  # -> [B, grid², 3 * p * p]


def _not_transposed(pixels, patch_size):
    return F.unfold(pixels, kernel_size=patch_size, stride=patch_size)  # [B, 3 * p * p, grid²]


def _colours_last(pixels, patch_size):
    return _join(_split(pixels, patch_size), (0, 2, 4, 3, 5, 1))  # each patch flattened [p, p, 3]


def _grid_by_columns(pixels, patch_size):
    return _join(_split(pixels, patch_size), (0, 4, 2, 1, 3, 5))  # patches top to bottom, then left to right


def _patch_transposed(pixels, patch_size):
    return _join(_split(pixels, patch_size), (0, 2, 4, 1, 5, 3))  # inside a patch, columns before rows


def _reshape_without_permute(pixels, patch_size):
    batch = pixels.shape[0]
    grid = pixels.shape[-1] // patch_size
    return pixels.reshape(batch, grid * grid, -1)  # [B, 3, H, W] -> [B, grid², 3p²], but not in squares


def _patch_cases() -> list[Case]:
    cases = []
    for batch, size, p in ((2, 8, 4), (1, 12, 4)):
        # every pixel value distinct, so any reordering shows
        pixels = torch.arange(batch * 3 * size * size, dtype=torch.float32).reshape(batch, 3, size, size) / 100
        cases.append(Case(f"{batch} image(s) of 3 x {size} x {size} with patch_size {p}", {"pixels": pixels, "patch_size": p}))
    return cases


PATCHIFY = register(Exercise(
    notebook=NOTEBOOK,
    reference=patchify,
    cases=_patch_cases,
    returns=(Output("patches", "[B, grid², 3 * p * p]"),),
    differentiable=("pixels",),
    mistakes=[
        Mistake("not_transposed", _not_transposed,
                "you returned [B, 3*p*p, grid²]: one column per patch. The Transformer wants one row (token) per "
                "patch, [B, grid², 3*p*p]: transpose the last two dimensions."),
        Mistake("colours_last", _colours_last,
                "each patch is flattened pixel by pixel with the colour innermost ([p, p, 3]). The patch embedding "
                "(and Conv2d's weight, [width, 3, p, p]) expects the three colour planes one after another: [3, p, p]."),
        Mistake("grid_by_columns", _grid_by_columns,
                "the patches come top to bottom, then left to right. ViT (and Conv2d's output, flattened) orders "
                "them like text: left to right along the top row, then the next row."),
        Mistake("patch_transposed", _patch_transposed,
                "inside each patch you flattened columns before rows, so every patch is transposed. Keep "
                "[channel, row, column] order within a patch."),
        Mistake("reshape_without_permute", _reshape_without_permute,
                "a plain reshape cuts the image into runs of consecutive pixels of one colour plane, not into "
                "square patches. Split height and width into (grid, p) each, permute, then reshape."),
    ],
    verifies="one row per square patch, patches left to right and top to bottom, each flattened as "
             "[colour, row, column] like Conv2d's weight",
    hints=[
        "F.unfold(pixels, kernel_size=p, stride=p) cuts non-overlapping p x p patches; look at the shape it returns.",
        "By hand: pixels.reshape(B, 3, grid, p, grid, p) splits rows and columns; permute to "
        "[B, grid_row, grid_col, 3, p_row, p_col] and reshape to [B, grid², 3*p*p].",
    ],
))


def check_patchify(function):
    """Check notebook 03's patchify(pixels, patch_size) -> [B, grid², 3p²]; returns the function to go on with."""
    return check("patchify", function)


# ---------------------------------------------------------------------------------------------
# with_class_token(patch_tokens, class_embedding, positional_embedding) -> [B, 1 + grid², width]


def with_class_token(patch_tokens: torch.Tensor, class_embedding: torch.Tensor, positional_embedding: torch.Tensor) -> torch.Tensor:
    class_token = class_embedding.expand(len(patch_tokens), 1, -1)  # [width] -> [B, 1, width]
    return torch.cat([class_token, patch_tokens], dim=1) + positional_embedding  # [B, 1 + grid², width]


def _class_token_last(patch_tokens, class_embedding, positional_embedding):
    class_token = class_embedding.expand(len(patch_tokens), 1, -1)
    return torch.cat([patch_tokens, class_token], dim=1) + positional_embedding


def _no_positions(patch_tokens, class_embedding, positional_embedding):
    class_token = class_embedding.expand(len(patch_tokens), 1, -1)
    return torch.cat([class_token, patch_tokens], dim=1)


def _no_class_token(patch_tokens, class_embedding, positional_embedding):
    return patch_tokens + positional_embedding[1:]


def _class_token_without_position(patch_tokens, class_embedding, positional_embedding):
    class_token = class_embedding.expand(len(patch_tokens), 1, -1)
    return torch.cat([class_token, patch_tokens + positional_embedding[1:]], dim=1)


def _class_added_to_patches(patch_tokens, class_embedding, positional_embedding):
    return patch_tokens + class_embedding + positional_embedding[1:]


def _token_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(4)
    cases = []
    for batch, count, width in ((2, 4, 6), (3, 9, 4)):
        cases.append(Case(
            f"{batch} images of {count} patch tokens of width {width}",
            {
                "patch_tokens": torch.randn(batch, count, width, generator=generator),
                "class_embedding": torch.randn(width, generator=generator),
                "positional_embedding": torch.randn(count + 1, width, generator=generator),
            },
        ))
    return cases


WITH_CLASS_TOKEN = register(Exercise(
    notebook=NOTEBOOK,
    reference=with_class_token,
    cases=_token_cases,
    returns=(Output("tokens", "[B, 1 + grid², width]"),),
    differentiable=("patch_tokens", "class_embedding", "positional_embedding"),
    mistakes=[
        Mistake("class_token_last", _class_token_last,
                "the class token is at the end. Put it first: the ViT reads the image's embedding from position 0, "
                "and positional_embedding[0] is the class token's."),
        Mistake("no_positions", _no_positions,
                "no positional embedding is added, so the Transformer cannot tell where each patch came from (attention "
                "ignores order). Add positional_embedding to the whole sequence."),
        Mistake("no_class_token", _no_class_token,
                "there is no class token: you returned one token per patch. Put the learned class embedding in front "
                "(expanded to the batch) so the sequence has 1 + grid² tokens; its final state becomes the embedding."),
        Mistake("class_token_without_position", _class_token_without_position,
                "the patch tokens got positions but the class token did not: positional_embedding has 1 + grid² rows "
                "and row 0 is the class token's. Concatenate first, then add positional_embedding to everything."),
        Mistake("class_added_to_patches", _class_added_to_patches,
                "you added the class embedding to every patch token instead of putting it in front as a token of its "
                "own. torch.cat([class_token, patch_tokens], dim=1), with class_token of shape [B, 1, width]."),
    ],
    verifies="the class token comes first as a token of its own, and every token, the class token included, "
             "gets its own positional embedding",
    hints=[
        "class_embedding has shape [width]; .expand(B, 1, -1) makes a [B, 1, width] view of it without copying.",
        "torch.cat([class_token, patch_tokens], dim=1) is [B, 1 + grid², width], the shape of positional_embedding "
        "(plus the batch): add the two.",
    ],
))


def check_with_class_token(function):
    """Check notebook 03's with_class_token(patch_tokens, class_embedding, positional_embedding); returns the function to go on with."""
    return check("with_class_token", function)
