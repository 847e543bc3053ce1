"""Hugging Face `transformers` CLIP <-> clipkit: the most common download, behind the clipkit interface.

`load_hf_clip("openai/clip-vit-base-patch32")` (a hub id, when online) or `load_hf_clip("path/to/folder")`
(a folder with config.json and model.safetensors, as `CLIPModel.save_pretrained` writes it) gives an
`HFCLIPModel`: the transformers model itself, its own tokenizer and its own text pooling, so
everything written for `MiniCLIP` (zero-shot, search, the app) runs on it unchanged.

`miniclip_from_hf` / `hf_from_miniclip` convert the weights. transformers' CLIP is openai/CLIP under
other names: q, k and v are three Linears where MiniCLIP has one fused qkv (so they are stacked),
positions are nn.Embedding tables, and projections are already nn.Linear weights. Text is pooled
at the first `eos_token_id`, except in configs written before transformers' PR #24773, whose
eos_token_id is 2 and which pool at the largest id (MiniCLIP's "argmax" pooling). Anything else
(another model family, an activation or LayerNorm epsilon MiniCLIP does not have, a CNN tower) is
refused with an error naming the feature. `save_hf` writes a folder transformers loads, tokenizer
files included (built from open_clip's BPE file, as transformers' own conversion does).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipkit.config import CLIPConfig, TextConfig, VisionConfig
from clipkit.data.transforms import OPENAI_MEAN, OPENAI_STD
from clipkit.interface import CLIPBase
from clipkit.io import atomic_write
from clipkit.model import MiniCLIP
from clipkit.tokenizer import OpenCLIPTokenizer, SentenceTokenizer, Tokenizer

# The activations both libraries compute the same way: transformers' "gelu" is the exact erf GELU.
_ACTIVATIONS = ("gelu", "quick_gelu")
_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which MiniCLIP uses
_LEGACY_EOS = 2  # eos_token_id of configs written before transformers' PR #24773: pool at the largest id
OPENAI_VOCAB_SIZE = 49408

# MiniCLIP name -> transformers name inside one encoder layer (qkv is stacked from three).
_BLOCK_NAMES = {
    "attention_norm.weight": "layer_norm1.weight",
    "attention_norm.bias": "layer_norm1.bias",
    "attention.out_proj.weight": "self_attn.out_proj.weight",
    "attention.out_proj.bias": "self_attn.out_proj.bias",
    "mlp_norm.weight": "layer_norm2.weight",
    "mlp_norm.bias": "layer_norm2.bias",
    "mlp.fc_in.weight": "mlp.fc1.weight",
    "mlp.fc_in.bias": "mlp.fc1.bias",
    "mlp.fc_out.weight": "mlp.fc2.weight",
    "mlp.fc_out.bias": "mlp.fc2.bias",
}
_TOP_NAMES = {
    "logit_scale": "logit_scale",
    "visual.patch_embedding.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",  # sic: transformers' spelling
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "visual.projection.weight": "visual_projection.weight",
    "text.token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "text.positional_embedding": "text_model.embeddings.position_embedding.weight",
    "text.ln_final.weight": "text_model.final_layer_norm.weight",
    "text.ln_final.bias": "text_model.final_layer_norm.bias",
    "text.projection.weight": "text_projection.weight",
}
_TOWERS = (("visual.transformer.blocks", "vision_model.encoder.layers"), ("text.transformer.blocks", "text_model.encoder.layers"))


class HFCLIPTokenizer(SentenceTokenizer):
    """A transformers CLIPTokenizer behind the clipkit interface: rows <start> ids <end> 0 0 ...

    Encoding, decoding and the spec are SentenceTokenizer's (both wrap a transformers tokenizer);
    CLIP's start and end are its bos/eos tokens. transformers pads CLIP with the end token, clipkit
    with 0: under the causal mask nothing after the end token reaches the pooled state, so the
    embeddings are the same either way (tests/test_hf.py checks it)."""

    kind = "hf_clip"
    start_token, end_token = "bos_token_id", "eos_token_id"
    pads_with_zero = False  # transformers pads CLIP with its end token; clipkit's rows pad with 0 (see above)

    def __init__(self, hf_tokenizer, context_length: int = 77, source: str | None = None):
        super().__init__(hf_tokenizer, context_length, source)


class HFCLIPModel(CLIPBase):
    """A transformers `CLIPModel` in the clipkit model interface; `model` is the transformers module."""

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, source: str | None = None,
                 image_mean=tuple(OPENAI_MEAN), image_std=tuple(OPENAI_STD)):
        super().__init__()
        # Only the family is checked: this runs transformers' own code, so an activation or epsilon
        # MiniCLIP lacks is no obstacle here (converting it is: see config_from_hf).
        _require_clip_family(model.config)
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self._mean, self._std = tuple(float(v) for v in image_mean), tuple(float(v) for v in image_std)

    def describe(self) -> dict:
        vision, text = self.model.config.vision_config, self.model.config.text_config
        return {
            "model": "transformers.CLIPModel", "source": self.source, "embed_dim": self.embed_dim,
            "vision": {"image_size": self.image_size, "patch_size": vision.patch_size, "width": vision.hidden_size,
                       "layers": vision.num_hidden_layers, "heads": vision.num_attention_heads, "act": vision.hidden_act},
            "text": {"vocab_size": text.vocab_size, "context_length": text.max_position_embeddings, "width": text.hidden_size,
                     "layers": text.num_hidden_layers, "heads": text.num_attention_heads, "act": text.hidden_act,
                     "eos_token_id": text.eos_token_id},
        }

    def extra_repr(self) -> str:
        return f"source={self.source!r}"

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    @property
    def image_size(self) -> int:
        return _square(self.model.config.vision_config.image_size, "image_size")

    @property
    def image_mean(self) -> tuple[float, ...]:
        return self._mean

    @property
    def image_std(self) -> tuple[float, ...]:
        return self._std

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = _pooled(self.model.get_image_features(pixel_values=images))
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = _pooled(self.model.get_text_features(input_ids=tokens))
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def to_miniclip(self) -> MiniCLIP:
        """A `MiniCLIP` with these weights (equal embeddings; see `miniclip_from_hf`)."""
        return miniclip_from_hf(self.model, self._mean, self._std)


def _pooled(output) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _square(size, name: str) -> int:
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"vision_config {name}={size!r} is not square; MiniCLIP and clipkit take square images")
        size = size[0]
    return int(size)


def _tower_facts(tower, which: str) -> dict[str, Any]:
    """The fields of one transformers tower config MiniCLIP shares, or an error naming what it lacks."""
    if tower.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"the {which} tower uses hidden_act={tower.hidden_act!r}, which MiniCLIP does not implement "
                         f"(it has {_ACTIVATIONS}): this model does not convert")
    if abs(float(tower.layer_norm_eps) - _LAYER_NORM_EPS) > 1e-12:
        raise ValueError(f"the {which} tower uses layer_norm_eps={tower.layer_norm_eps}, MiniCLIP's LayerNorms use "
                         f"{_LAYER_NORM_EPS}: this model does not convert exactly")
    mlp_ratio = tower.intermediate_size / tower.hidden_size
    if int(tower.hidden_size * mlp_ratio) != tower.intermediate_size:
        raise ValueError(f"the {which} tower's intermediate_size {tower.intermediate_size} is no whole multiple MiniCLIP can build")
    return {"width": tower.hidden_size, "layers": tower.num_hidden_layers, "heads": tower.num_attention_heads,
            "mlp_ratio": mlp_ratio, "act": tower.hidden_act}


def _require_clip_family(hf_config) -> None:
    family = getattr(hf_config, "model_type", None)
    if family != "clip":
        raise ValueError(f"model_type {family!r} is not transformers' CLIP (model_type 'clip'): clipkit reads CLIPModel only "
                         "(SigLIP, Chinese-CLIP, AltCLIP, ... have other towers or tokenizers)")


def config_from_hf(hf_config, image_mean=tuple(OPENAI_MEAN), image_std=tuple(OPENAI_STD)) -> CLIPConfig:
    """The MiniCLIP config of a transformers CLIPConfig; refuses, by name, what MiniCLIP cannot compute."""
    _require_clip_family(hf_config)
    vision, text = hf_config.vision_config, hf_config.text_config
    if getattr(vision, "num_channels", 3) != 3:
        raise ValueError(f"the vision tower takes num_channels={vision.num_channels}; MiniCLIP takes RGB images (3)")
    eos = text.eos_token_id
    if not isinstance(eos, int):
        raise ValueError(f"text_config eos_token_id={eos!r} is not one id: MiniCLIP pools at one end-of-text token")
    return CLIPConfig(
        embed_dim=int(hf_config.projection_dim),
        vision=VisionConfig(kind="vit", image_size=_square(vision.image_size, "image_size"),
                            patch_size=_square(vision.patch_size, "patch_size"), **_tower_facts(vision, "vision")),
        text=TextConfig(vocab_size=text.vocab_size, context_length=text.max_position_embeddings, **_tower_facts(text, "text"),
                        # legacy configs pool at the largest id, as MiniCLIP's "argmax" pooling does
                        eot_token_id=None if eos == _LEGACY_EOS else eos, pool="argmax" if eos == _LEGACY_EOS else "eot"),
        init_logit_scale=float(hf_config.logit_scale_init_value),
        image_mean=tuple(image_mean), image_std=tuple(image_std),
        tokenizer=OpenCLIPTokenizer(text.max_position_embeddings).to_dict() if text.vocab_size == OPENAI_VOCAB_SIZE else None,
    )


def hf_config_from_miniclip(config: CLIPConfig):
    """A transformers CLIPConfig computing what `MiniCLIP(config)` computes; refuses what it cannot."""
    from transformers import CLIPConfig as HFConfig

    vision, text = config.vision, config.text
    if vision.kind != "vit":
        raise ValueError(f"transformers' CLIP has no counterpart of MiniCLIP's {vision.kind!r} image tower (a CNN): "
                         "only ViT MiniCLIPs convert (VisionConfig(kind='vit'))")
    if text.pool == "eot" and text.resolved_eot_token_id == _LEGACY_EOS:
        raise ValueError(f"an end-of-text id of {_LEGACY_EOS} means 'pool at the largest id' to transformers (legacy configs): "
                         "give the tokenizer another end-of-text id to convert")
    eos = _LEGACY_EOS if text.pool == "argmax" else text.resolved_eot_token_id

    def tower(part) -> dict[str, Any]:
        return {"hidden_size": part.width, "num_hidden_layers": part.layers, "num_attention_heads": part.heads,
                "intermediate_size": int(part.width * part.mlp_ratio), "hidden_act": part.act, "layer_norm_eps": _LAYER_NORM_EPS}

    return HFConfig(
        text_config={**tower(text), "vocab_size": text.vocab_size, "max_position_embeddings": text.context_length,
                     "eos_token_id": eos, "bos_token_id": text.vocab_size - 2, "projection_dim": config.embed_dim},
        vision_config={**tower(vision), "image_size": vision.image_size, "patch_size": vision.patch_size,
                       "projection_dim": config.embed_dim},
        projection_dim=config.embed_dim,
        logit_scale_init_value=config.init_logit_scale,
    )


def hf_names(config: CLIPConfig) -> dict[str, str | list[str]]:
    """Every MiniCLIP parameter name -> its transformers name; a fused qkv -> the three names of q, k, v."""
    names: dict[str, str | list[str]] = dict(_TOP_NAMES)
    for (mine, theirs), layers in zip(_TOWERS, (config.vision.layers, config.text.layers)):
        for index in range(layers):
            source, target = f"{theirs}.{index}", f"{mine}.{index}"
            names.update({f"{target}.{name}": f"{source}.{their}" for name, their in _BLOCK_NAMES.items()})
            for kind in ("weight", "bias"):
                names[f"{target}.attention.qkv.{kind}"] = [f"{source}.self_attn.{part}_proj.{kind}" for part in "qkv"]
    return names


def miniclip_state_dict_from_hf(state: dict[str, torch.Tensor], config: CLIPConfig) -> dict[str, torch.Tensor]:
    """A transformers CLIPModel state dict renamed for `MiniCLIP(config)`: q, k, v stacked
    ([3 * width, width], in nn.MultiheadAttention's order, as MiniCLIP's qkv Linear holds them)."""
    return {ours: torch.cat([state[name] for name in theirs]) if isinstance(theirs, list) else state[theirs]
            for ours, theirs in hf_names(config).items()}


def hf_state_dict_from_miniclip(state: dict[str, torch.Tensor], config: CLIPConfig) -> dict[str, torch.Tensor]:
    """A MiniCLIP state dict renamed for transformers' CLIPModel: qkv split into q, k and v."""
    theirs_state = {}
    for ours, theirs in hf_names(config).items():
        theirs_state.update(zip(theirs, state[ours].chunk(3)) if isinstance(theirs, list) else [(theirs, state[ours])])
    return theirs_state


def miniclip_from_hf(hf_model: nn.Module, image_mean=tuple(OPENAI_MEAN), image_std=tuple(OPENAI_STD)) -> MiniCLIP:
    """A MiniCLIP computing the embeddings of a transformers CLIPModel (weights copied, float32)."""
    config = config_from_hf(hf_model.config, image_mean, image_std)
    model = MiniCLIP(config)
    state = {name: tensor.float() for name, tensor in hf_model.state_dict().items()}
    model.load_state_dict(miniclip_state_dict_from_hf(state, config))
    return model.to(next(hf_model.parameters()).device).train(hf_model.training)


def hf_from_miniclip(model: MiniCLIP) -> nn.Module:
    """transformers' CLIPModel computing the embeddings of a ViT MiniCLIP (weights copied)."""
    from transformers import CLIPModel

    hf_model = CLIPModel(hf_config_from_miniclip(model.config))
    hf_model.load_state_dict(hf_state_dict_from_miniclip(model.state_dict(), model.config))
    return hf_model.to(model.device).train(model.training)


# --- folders ---------------------------------------------------------------------------------


def write_clip_tokenizer_files(folder: str | Path, context_length: int = 77) -> Path:
    """vocab.json, merges.txt and tokenizer_config.json of OpenAI's BPE, built from open_clip's
    shipped vocabulary file as transformers' conversion does; CLIPTokenizer.from_pretrained reads them."""
    import gzip

    from open_clip.tokenizer import default_bpe

    from clipkit.tokenizer import _open_clip_simple_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # open_clip reads the first 49152 - 256 - 2 merges after the version line; the vocabulary is
    # the 256 byte symbols, each with "</w>", one entry per merge, then the two special tokens.
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    simple = _open_clip_simple_tokenizer()
    # open_clip calls its special tokens <start_of_text>/<end_of_text>; OpenAI's files, <|startoftext|>/<|endoftext|>
    names = {simple.sot_token_id: "<|startoftext|>", simple.eot_token_id: "<|endoftext|>"}
    vocab = {names.get(index, piece): index for piece, index in simple.encoder.items()}
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(lines) + "\n",
        "tokenizer_config.json": json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": context_length,
                                             "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                             "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
    }
    for name, text in files.items():
        atomic_write(folder / name, lambda path, text=text: path.write_text(text, encoding="utf-8"))
    return folder


def save_hf(model: MiniCLIP | HFCLIPModel, folder: str | Path) -> Path:
    """A folder transformers' CLIPModel.from_pretrained reads (config.json, model.safetensors,
    preprocessor_config.json, and the BPE tokenizer files when the vocabulary is OpenAI's)."""
    folder = Path(folder)
    hf_model = model.model if isinstance(model, HFCLIPModel) else hf_from_miniclip(model)
    hf_model.save_pretrained(folder, safe_serialization=True)
    processor = json.dumps({"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": model.image_size},
                   "do_center_crop": True, "crop_size": {"height": model.image_size, "width": model.image_size},
                   "do_normalize": True, "image_mean": list(model.image_mean), "image_std": list(model.image_std),
                            "resample": 3})
    atomic_write(folder / "preprocessor_config.json", lambda path: path.write_text(processor))
    text = hf_model.config.text_config
    if isinstance(model.tokenizer, HFCLIPTokenizer):  # the model's own tokenizer files, whatever its vocabulary
        model.tokenizer._tokenizer.save_pretrained(folder)
    elif text.vocab_size == OPENAI_VOCAB_SIZE:
        write_clip_tokenizer_files(folder, text.max_position_embeddings)
    return folder


def _image_statistics(source: str) -> tuple[tuple, tuple]:
    """image_mean / image_std of the folder's or hub id's preprocessor_config.json; OpenAI's without one."""
    path = Path(source) / "preprocessor_config.json"
    if path.is_file():
        from clipkit.io import read_json

        document = read_json(path, "preprocessor config", "save the model again with save_pretrained, or delete the file")
        return tuple(document.get("image_mean", OPENAI_MEAN)), tuple(document.get("image_std", OPENAI_STD))
    return tuple(OPENAI_MEAN), tuple(OPENAI_STD)


def _tokenizer_for(source: str, hf_config) -> Tokenizer:
    text = hf_config.text_config
    try:
        from transformers import CLIPTokenizer

        return HFCLIPTokenizer(CLIPTokenizer.from_pretrained(source), text.max_position_embeddings, source)
    except (OSError, ValueError, TypeError):
        if text.vocab_size == OPENAI_VOCAB_SIZE:  # OpenAI's vocabulary: open_clip's copy of it is the same tokenizer
            return OpenCLIPTokenizer(text.max_position_embeddings)
        raise ValueError(f"{source} has no CLIP tokenizer files (vocab.json, merges.txt) and a vocabulary of "
                         f"{text.vocab_size}, not OpenAI's: save the tokenizer beside the model (tokenizer.save_pretrained)") from None


def load_hf_clip(source: str | os.PathLike, device: str | torch.device | None = None) -> HFCLIPModel:
    """A transformers CLIPModel from a local folder or a hub id, as an `HFCLIPModel` in eval mode, float32."""
    from transformers import CLIPModel
    from transformers.utils import logging as hf_logging

    source = str(source)
    folder = Path(source).expanduser()
    if folder.is_dir():
        source = str(folder)
        if not (folder / "config.json").is_file():
            from clipkit.io import MissingFileError

            raise MissingFileError(folder / "config.json", f"{folder} has no config.json: a transformers model folder holds "
                                   "config.json and model.safetensors (CLIPModel.save_pretrained writes them)")
    elif source.startswith((".", "/", "~")) or folder.exists():
        raise FileNotFoundError(f"{source} is not a folder: pass a transformers model folder (config.json + model.safetensors) "
                                "or a hub id of the form owner/name (e.g. openai/clip-vit-base-patch32)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were not initialised" for position_ids buffers says nothing useful
    hf_logging.disable_progress_bar()  # a bar for a second's read is noise in the app's log
    try:
        hf_model = CLIPModel.from_pretrained(source, torch_dtype=torch.float32)
    except OSError as error:
        where = "the folder" if folder.is_dir() else "the hub (offline: HF_HUB_OFFLINE=1, or no network) or the local cache"
        raise FileNotFoundError(f"transformers could not load a CLIPModel from {source!r} via {where}: {str(error).splitlines()[0]}. "
                                "Offline, download it elsewhere (CLIPModel.from_pretrained(id).save_pretrained(folder)) "
                                "and pass the folder") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    mean, std = _image_statistics(source)
    wrapped = HFCLIPModel(hf_model.float(), _tokenizer_for(source, hf_model.config), source, mean, std).eval()
    return wrapped.to(device) if device is not None else wrapped
