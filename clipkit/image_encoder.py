"""The image towers: a small ResNet-style CNN that trains in minutes on a laptop CPU, and a Vision
Transformer with the structure of openai/CLIP's (patch embedding, class token, positional
embedding, LayerNorm before and after the Transformer, projection).

Both take images [B, 3, S, S] already normalised with the model's mean and std and return
embeddings [B, embed_dim]. The ViT reuses the Transformer in `clipkit.transformer`.
"""

from __future__ import annotations

import torch
from torch import nn

from clipkit.config import VisionConfig
from clipkit.transformer import Transformer

IMAGE_ENCODERS = ("vit", "cnn")
CNN_BLOCKS = ("residual", "plain")
CNN_POOLS = ("mean", "max", "centroid")


def check_images(images: torch.Tensor, image_size: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(
            f"expected images of shape [batch, 3, {image_size}, {image_size}], got {tuple(images.shape)}: "
            "resize and normalise them with model.preprocess, or use clipkit.interface.embed_images"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"expected float images normalised with the model's mean/std, got {images.dtype}: "
            "use model.preprocess or clipkit.data.transforms.normalize_images(images / 255, mean, std)"
        )


class VisionTransformer(nn.Module):
    """Images -> patches -> tokens; the class token's final state, normalised and projected, is the embedding."""

    def __init__(self, config: VisionConfig, embed_dim: int):
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}: "
                "choose sizes so the patches tile the image"
            )
        self.image_size = config.image_size
        self.grid_size = config.image_size // config.patch_size
        width = config.width
        # A convolution with stride = kernel = patch size is a Linear layer applied to each
        # non-overlapping patch; no bias, as in OpenAI's model (ln_pre follows anyway).
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, config.layers, config.heads, config.mlp_ratio, config.act, causal=False)
        self.ln_post = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.projection.weight, std=scale)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The Transformer's input: class token then one token per patch, [B, 1 + grid², width]."""
        check_images(images, self.image_size)
        patches = self.patch_embedding(images)  # [B, width, grid, grid]
        patches = patches.flatten(2).transpose(1, 2)  # [B, grid², width]
        class_token = self.class_embedding.expand(patches.shape[0], 1, -1)  # [B, 1, width]
        x = torch.cat([class_token, patches], dim=1) + self.positional_embedding
        return self.ln_pre(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        class_state = self.transformer(self.tokens(images), pool_index=0)  # [B, width]: the class token's final state
        # LayerNorm acts per token, so normalising only the class token gives what OpenAI's
        # ln_post-then-pick computes, without normalising grid² tokens that are thrown away.
        return self.projection(self.ln_post(class_state))


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut; a strided 1x1 shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # Zero-initialising the last BatchNorm's scale starts every block as the identity,
        # which speeds up early training (Goyal et al., 2017).
        nn.init.zeros_(self.bn2.weight)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class PlainBlock(nn.Module):
    """VGG's two 3x3 convolutions, no shortcut; max pooling first when the stage halves the resolution.
    Pooling keeps the strongest edge of each 2x2 window where a strided convolution samples one
    pixel in four: a shape a few pixels wide keeps its corners."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.MaxPool2d(2) if stride == 2 else nn.Identity(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvEncoder(nn.Module):
    """A small ResNet (or, with `cnn_block="plain"`, a small VGG): a 3x3 stem, stages of blocks (each
    stage after the first halves the resolution and widens the channels; `cnn_blocks=(0, 1, 1)` leaves
    the first to the stem alone), global pooling (average; the maximum with `cnn_pool="max"`; with
    "centroid" also where each channel fires), projection."""

    def __init__(self, config: VisionConfig, embed_dim: int):
        super().__init__()
        channels = tuple(config.cnn_channels)
        blocks_per_stage = config.blocks_per_stage()
        self.image_size = config.image_size
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, stride=config.cnn_stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        if config.cnn_block not in CNN_BLOCKS:
            raise ValueError(f"unknown cnn_block {config.cnn_block!r}: use one of {CNN_BLOCKS}")
        block = BasicBlock if config.cnn_block == "residual" else PlainBlock
        blocks = []
        in_channels = channels[0]
        for stage, (out_channels, count) in enumerate(zip(channels, blocks_per_stage)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(in_channels, out_channels, stride))
                in_channels = out_channels
        self.stages = nn.Sequential(*blocks)
        if config.cnn_pool not in CNN_POOLS:
            raise ValueError(f"unknown cnn_pool {config.cnn_pool!r}: use one of {CNN_POOLS}")
        self.pool = config.cnn_pool
        self.projection = nn.Linear(3 * in_channels if self.pool == "centroid" else in_channels, embed_dim, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """The last stage's output [B, C, H', W'], before pooling."""
        check_images(images, self.image_size)
        return self.stages(self.stem(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.feature_maps(images)  # [B, C, H, W], non-negative (each block ends in a ReLU)
        if self.pool == "max":
            return self.projection(maps.amax(dim=(2, 3)))  # [B, C]: how strongly each feature fires anywhere
        pooled = maps.mean(dim=(2, 3))  # [B, C]: what is there
        if self.pool == "centroid":
            pooled = torch.cat([pooled, *centroids(maps)], dim=1)  # [B, 3C]: and where each channel fires
        return self.projection(pooled)


def centroids(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's centre of mass (x, y in [-1, 1]) over a non-negative feature map [B, C, H, W]:
    where the pixels that fire a channel lie. An average forgets that, since a convolution slides
    the same filter everywhere; "on the left" needs it."""
    height, width = maps.shape[-2:]
    ys = torch.linspace(-1, 1, height, device=maps.device, dtype=maps.dtype).view(1, 1, height, 1)  # [1, 1, H, 1]
    xs = torch.linspace(-1, 1, width, device=maps.device, dtype=maps.dtype).view(1, 1, 1, width)  # [1, 1, 1, W]
    mass = maps.sum(dim=(2, 3)) + 1e-6  # [B, C]; a silent channel sits at the centre
    return (maps * xs).sum(dim=(2, 3)) / mass, (maps * ys).sum(dim=(2, 3)) / mass


def build_image_encoder(config: VisionConfig, embed_dim: int) -> nn.Module:
    if config.kind == "vit":
        return VisionTransformer(config, embed_dim)
    if config.kind == "cnn":
        return ConvEncoder(config, embed_dim)
    raise ValueError(f"unknown image encoder kind {config.kind!r}: use one of {IMAGE_ENCODERS}")
