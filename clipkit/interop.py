"""open_clip <-> MiniCLIP: the same CLIP under two sets of names.

open_clip's `CLIP` with a Vision Transformer tower and its standard text tower keeps openai/CLIP's
parameter names; `MiniCLIP` uses its own. The networks compute the same function, so converting is
a renaming plus two transposes (open_clip stores projections as [in, out] matrices used as
`x @ proj`, MiniCLIP as nn.Linear weights [out, in]). With this a student can run OpenAI's released
ViT-B/32 weights through the model they built from scratch, and hand a MiniCLIP to open_clip tools.

Architectures outside that common ground (ResNet towers, timm or Hugging Face towers, layer scale,
attentional pooling, SigLIP's logit bias, ...) are refused with an error naming the feature.
A user's open_clip weight file is read here too (`clipkit.pretrained.load_open_clip` uses the same
reader): a damaged, empty, pickled or mismatched file is a `BadFileError` naming it.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipkit.config import CLIPConfig, TextConfig, VisionConfig
from clipkit.io import BadFileError, check_file, read_safetensors_header
from clipkit.model import MiniCLIP

# The endings of the weight files open_clip reads (a path with one is taken for a file, not a tag).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

# MiniCLIP name -> open_clip name inside one residual attention block.
_BLOCK_NAMES = {
    "attention_norm.weight": "ln_1.weight",
    "attention_norm.bias": "ln_1.bias",
    "attention.qkv.weight": "attn.in_proj_weight",
    "attention.qkv.bias": "attn.in_proj_bias",
    "attention.out_proj.weight": "attn.out_proj.weight",
    "attention.out_proj.bias": "attn.out_proj.bias",
    "mlp_norm.weight": "ln_2.weight",
    "mlp_norm.bias": "ln_2.bias",
    "mlp.fc_in.weight": "mlp.c_fc.weight",
    "mlp.fc_in.bias": "mlp.c_fc.bias",
    "mlp.fc_out.weight": "mlp.c_proj.weight",
    "mlp.fc_out.bias": "mlp.c_proj.bias",
}

# MiniCLIP name -> open_clip name outside the blocks; the projections are stored transposed.
_TOP_NAMES = {
    "logit_scale": "logit_scale",
    "visual.patch_embedding.weight": "visual.conv1.weight",
    "visual.class_embedding": "visual.class_embedding",
    "visual.positional_embedding": "visual.positional_embedding",
    "visual.ln_pre.weight": "visual.ln_pre.weight",
    "visual.ln_pre.bias": "visual.ln_pre.bias",
    "visual.ln_post.weight": "visual.ln_post.weight",
    "visual.ln_post.bias": "visual.ln_post.bias",
    "visual.projection.weight": "visual.proj",
    "text.token_embedding.weight": "token_embedding.weight",
    "text.positional_embedding": "positional_embedding",
    "text.ln_final.weight": "ln_final.weight",
    "text.ln_final.bias": "ln_final.bias",
    "text.projection.weight": "text_projection",
}
_TRANSPOSED = {"visual.projection.weight", "text.projection.weight"}


def openclip_names(config: CLIPConfig) -> dict[str, str]:
    """Every MiniCLIP parameter name -> its open_clip name, for a ViT MiniCLIP config."""
    _require_vit(config)
    names = dict(_TOP_NAMES)
    for ours, theirs, layers in (
        ("visual.transformer.blocks", "visual.transformer.resblocks", config.vision.layers),
        ("text.transformer.blocks", "transformer.resblocks", config.text.layers),
    ):
        for index in range(layers):
            for our_name, their_name in _BLOCK_NAMES.items():
                names[f"{ours}.{index}.{our_name}"] = f"{theirs}.{index}.{their_name}"
    return names


def _require_vit(config: CLIPConfig) -> None:
    if config.vision.kind != "vit":
        raise ValueError(
            f"open_clip has no counterpart of MiniCLIP's {config.vision.kind!r} image tower: "
            "only ViT MiniCLIPs convert (VisionConfig(kind='vit'))"
        )


def _convert(state_dict: dict[str, torch.Tensor], names: dict[str, str], transposed: set[str], source: str) -> dict[str, torch.Tensor]:
    missing = sorted(name for name in names if name not in state_dict)
    if missing:
        raise KeyError(f"the {source} state dict lacks {missing[:6]}{' ...' if len(missing) > 6 else ''}: is it a model of the same config?")
    return {target: state_dict[name].t() if name in transposed else state_dict[name] for name, target in names.items()}


def miniclip_state_dict_from_openclip(state_dict: dict[str, torch.Tensor], config: CLIPConfig) -> dict[str, torch.Tensor]:
    """An open_clip (or openai/CLIP) state dict renamed for `MiniCLIP(config)`."""
    theirs_to_ours = {theirs: ours for ours, theirs in openclip_names(config).items()}
    transposed = {_TOP_NAMES[name] for name in _TRANSPOSED}
    return _convert(state_dict, theirs_to_ours, transposed, "open_clip")


def openclip_state_dict_from_miniclip(state_dict: dict[str, torch.Tensor], config: CLIPConfig) -> dict[str, torch.Tensor]:
    """A MiniCLIP state dict renamed for open_clip's `CLIP` built with `openclip_model_config(config)`."""
    return _convert(state_dict, openclip_names(config), _TRANSPOSED, "MiniCLIP")


# open_clip config keys that change the network away from what MiniCLIP computes, with the value
# that keeps it the same; anything else set in a config is refused by name.
_NEUTRAL_VISION = {
    "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
    "final_ln_after_pool": False, "pool_type": "tok", "output_tokens": False, "act_kwargs": None, "norm_kwargs": None,
    "block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
    "scale_attn": False, "scale_fc": False, "timm_model_name": None, "patch_dropout": 0.0,
}
_NEUTRAL_TEXT = {
    "ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False, "proj_bias": False,
    "proj_type": "linear", "output_tokens": False, "act_kwargs": None, "norm_kwargs": None, "block_type": None,
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
    "scale_fc": False, "hf_model_name": None, "hf_tokenizer_name": None, "pad_id": 0,
}
_NEUTRAL_TOP = {"custom_text": False, "init_logit_bias": None, "nonscalar_logit_scale": False}


def _refuse_unsupported(section: dict[str, Any], neutral: dict[str, Any], known: set[str], where: str) -> None:
    for key, value in section.items():
        # None stands for "off" in some of open_clip's configs where the default is False.
        if key in neutral and value != neutral[key] and not (value is None and neutral[key] is False):
            raise ValueError(f"open_clip {where} sets {key}={value!r}, which MiniCLIP does not implement: only plain ViT CLIPs convert")
        if key not in neutral and key not in known:
            raise ValueError(f"open_clip {where} sets {key}={value!r}, which MiniCLIP does not know: only plain ViT CLIPs convert")


def config_from_openclip(model_name_or_cfg: str | dict[str, Any]) -> CLIPConfig:
    """The MiniCLIP config of an open_clip model name (e.g. "ViT-B-32") or model config dict."""
    import open_clip

    if isinstance(model_name_or_cfg, str):
        cfg = open_clip.get_model_config(model_name_or_cfg)
        if cfg is None:
            raise ValueError(f"open_clip has no model config named {model_name_or_cfg!r}: see open_clip.list_models()")
    else:
        cfg = dict(model_name_or_cfg)
    vision, text = dict(cfg.get("vision_cfg", {})), dict(cfg.get("text_cfg", {}))
    top = {k: v for k, v in cfg.items() if k not in ("vision_cfg", "text_cfg")}
    _refuse_unsupported(top, _NEUTRAL_TOP, {"embed_dim", "quick_gelu", "init_logit_scale", "preprocess_cfg"}, "model config")
    _refuse_unsupported(vision, _NEUTRAL_VISION, {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size"}, "vision_cfg")
    _refuse_unsupported(text, _NEUTRAL_TEXT, {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "pool_type", "eos_id"}, "text_cfg")
    defaults_vision = open_clip.model.CLIPVisionCfg()
    defaults_text = open_clip.model.CLIPTextCfg()
    layers = vision.get("layers", defaults_vision.layers)
    if not isinstance(layers, int):
        raise ValueError(f"vision_cfg layers={layers!r} describes open_clip's ModifiedResNet, which MiniCLIP does not implement: only ViT towers convert")
    image_size = vision.get("image_size", defaults_vision.image_size)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise ValueError(f"vision_cfg image_size={image_size!r} is not square; MiniCLIP takes square images")
        image_size = image_size[0]
    width = vision.get("width", defaults_vision.width)
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    vocab_size = text.get("vocab_size", defaults_text.vocab_size)
    pool_type = text.get("pool_type", defaults_text.pool_type)
    if pool_type == "argmax":
        # open_clip's tokenizers put the end-of-text token last in the vocabulary, so pooling at the
        # largest id and at id vocab_size - 1 pick the same position.
        eot_token_id = vocab_size - 1
    elif pool_type == "eos":
        eot_token_id = text.get("eos_id", defaults_text.eos_id)
    else:
        raise ValueError(f"text_cfg pool_type={pool_type!r} is not implemented by MiniCLIP: it pools at the end-of-text token")
    preprocess = cfg.get("preprocess_cfg", {})
    return CLIPConfig(
        embed_dim=cfg["embed_dim"],
        vision=VisionConfig(
            kind="vit",
            image_size=image_size,
            patch_size=vision.get("patch_size", defaults_vision.patch_size),
            width=width,
            layers=layers,
            heads=width // vision.get("head_width", defaults_vision.head_width),
            mlp_ratio=vision.get("mlp_ratio", defaults_vision.mlp_ratio),
            act=act,
        ),
        text=TextConfig(
            vocab_size=vocab_size,
            context_length=text.get("context_length", defaults_text.context_length),
            width=text.get("width", defaults_text.width),
            layers=text.get("layers", defaults_text.layers),
            heads=text.get("heads", defaults_text.heads),
            mlp_ratio=text.get("mlp_ratio", defaults_text.mlp_ratio),
            act=act,
            eot_token_id=eot_token_id,
            pool="eot",
        ),
        init_logit_scale=cfg.get("init_logit_scale", CLIPConfig.init_logit_scale),
        image_mean=tuple(preprocess.get("mean", CLIPConfig.image_mean)),
        image_std=tuple(preprocess.get("std", CLIPConfig.image_std)),
        tokenizer=_openclip_tokenizer_spec(text.get("context_length", defaults_text.context_length), vocab_size),
    )


def openclip_model_config(config: CLIPConfig) -> dict[str, Any]:
    """The open_clip model config (as in open_clip's model_configs/*.json) of a ViT MiniCLIP config."""
    _require_vit(config)
    vision, text = config.vision, config.text
    if vision.act != text.act:
        raise ValueError(
            f"open_clip uses one activation for both towers, this config has vision {vision.act!r} and text {text.act!r}: "
            "make them equal to convert"
        )
    if text.pool == "argmax" or text.resolved_eot_token_id == text.vocab_size - 1:
        pooling = {"pool_type": "argmax"}
    else:
        pooling = {"pool_type": "eos", "eos_id": text.resolved_eot_token_id}
    return {
        "embed_dim": config.embed_dim,
        "quick_gelu": vision.act == "quick_gelu",
        "init_logit_scale": config.init_logit_scale,
        "vision_cfg": {
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "width": vision.width,
            "layers": vision.layers,
            "head_width": vision.width // vision.heads,
            "mlp_ratio": vision.mlp_ratio,
        },
        "text_cfg": {
            "context_length": text.context_length,
            "vocab_size": text.vocab_size,
            "width": text.width,
            "heads": text.heads,
            "layers": text.layers,
            "mlp_ratio": text.mlp_ratio,
            **pooling,
        },
    }


def _openclip_tokenizer_spec(context_length: int, vocab_size: int) -> dict | None:
    """The spec of clipkit's adapter over open_clip's BPE tokenizer, when the vocabulary is its own."""
    if vocab_size != 49408:
        return None
    from clipkit.tokenizer import OpenCLIPTokenizer

    return OpenCLIPTokenizer(context_length=context_length).to_dict()


def _config_of_openclip_model(model: nn.Module) -> CLIPConfig:
    """Read a built open_clip CLIP's architecture off its modules (it may have been created with
    overrides such as force_quick_gelu, so its name alone is not enough)."""
    import open_clip
    from open_clip.transformer import QuickGELU, VisionTransformer

    if type(model) is not open_clip.model.CLIP or not isinstance(model.visual, VisionTransformer):
        raise ValueError(
            f"expected open_clip's CLIP with a VisionTransformer tower, got {type(model).__name__} with "
            f"{type(model.visual).__name__}: only plain ViT CLIPs convert"
        )
    visual = model.visual
    problems = []
    if getattr(model, "logit_bias", None) is not None:
        problems.append("a logit bias (SigLIP)")
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        problems.append("a pooling other than the class token")
    if isinstance(visual.ln_pre, nn.Identity):
        problems.append("no ln_pre")
    if not isinstance(model.text_projection, nn.Parameter):
        problems.append("a text projection with bias")
    if model.text_pool_type not in ("argmax", "eos"):
        problems.append(f"text pooling {model.text_pool_type!r}")
    blocks = list(visual.transformer.resblocks) + list(model.transformer.resblocks)
    if any(not isinstance(b.ls_1, nn.Identity) or not hasattr(b, "attn") or not isinstance(b.attn, nn.MultiheadAttention) for b in blocks):
        problems.append("layer scale or custom attention blocks")
    if problems:
        raise ValueError(f"this open_clip model has {', '.join(problems)}, which MiniCLIP does not implement")
    act = "quick_gelu" if isinstance(blocks[0].mlp.gelu, QuickGELU) else "gelu"
    width = visual.class_embedding.shape[0]
    text_width = model.token_embedding.weight.shape[1]
    vocab_size = model.token_embedding.weight.shape[0]
    context_length = model.positional_embedding.shape[0]
    preprocess = open_clip.get_model_preprocess_cfg(model)
    eot = vocab_size - 1 if model.text_pool_type == "argmax" else model.text_eos_id
    return CLIPConfig(
        embed_dim=visual.proj.shape[1],
        vision=VisionConfig(
            kind="vit",
            image_size=visual.image_size[0],
            patch_size=visual.patch_size[0],
            width=width,
            layers=len(visual.transformer.resblocks),
            heads=visual.transformer.resblocks[0].attn.num_heads,
            mlp_ratio=visual.transformer.resblocks[0].mlp.c_fc.out_features / width,
            act=act,
        ),
        text=TextConfig(
            vocab_size=vocab_size,
            context_length=context_length,
            width=text_width,
            layers=len(model.transformer.resblocks),
            heads=model.transformer.resblocks[0].attn.num_heads,
            mlp_ratio=model.transformer.resblocks[0].mlp.c_fc.out_features / text_width,
            act=act,
            eot_token_id=eot,
            pool="eot",
        ),
        image_mean=tuple(preprocess.get("mean") or CLIPConfig.image_mean),
        image_std=tuple(preprocess.get("std") or CLIPConfig.image_std),
        tokenizer=_openclip_tokenizer_spec(context_length, vocab_size),
    )


def miniclip_from_openclip(openclip_model: nn.Module) -> MiniCLIP:
    """A MiniCLIP computing the same embeddings as an open_clip ViT CLIP (weights copied, float32)."""
    config = _config_of_openclip_model(openclip_model)
    model = MiniCLIP(config)
    state = {name: tensor.float() for name, tensor in openclip_model.state_dict().items()}
    model.load_state_dict(miniclip_state_dict_from_openclip(state, config))
    return model.to(next(openclip_model.parameters()).device).train(openclip_model.training)


def openclip_from_miniclip(model: MiniCLIP) -> nn.Module:
    """open_clip's CLIP computing the same embeddings as a ViT MiniCLIP (weights copied)."""
    import open_clip

    config = model.config
    openclip_model = open_clip.model.CLIP(**openclip_model_config(config))
    openclip_model.load_state_dict(openclip_state_dict_from_miniclip(model.state_dict(), config))
    open_clip.model.set_model_preprocess_cfg(
        openclip_model,
        {**open_clip.get_model_preprocess_cfg(openclip_model), "size": config.vision.image_size,
         "mean": tuple(config.image_mean), "std": tuple(config.image_std)},
    )
    return openclip_model.to(model.device).train(model.training)


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def load_openclip_checkpoint(path: str | Path, model_name_or_cfg: str | dict[str, Any] = "ViT-B-32-quickgelu") -> MiniCLIP:
    """A MiniCLIP holding the weights of a local open_clip / OpenAI CLIP checkpoint file.

    `path` is a state dict in `.safetensors`, `.bin` or `.pt` form (what open_clip caches from the
    Hugging Face hub), or OpenAI's original TorchScript `ViT-B-32.pt`, whose architecture is read
    off its weights. `model_name_or_cfg` is the open_clip architecture a state dict belongs to: a
    name or a model config dict. OpenAI's releases were trained with QuickGELU, hence the default.
    Nothing is downloaded.
    """
    import open_clip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file: download the weights first (e.g. OpenAI's ViT-B-32.pt) and pass its path")
    if _is_torchscript_archive(path):
        # torch.load(weights_only=True) refuses TorchScript archives; open_clip reads OpenAI's with
        # torch.jit.load and rebuilds its (QuickGELU) architecture from the weights' shapes.
        openclip_model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
    elif isinstance(model_name_or_cfg, dict):
        openclip_model = open_clip.model.CLIP(**model_name_or_cfg)
        open_clip.load_checkpoint(openclip_model, str(path), weights_only=True)
    else:
        openclip_model = open_clip_from_file(open_clip, model_name_or_cfg, path)
    return miniclip_from_openclip(openclip_model.eval())


def open_clip_from_file(open_clip, name: str, path: Path):
    """open_clip's `name` with the weights in a local file, every failure a `BadFileError` naming it.
    A .pt/.bin is opened by torch's restricted loader (tensors only): it never runs a pickle's code."""
    fix = (f"Pass the path of an open_clip state dict for {name!r} ({', '.join(WEIGHT_SUFFIXES)}) or a pretrained tag "
           f"from open_clip.list_pretrained_tags_by_model({name!r}).")
    what = "weights file"
    check_file(path, what, fix)
    if path.suffix == ".safetensors":
        read_safetensors_header(path, what, fix)
    elif path.stat().st_size == 0:
        raise BadFileError(path, f"{what} {path} is empty (0 bytes): it was probably downloaded or copied only in part. {fix}")
    try:
        return open_clip.create_model(name, pretrained=str(path), device="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text here advises unsafe loading: say what it is instead
        raise BadFileError(path, (
            f"{what} {path} holds more than tensors (Python objects that loading would have to run code for), "
            "so clipkit refused it: it may be hostile, and nothing in it was run. Ask for the weights as "
            ".safetensors, or for a plain state dict of tensors."
        )) from None
    except (EOFError, OSError, ValueError) as error:
        raise BadFileError(path, f"{what} {path} is damaged or truncated ({type(error).__name__}: {error}). {fix}") from None
    except RuntimeError as error:  # load_state_dict's message names the mismatched keys; torch's zip reader fails here too
        text = str(error)
        if "load_state_dict" in text or "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
            raise BadFileError(path, f"{path} does not hold weights for open_clip's {name!r}: {text}".strip()[:2000]) from None
        reason = "" if "weights_only" in text else f" ({text.splitlines()[0].split('. ')[0][:200]})"  # torch's first sentence, never its unsafe advice
        raise BadFileError(path, f"{what} {path} is damaged or truncated{reason}. {fix}") from None
