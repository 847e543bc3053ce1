"""Preprocessing against torchvision, the shapes augmentation against a naive shift, loaders' defaults."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from clipkit.data import (
    OPENAI_MEAN,
    OPENAI_STD,
    CaptionedImages,
    ShapesWorld,
    augment_shapes_batch,
    build_transform,
    images_to_model_input,
    make_loader,
    normalize_images,
)
from clipkit.data.transforms import default_num_workers


def random_uint8(batch=2, height=20, width=28, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (batch, 3, height, width), dtype=np.uint8))


def test_normalize_images_per_channel_and_differentiable():
    x = torch.rand(2, 3, 5, 5, requires_grad=True)
    out = normalize_images(x)
    for c in range(3):
        assert torch.allclose(out[:, c], (x[:, c] - OPENAI_MEAN[c]) / OPENAI_STD[c])
    out.sum().backward()
    assert torch.allclose(x.grad[:, 1], torch.full((2, 5, 5), 1 / OPENAI_STD[1]))
    with pytest.raises(TypeError, match="images_to_model_input"):
        normalize_images(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        normalize_images(torch.rand(3, 5, 5))


def test_uint8_batches_and_pil_images_reach_the_same_model_input():
    images = random_uint8(height=24, width=24)
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    expected = torch.stack([build_transform(24)(p) for p in pil])
    assert torch.allclose(images_to_model_input(images, 24), expected, atol=1e-5)
    assert torch.allclose(images_to_model_input(images), expected, atol=1e-5)  # no size: kept as is


def test_resizing_matches_torchvision_resize_and_centre_crop():
    images = random_uint8(height=20, width=28)
    reference = TF.center_crop(
        TF.resize(images.float() / 255, 16, interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1), 16
    )
    ours = images_to_model_input(images, 16)
    assert ours.shape == (2, 3, 16, 16)
    assert torch.allclose(ours, normalize_images(reference), atol=1e-4)


def test_single_channel_batches_are_repeated():
    grey = random_uint8()[:, :1]
    out = images_to_model_input(grey)
    raw = grey.float() / 255
    for c in range(3):
        assert torch.allclose(out[:, c], (raw[:, 0] - OPENAI_MEAN[c]) / OPENAI_STD[c])
    with pytest.raises(TypeError, match="normalize_images"):
        images_to_model_input(torch.rand(1, 3, 4, 4))


def test_train_transform_keeps_size_and_varies():
    image = Image.fromarray(random_uint8(1, 40, 50)[0].permute(1, 2, 0).numpy())
    train = build_transform(32, train=True)
    torch.manual_seed(0)
    a, b = train(image), train(image)
    assert a.shape == b.shape == (3, 32, 32) and not torch.equal(a, b)
    grey = image.convert("L")
    assert build_transform(32)(grey).shape == (3, 32, 32)


def naive_shift(image, dy, dx):
    """Content moves by (dy, dx); pixels that come in from outside copy the nearest edge."""
    _, height, width = image.shape
    out = torch.empty_like(image)
    for r in range(height):
        for c in range(width):
            out[:, r, c] = image[:, min(max(r - dy, 0), height - 1), min(max(c - dx, 0), width - 1)]
    return out


def test_shapes_augmentation_shifts_without_flipping():
    x = torch.rand(6, 3, 10, 12)
    generator = torch.Generator().manual_seed(0)
    shifts = torch.randint(-2, 3, (6, 2), generator=torch.Generator().manual_seed(0))
    out = augment_shapes_batch(x, generator=generator, brightness=0.0, noise_std=0.0)
    for image, result, (dy, dx) in zip(x, out, shifts.tolist()):
        assert torch.equal(result, naive_shift(image, dy, dx))
    again = augment_shapes_batch(x, generator=torch.Generator().manual_seed(0), brightness=0.0, noise_std=0.0)
    assert torch.equal(out, again)


def test_shapes_augmentation_keeps_left_objects_on_the_left():
    world = ShapesWorld()
    sample = world.sample(64, seed=0, objects=2)
    x = augment_shapes_batch(sample.images.float() / 255, generator=torch.Generator().manual_seed(1))
    assert x.shape == (64, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    palette = {name: torch.tensor(rgb, dtype=torch.float32) / 255 for name, rgb in world.colours.items()}
    for image, scene in zip(x, sample.scenes):
        a, b = scene.objects
        if a.colour == b.colour:
            continue
        columns = []
        for obj in (a, b):
            distance = (image - palette[obj.colour][:, None, None]).norm(dim=0)
            rows, cols = torch.nonzero(distance < 0.2, as_tuple=True)
            columns.append(cols.float().mean())
        if scene.relation == "left of":
            assert columns[0] < columns[1]
        if scene.relation == "right of":
            assert columns[0] > columns[1]


def test_captioned_images_validate_and_serve_pairs():
    data = CaptionedImages(random_uint8(4, 8, 8), ["a", "b", "c", "d"], labels=torch.arange(4))
    image, caption = data[2]
    assert image.dtype == torch.uint8 and caption == "c"
    with pytest.raises(ValueError, match="3 entries for 4 images"):
        CaptionedImages(random_uint8(4, 8, 8), ["a", "b", "c"])
    with pytest.raises(TypeError, match="uint8"):
        CaptionedImages(torch.rand(2, 3, 4, 4), ["a", "b"])
    scaled = CaptionedImages(random_uint8(2, 8, 8), ["a", "b"], transform=lambda img: images_to_model_input(img[None], 16)[0])
    assert scaled[0][0].shape == (3, 16, 16)


def test_loaders_default_to_no_workers_in_memory_and_shuffle_by_seed():
    data = CaptionedImages(random_uint8(10, 4, 4), [str(i) for i in range(10)])
    assert default_num_workers(data) == 0
    loader = make_loader(data, batch_size=4, shuffle=True, seed=3)
    assert loader.num_workers == 0
    order = [c for _, captions in loader for c in captions]
    assert sorted(order) == sorted(data.captions) and order != data.captions
    assert order == [c for _, captions in make_loader(data, batch_size=4, shuffle=True, seed=3) for c in captions]
    assert len(list(make_loader(data, batch_size=4, drop_last=True))) == 2


def test_file_backed_data_get_a_worker_per_spare_core(monkeypatch):
    class OnDisk(torch.utils.data.Dataset):
        def __len__(self):
            return 1

    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert default_num_workers(OnDisk()) == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert default_num_workers(OnDisk()) == 4


def test_pil_images_without_a_transform_get_a_helpful_error():
    class Pictures(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return Image.new("RGB", (4, 4)), "caption"

    with pytest.raises(TypeError, match="build_transform"):
        next(iter(make_loader(Pictures(), batch_size=2, num_workers=0)))


def test_jpeg_images_compress_each_image_at_its_own_quality_as_pil_does():
    import io

    from clipkit.data.transforms import jpeg_images

    images = torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8)
    out = jpeg_images(images, [10, 50, 95])
    for image, quality, got in zip(images, [10, 50, 95], out):
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
        reference = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        assert torch.equal(got, torch.from_numpy(reference).permute(2, 0, 1))
    errors = [(out[i].float() - images[i].float()).abs().mean() for i in range(3)]
    assert errors[0] > errors[1] > errors[2] > 0  # lower quality, larger loss
    with pytest.raises(ValueError, match="one JPEG quality per image"):
        jpeg_images(images, [50])
