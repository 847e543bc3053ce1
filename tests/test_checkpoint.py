"""The one checkpoint loader: it reads the folder's format and gives what the model's own loader gives."""

from __future__ import annotations

import json
import re

import pytest
import torch

from clipkit.checkpoint import LOADERS, CheckpointFormatError, checkpoint_format, load_checkpoint
from clipkit.config import config_from_preset
from clipkit.interface import CLIPBase
from clipkit.model import MiniCLIP, load_model, save_model
from clipkit.tokenizer import WordTokenizer


@pytest.fixture
def miniclip_folder(tmp_path):
    torch.manual_seed(0)
    tokenizer = WordTokenizer(["a", "red", "circle"], context_length=8)
    model = MiniCLIP(config_from_preset("tiny-cpu", tokenizer=tokenizer))
    return save_model(model, tmp_path / "mini", metadata={"note": "test"}), model


def test_a_miniclip_folder_loads_as_load_model_loads_it(miniclip_folder):
    folder, saved = miniclip_folder
    assert checkpoint_format(folder) == "clipkit.MiniCLIP"
    loaded, reference = load_checkpoint(folder), load_model(folder)
    assert isinstance(loaded, MiniCLIP) and isinstance(loaded, CLIPBase) and not loaded.training
    assert loaded.metadata == {"note": "test"}
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor) and torch.equal(reference.state_dict()[name], tensor)
    assert load_checkpoint(folder, device="cpu").device == torch.device("cpu")


def test_a_lit_folder_loads_through_load_lit(tmp_path, monkeypatch):
    import clipkit.lit as lit
    from lit_fakes import FakeSentenceModel, tiny_lit_config

    torch.manual_seed(0)
    model = lit.LiTModel(tiny_lit_config(), text_model=FakeSentenceModel())
    lit.save_lit(model, tmp_path / "lit")
    # The frozen tower loads from the config's path; a tiny stand-in keeps the test fast and offline.
    monkeypatch.setattr(lit, "load_sentence_model", lambda *args, **kwargs: FakeSentenceModel())
    assert checkpoint_format(tmp_path / "lit") == "clipkit.LiTModel"
    loaded = load_checkpoint(tmp_path / "lit")
    assert isinstance(loaded, lit.LiTModel) and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(tensor, model.state_dict()[name]) for name, tensor in loaded.state_dict().items())


def test_every_known_format_has_a_loader():
    from clipkit.lit import CHECKPOINT_FORMAT as LIT
    from clipkit.model import CHECKPOINT_FORMAT as MINI

    assert set(LOADERS) == {MINI, LIT}


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"format": "someone.Else", "config": {}}', r"format 'someone.Else'.*known formats"),
        ('{"config": {}}', "names no checkpoint format"),
        ("[]", "holds a list where a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_foreign_folder_gets_an_error_naming_it_and_the_known_formats(tmp_path, content, message):
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "config.json").write_text(content)
    with pytest.raises(CheckpointFormatError, match=message) as caught:
        load_checkpoint(folder)
    assert str(folder) in str(caught.value)


def test_a_folder_without_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json") as caught:
        load_checkpoint(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(caught.value)


def test_the_format_field_is_what_decides(miniclip_folder):
    folder, _ = miniclip_folder
    document = json.loads((folder / "config.json").read_text())
    document["format"] = "clipkit.LiTModel"
    (folder / "config.json").write_text(json.dumps(document))
    with pytest.raises(Exception):  # a MiniCLIP config read as LiT fails inside load_lit, not silently
        load_checkpoint(folder)


# --- load_model_spec: one string for any model ------------------------------------------------


def test_parse_model_spec_reads_each_form():
    from clipkit.checkpoint import ModelSpec, parse_model_spec

    assert parse_model_spec("runs/mini-clip") == ModelSpec("clipkit", "runs/mini-clip")
    assert parse_model_spec("open_clip:ViT-B-32") == ModelSpec("open_clip", "ViT-B-32", None)
    assert parse_model_spec("open_clip:ViT-B-32:laion2b_s34b_b79k") == ModelSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k")
    assert parse_model_spec("open_clip:ViT-B-32:C:/w/x.safetensors").pretrained == "C:/w/x.safetensors"  # colons in paths stay
    assert parse_model_spec("hf:openai/clip-vit-base-patch32") == ModelSpec("hf", "openai/clip-vit-base-patch32")
    for spec in ("open_clip:ViT-B-32:laion2b_s34b_b79k", "hf:a/b", "runs/x"):
        assert str(parse_model_spec(spec)) == spec


def test_a_checkpoint_folder_spec_loads_as_load_checkpoint_does(miniclip_folder):
    from clipkit.checkpoint import load_model_spec

    folder, saved = miniclip_folder
    model, spec = load_model_spec(str(folder))
    assert isinstance(model, MiniCLIP) and spec.kind == "clipkit" and str(folder) in spec.describe()
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


def test_an_open_clip_spec_with_a_local_weights_file_loads_those_weights(tmp_path, tiny_open_clip):
    from clipkit.checkpoint import load_model_spec
    from clipkit.pretrained import OpenCLIPModel, load_open_clip, openclip_state_dict_file

    torch.manual_seed(0)
    reference = load_open_clip(tiny_open_clip)
    weights = openclip_state_dict_file(reference, tmp_path / "tiny.safetensors")
    model, spec = load_model_spec(f"open_clip:{tiny_open_clip}:{weights}")
    assert isinstance(model, OpenCLIPModel) and "weights file" in spec.describe()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    random_model, random_spec = load_model_spec(f"open_clip:{tiny_open_clip}")
    assert "randomly initialised" in random_spec.describe() and isinstance(random_model, OpenCLIPModel)


def test_an_hf_folder_loads_with_or_without_its_prefix(tmp_path):
    transformers = pytest.importorskip("transformers")
    from clipkit.checkpoint import load_model_spec
    from clipkit.hf import HFCLIPModel

    config = transformers.CLIPConfig(
        text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 8},
        vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "image_size": 16, "patch_size": 8},
        projection_dim=8,
    )
    transformers.CLIPModel(config).save_pretrained(tmp_path / "hf")
    for spec in (f"hf:{tmp_path / 'hf'}", str(tmp_path / "hf")):
        model, parsed = load_model_spec(spec)
        assert isinstance(model, HFCLIPModel) and parsed.kind == "hf" and "transformers" in parsed.describe()


@pytest.mark.parametrize("spec, says", [
    ("no/such/folder", [r"as a clipkit checkpoint folder.*does not exist", "open_clip:NAME", "hf:ID"]),
    ("open_clip:NoSuchNet", ["as open_clip:NAME", "no model called 'NoSuchNet'"]),
    ("open_clip:", ["names no open_clip model"]),
    ("hf:./no/such/folder", ["as hf:ID-or-folder", "not a folder"]),
    ("", ["empty"]),
])
def test_a_spec_nothing_reads_names_the_forms_tried_and_why(spec, says):
    from clipkit.checkpoint import ModelSpecError, load_model_spec

    with pytest.raises(ModelSpecError) as caught:
        load_model_spec(spec)
    for pattern in says:
        assert re.search(pattern, str(caught.value), re.S), (pattern, str(caught.value))


def test_a_damaged_checkpoint_folder_keeps_its_own_message(tmp_path):
    from clipkit.checkpoint import load_model_spec

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointFormatError, match="not valid JSON"):
        load_model_spec(str(tmp_path))
