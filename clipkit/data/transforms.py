"""From stored images to model input: preprocessing, augmentation, in-memory data sets and loaders.

Two paths lead to the same normalised float tensor `[B, 3, S, S]` that every model takes:
- photos on disk (PIL images) go through `build_transform`, one image at a time in a Dataset;
- data sets held in memory as uint8 `[N, 3, H, W]` (shapes, Fashion-MNIST, emoji) are batched
  first and converted with `images_to_model_input`, which is far faster than a per-image transform.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

# CLIP's image statistics (openai/CLIP, open_clip OPENAI_DATASET_MEAN/STD): models trained from
# scratch here use them too, so a checkpoint and a pretrained model share one preprocessing.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_rgb(image):
    """PIL images of any mode -> RGB (a top-level function so DataLoader workers can pickle it)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def build_transform(image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD, train: bool = False):
    """A PIL image -> normalised float tensor [3, S, S], as CLIP preprocesses.

    Evaluation: resize the short side to `image_size` (bicubic), centre crop, normalise.
    Training adds a mild random resized crop and brightness/contrast/saturation jitter. Hue is left
    alone and nothing is flipped: captions name colours, and often left and right.
    """
    from torchvision import transforms

    normalize = transforms.Normalize(mean=mean, std=std)
    if train:
        steps = [
            transforms.RandomResizedCrop(
                image_size, scale=(0.8, 1.0), ratio=(0.9, 1.1), interpolation=transforms.InterpolationMode.BICUBIC
            ),
            _to_rgb,
            transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1),
        ]
    else:
        steps = [
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            _to_rgb,
        ]
    return transforms.Compose(steps + [transforms.ToTensor(), normalize])


def _check_channels(x: torch.Tensor, what: str) -> None:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{what} must be a batch [B, 3, H, W] (or [B, 1, H, W]); got shape {tuple(x.shape)}")


def normalize_images(x: torch.Tensor, mean=OPENAI_MEAN, std=OPENAI_STD) -> torch.Tensor:
    """Float images [B, 3, H, W] in [0, 1] -> normalised model input. Differentiable (steering uses it)."""
    _check_channels(x, "normalize_images input")
    if not x.is_floating_point():
        raise TypeError(f"normalize_images expects float images in [0, 1], got {x.dtype}; "
                        "use images_to_model_input for uint8 batches")
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)  # [3] -> [1, 3, 1, 1]
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)  # [3] -> [1, 3, 1, 1]
    return (x - mean_t) / std_t


def resize_images(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Float [B, C, H, W] -> [B, C, S, S]: short side to S (bicubic, antialiased), then a centre crop."""
    height, width = x.shape[-2:]
    if (height, width) == (image_size, image_size):
        return x
    scale = image_size / min(height, width)
    new_size = (max(image_size, round(height * scale)), max(image_size, round(width * scale)))
    x = F.interpolate(x, size=new_size, mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)
    top = (new_size[0] - image_size) // 2
    left = (new_size[1] - image_size) // 2
    return x[..., top : top + image_size, left : left + image_size]


def images_to_model_input(
    images: torch.Tensor, image_size: int | None = None, mean=OPENAI_MEAN, std=OPENAI_STD
) -> torch.Tensor:
    """uint8 [B, 3, H, W] (as data sets hold them) -> normalised float [B, 3, S, S] on the same device.

    Single-channel batches are repeated to three channels; `image_size=None` keeps the size.
    """
    _check_channels(images, "images_to_model_input input")
    if images.dtype != torch.uint8:
        raise TypeError(f"images_to_model_input expects uint8 images, got {images.dtype}; "
                        "use normalize_images for float images in [0, 1]")
    x = images.float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if image_size is not None:
        x = resize_images(x, image_size)
    return normalize_images(x, mean, std)


def augment_shapes_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    max_shift: int = 2,
    brightness: float = 0.1,
    noise_std: float = 0.01,
) -> torch.Tensor:
    """Train-time augmentation for float [B, 3, H, W] shape images in [0, 1], before normalisation.

    A small random shift (edges replicated), a brightness scale per image and a little noise.
    No flips: "a red circle left of a blue square" would become false, and no hue change: the
    captions name colours. Shifts stay below the position jitter so "on the left" stays true.
    """
    _check_channels(x, "augment_shapes_batch input")
    batch, _, height, width = x.shape
    device = x.device
    shifts = torch.randint(-max_shift, max_shift + 1, (batch, 2), generator=generator).to(device)
    rows = (torch.arange(height, device=device).view(1, -1) - shifts[:, :1]).clamp(0, height - 1)  # [B, H]
    cols = (torch.arange(width, device=device).view(1, -1) - shifts[:, 1:]).clamp(0, width - 1)  # [B, W]
    batch_index = torch.arange(batch, device=device).view(-1, 1, 1)  # [B] -> [B, 1, 1]
    # advanced indexing gives [B, H, W, C]; move channels back to [B, C, H, W]
    x = x.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    scale = 1.0 + (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * brightness  # [B] as [B, 1, 1, 1]
    noise = torch.randn(x.shape, generator=generator) * noise_std
    return (x * scale.to(device) + noise.to(device)).clamp(0.0, 1.0)


def jpeg_roundtrip(image, quality: int):
    """A PIL image saved as a JPEG at `quality` (1-95) and read back: the 8x8 blocks, ringing and
    halved colour resolution of a compressed photo."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def jpeg_images(images: torch.Tensor, qualities: Sequence[int]) -> torch.Tensor:
    """uint8 [N, 3, H, W] each passed through `jpeg_roundtrip` at its own quality, on their device."""
    import numpy as np
    from PIL import Image

    if len(qualities) != len(images):
        raise ValueError(f"one JPEG quality per image: got {len(qualities)} qualities for {len(images)} images")
    pixels = images.permute(0, 2, 3, 1).cpu().numpy()  # [N, 3, H, W] -> [N, H, W, 3] for PIL
    out = np.stack([np.asarray(jpeg_roundtrip(Image.fromarray(p), q)) for p, q in zip(pixels, qualities)])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)  # [N, H, W, 3] -> [N, 3, H, W]


@dataclass(eq=False)  # tensors do not compare with ==
class CaptionedImages(torch.utils.data.Dataset):
    """Images held in memory with one caption each: what the built-in data sets return.

    Indexing gives `(image, caption)`: the uint8 image [3, H, W], or `transform(image)` when a
    transform is set. For whole-batch work use the fields directly.
    """

    images: torch.Tensor  # uint8 [N, 3, H, W] (or [N, 1, H, W] for grey data kept single-channel)
    captions: list[str]  # one caption per image
    labels: torch.Tensor | None = None  # LongTensor [N] of class indices, when the data has classes
    class_names: list[str] | None = None  # label -> name, for zero-shot prompts
    transform: Callable | None = None  # applied to each uint8 [3, H, W] image in __getitem__
    # Fields holding one entry per image, which `subset` slices; subclasses extend this.
    per_item_fields: tuple[str, ...] = field(default=("images", "captions", "labels"), repr=False)

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            raise TypeError("images must be a uint8 tensor [N, 3, H, W]; convert floats with (x * 255).round().byte()")
        if self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(f"images must have shape [N, 3, H, W]; got {tuple(self.images.shape)}")
        for name in self.per_item_fields:
            value = getattr(self, name)
            if value is not None and len(value) != len(self.images):
                raise ValueError(f"{name} has {len(value)} entries for {len(self.images)} images; give one per image")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.captions[index]

    def subset(self, indices: Sequence[int] | torch.Tensor):
        """The same kind of data set holding only `indices` (in that order)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        positions = index.tolist()
        changes: dict[str, Any] = {}
        for name in self.per_item_fields:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                changes[name] = value[index]
            elif value is not None:
                changes[name] = [value[i] for i in positions]
        return dataclasses.replace(self, **changes)


def collate_images_and_captions(batch: Sequence[tuple[Any, str]]) -> tuple[torch.Tensor, list[str]]:
    """Stack image tensors and keep captions as a list of strings."""
    images, captions = zip(*batch)
    if not isinstance(images[0], torch.Tensor):
        raise TypeError(
            f"the data set returned {type(images[0]).__name__} images, which cannot be batched; "
            "give it a transform such as clipkit.data.build_transform(image_size)"
        )
    return torch.stack(images), list(captions)


def default_num_workers(dataset) -> int:
    """0 for data already in memory (worker processes would only copy it); otherwise one worker per
    spare core, at most 4, so decoding overlaps training without starving it (1 on a 2-core laptop)."""
    if isinstance(dataset, (CaptionedImages, torch.utils.data.TensorDataset)):
        return 0
    if getattr(dataset, "in_memory", False):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))


def make_loader(
    dataset,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int | None = None,
    drop_last: bool = False,
    seed: int | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader of `(images [B, ...], captions list[str])` batches with defaults fit for a laptop.

    `seed` fixes the shuffle order; workers default to `default_num_workers(dataset)`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    workers = default_num_workers(dataset) if num_workers is None else num_workers
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        drop_last=drop_last,
        generator=generator,
        collate_fn=collate_images_and_captions,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
