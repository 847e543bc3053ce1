"""Generic loaders: every image mode becomes RGB; every bad input is skipped with one counting warning,
or raised with strict=True; an epoch never stops half way."""

import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clipkit.data import (
    BadImageError,
    BadItemError,
    ImageCaptionCSV,
    ImageCaptionFolder,
    SkippedItemsWarning,
    build_transform,
    load_image_rgb,
    make_loader,
)


def png_claiming(width, height):
    """A tiny PNG whose header claims a huge size: what a decompression bomb looks like before decoding."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def save(image, path, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def photo(seed=0, size=(20, 16)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def truncated_copy(source, target):
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


# -- conversions -------------------------------------------------------------------------------


def test_greyscale_bilevel_and_palette_become_rgb(tmp_path):
    grey = np.arange(0, 240, 2, dtype=np.uint8).reshape(10, 12)
    rgb = np.asarray(load_image_rgb(save(Image.fromarray(grey, "L"), tmp_path / "l.png")))
    assert rgb.shape == (10, 12, 3) and all(np.array_equal(rgb[..., c], grey) for c in range(3))
    bilevel = Image.fromarray(grey > 100).convert("1")
    assert set(np.unique(np.asarray(load_image_rgb(save(bilevel, tmp_path / "b.png"))))) <= {0, 255}
    palette = photo(1).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    path = save(palette, tmp_path / "p.png")
    assert np.array_equal(np.asarray(load_image_rgb(path)), np.asarray(Image.open(path).convert("RGB")))


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red
    rgba[0, 1] = (0, 0, 255, 255)  # opaque blue
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    result = np.asarray(load_image_rgb(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))).astype(int)
    assert result[0, 0].tolist() == [255, 255, 255] and result[0, 1].tolist() == [0, 0, 255]
    assert np.all(np.abs(result[1, 0] - 127) <= 1)
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert np.asarray(load_image_rgb(save(la, tmp_path / "la.png")))[0, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    result = np.asarray(load_image_rgb(save(palette, tmp_path / "pt.png", transparency=0)))
    assert result[0, 0].tolist() == [255, 255, 255] and result[0, 1].tolist() == [10, 200, 30]


def test_cmyk_and_high_bit_depth_become_8_bit_rgb(tmp_path):
    cmyk = photo(2).convert("CMYK")
    path = save(cmyk, tmp_path / "c.tif")
    assert np.array_equal(np.asarray(load_image_rgb(path)), np.asarray(Image.open(path).convert("RGB")))
    sixteen = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    image = Image.fromarray(sixteen)
    path = save(image, tmp_path / "16.png")
    assert Image.open(path).mode.startswith("I")
    assert np.asarray(load_image_rgb(path))[0, :, 0].tolist() == [0, 128, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert np.asarray(load_image_rgb(save(floats, tmp_path / "f.tif")))[0, :, 1].tolist() == [0, 128, 255]


def test_bad_files_raise_bad_image_error_naming_the_file(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (tmp_path / "text.jpg").write_text("this is not a picture")
    truncated_copy(save(photo(3, (64, 64)), tmp_path / "whole.png"), tmp_path / "half.png")
    (tmp_path / "bomb.png").write_bytes(png_claiming(40_000, 40_000))
    (tmp_path / "big.png").write_bytes(png_claiming(10_000, 10_000))
    for name, reason in [
        ("corrupt.png", "corrupt|not an image"),
        ("text.jpg", "not an image"),
        ("half.png", "truncated"),
        ("bomb.png", "too large"),
        ("big.png", "too large"),
        ("gone.png", "missing"),
    ]:
        with pytest.raises(BadImageError, match=reason) as error:
            load_image_rgb(tmp_path / name)
        assert name in str(error.value)
    with pytest.raises(BadImageError, match="max_pixels=100"):
        load_image_rgb(tmp_path / "whole.png", max_pixels=100)
    assert load_image_rgb(tmp_path / "whole.png", max_pixels=None).size == (64, 64)


# -- data sets ---------------------------------------------------------------------------------


@pytest.fixture
def messy_table(tmp_path):
    """A TSV in open_clip's layout: 3 good rows and one of each bad kind."""
    images = tmp_path / "images"
    for i in range(3):
        save(photo(i), images / f"good{i}.png")
    save(Image.new("L", (8, 8), 77), images / "grey.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x01" * 100)
    truncated_copy(save(photo(5, (80, 80)), images / "source.jpg", quality=95), images / "truncated.jpg")
    (images / "notes.jpg").write_text("meeting notes")
    (images / "bomb.png").write_bytes(png_claiming(40_000, 40_000))
    rows = [
        ("images/good0.png", "a first picture"),
        ("images/corrupt.png", "corrupt file"),
        ("images/good1.png", "a second   picture"),
        ("images/truncated.jpg", "truncated file"),
        ("images/notes.jpg", "not an image"),
        ("images/missing.png", "missing file"),
        ("images/good2.png", "   "),
        ("images/bomb.png", "decompression bomb"),
        ("images/grey.png", "a grey square"),
        ("", "no path at all"),
    ]
    table = tmp_path / "train.tsv"
    table.write_text("filepath\ttitle\n" + "".join(f"{path}\t{caption}\n" for path, caption in rows))
    return table


def test_csv_skips_every_bad_row_with_one_counting_warning(messy_table):
    with pytest.warns(SkippedItemsWarning) as caught:
        data = ImageCaptionCSV(messy_table)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 7 of 10" in message and "strict=True" in message and "and 2 more" in message
    assert "corrupt.png" in message and "truncated.jpg" in message  # the first few are named
    assert len(data) == 3 and len(data.skipped) == 7
    reasons = dict(data.skipped)
    assert "empty caption" in reasons["line 8 (images/good2.png)"]
    assert "missing" in reasons["line 7 (images/missing.png)"] and "too large" in reasons["line 9 (images/bomb.png)"]
    image, caption = data[1]
    assert image.mode == "RGB" and caption == "a second picture"
    assert data[2][0].mode == "RGB" and data[2][1] == "a grey square"


def test_a_whole_epoch_runs_through_a_loader(messy_table):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedItemsWarning)
        data = ImageCaptionCSV(messy_table, transform=build_transform(16))
    batches = list(make_loader(data, batch_size=2, num_workers=0))
    assert sum(len(captions) for _, captions in batches) == 3
    assert batches[0][0].shape == (2, 3, 16, 16)


def test_csv_strict_raises_naming_the_first_bad_row(messy_table):
    with pytest.raises(BadItemError, match=r"line 3 \(images/corrupt.png\).*strict=False"):
        ImageCaptionCSV(messy_table, strict=True)


def test_csv_columns_and_separator_are_configurable(tmp_path):
    save(photo(0), tmp_path / "pics" / "x.png")
    table = tmp_path / "meta" / "captions.csv"
    table.parent.mkdir()
    table.write_text('caption,image\n"a picture, with a comma",x.png\n')
    data = ImageCaptionCSV(table, image_key="image", caption_key="caption", sep=",", root=tmp_path / "pics")
    assert data[0][1] == "a picture, with a comma"
    with pytest.raises(ValueError, match=r"no column\(s\) \['filepath', 'title'\].*'caption', 'image'"):
        ImageCaptionCSV(table, sep=",")


def test_nothing_usable_is_an_error(tmp_path):
    table = tmp_path / "t.tsv"
    table.write_text("filepath\ttitle\nnope.png\tgone\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedItemsWarning)
        with pytest.raises(BadItemError, match="no usable image-caption pairs.*1 missing image file"):
            ImageCaptionCSV(table)


@pytest.fixture
def messy_folder(tmp_path):
    root = tmp_path / "folder"
    save(photo(0), root / "cat.png")
    (root / "cat.txt").write_text("a cat\non two lines\n")
    save(photo(1), root / "nested" / "dog.jpg")
    (root / "nested" / "dog.txt").write_text("a dog")
    save(Image.new("RGBA", (6, 6), (0, 0, 0, 0)), root / "ghost.png")
    (root / "ghost.txt").write_text("a transparent ghost")
    save(photo(2), root / "uncaptioned.png")
    save(photo(3), root / "blank.png")
    (root / "blank.txt").write_text("  \n")
    (root / "orphan.txt").write_text("a caption whose image is gone")
    (root / "broken.png").write_bytes(b"not png")
    (root / "broken.txt").write_text("a broken image")
    (root / "report.pdf").write_bytes(b"%PDF-1.4")
    (root / "report.txt").write_text("a report")
    (root / "README.md").write_text("ignored: not an image and no caption")
    return root


def test_folder_pairs_images_with_sidecar_captions_and_skips_the_rest(messy_folder):
    with pytest.warns(SkippedItemsWarning, match="skipped 5 of 8") as caught:
        data = ImageCaptionFolder(messy_folder)
    assert len(caught) == 1
    assert sorted(caption for _, caption in data.items) == ["a cat on two lines", "a dog", "a transparent ghost"]
    reasons = dict(data.skipped)
    assert reasons["uncaptioned.png"] == "no caption file" and reasons["blank.png"] == "empty caption"
    assert reasons["orphan.txt"] == "no image file for this caption"
    assert "not an image" in reasons["broken.png"] and "not an image" in reasons["report.pdf"]
    ghost = dict((caption, path) for path, caption in data.items)["a transparent ghost"]
    assert np.asarray(load_image_rgb(ghost)).min() == 255
    with pytest.raises(BadItemError, match="strict=False"):
        ImageCaptionFolder(messy_folder, strict=True)


def test_unchecked_files_that_fail_later_are_replaced_not_fatal(tmp_path):
    root = tmp_path / "lazy"
    for i in range(3):
        save(photo(i), root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"picture {i}")
    truncated_copy(save(photo(9, (64, 64)), tmp_path / "whole.png"), root / "1.png")
    data = ImageCaptionFolder(root, check_images=False, transform=build_transform(8))
    assert len(data) == 3  # not decoded up front
    with pytest.warns(SkippedItemsWarning, match="1.png"):
        captions = [caption for _, caption in data]
    assert captions == ["picture 0", "picture 2", "picture 2"]
    strict = ImageCaptionFolder(root, check_images=False, strict=True)
    with pytest.raises(BadItemError, match="1.png"):
        strict[1]
    assert isinstance(data[0][0], torch.Tensor)


def test_draft_decodes_large_jpegs_smaller_but_never_below_the_asked_size(tmp_path):
    big = photo(3, size=(800, 600))
    jpeg = save(big, tmp_path / "big.jpg", quality=90)
    png = save(big, tmp_path / "big.png")
    drafted = load_image_rgb(jpeg, draft=100)
    assert drafted.mode == "RGB" and min(drafted.size) >= 100 and drafted.size[0] < 800
    assert load_image_rgb(png, draft=100).size == (800, 600)  # only JPEG can decode at a reduced scale
    assert load_image_rgb(jpeg).size == (800, 600)
