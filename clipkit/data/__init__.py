"""Captioned image data: what CLIP learns from, small enough to train on a laptop.

- `shapes`: a procedural world of coloured shapes with a compositional split and a binding probe;
- `fashion`: Fashion-MNIST with captions from templates;
- `emoji`: emoji rendered from Noto Color Emoji, captioned with their Unicode names;
- `files`: your own images, from a CSV (open_clip's layout) or a folder with .txt captions;
- `transforms`: preprocessing to model input, augmentation, in-memory data sets and loaders;
- `stream`: the training-data stream, batches that depend only on (seed, step), mixed from sources.
"""

from clipkit.data.emoji import EmojiFontNotFoundError, EmojiSet, load_emoji
from clipkit.data.fashion import FashionMNISTNotFoundError, load_fashion_mnist
from clipkit.data.files import (
    BadImageError,
    BadItemError,
    ImageCaptionCSV,
    ImageCaptionFolder,
    SkippedItemsWarning,
    load_image_rgb,
)
from clipkit.data.shapes import (
    COLOURS,
    SHAPES,
    BindingProbe,
    Scene,
    ShapeObject,
    ShapesConfig,
    ShapesSample,
    ShapesWorld,
    class_prompt,
)
from clipkit.data.stream import TrainingData, build_data
from clipkit.data.transforms import (
    OPENAI_MEAN,
    OPENAI_STD,
    CaptionedImages,
    augment_shapes_batch,
    build_transform,
    images_to_model_input,
    make_loader,
    normalize_images,
)

__all__ = [
    "COLOURS",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "SHAPES",
    "BadImageError",
    "BadItemError",
    "BindingProbe",
    "CaptionedImages",
    "EmojiFontNotFoundError",
    "EmojiSet",
    "FashionMNISTNotFoundError",
    "ImageCaptionCSV",
    "ImageCaptionFolder",
    "Scene",
    "ShapeObject",
    "ShapesConfig",
    "ShapesSample",
    "ShapesWorld",
    "SkippedItemsWarning",
    "TrainingData",
    "augment_shapes_batch",
    "build_data",
    "build_transform",
    "class_prompt",
    "images_to_model_input",
    "load_emoji",
    "load_fashion_mnist",
    "load_image_rgb",
    "make_loader",
    "normalize_images",
]
