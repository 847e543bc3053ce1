"""Configs are checked field by field against their dataclasses: types, ranges, unknown names."""

import pytest

from clipkit.config import PRESETS, CLIPConfig, ConfigError, config_from_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_plain_data(name):
    config = config_from_preset(name)
    assert CLIPConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "data, message",
    [
        ({"embed_dim": "512"}, "field embed_dim must be an integer, got the string '512'"),
        ({"embed_dim": 5.0}, "field embed_dim must be an integer"),
        ({"embed_dim": True}, "field embed_dim must be an integer, got a boolean"),
        ({"embed_dim": 0}, "field embed_dim must be positive, got 0"),
        ({"text": {"layers": -1}}, "field text.layers must be positive"),
        ({"vision": {"cnn_channels": [8, "16"]}}, "field vision.cnn_channels must be an integer"),
        ({"image_mean": [0.5, 0.5]}, "field image_mean must be a list of 3 values, got 2"),
        ({"embd_dim": 64}, "unknown config field 'embd_dim'; did you mean 'embed_dim'"),
        ({"text": {"hedas": 2}}, "unknown text field 'hedas'; did you mean 'heads'"),
        ({"vision": []}, "vision must be a JSON object of fields, got a list"),
        ({"vision": {"kind": "vit", "width": 100, "heads": 3}}, r"vision.heads \(3\) must divide vision.width \(100\)"),
        ({"vision": {"kind": "vit", "image_size": 30, "patch_size": 8}}, "vision.patch_size .* must divide vision.image_size"),
        ({"vision": {"kind": "mlp"}}, "vision.kind must be 'vit' or 'cnn'"),
        ({"text": {"vocab_size": 10, "eot_token_id": 10}}, r"text.eot_token_id \(10\) must lie in"),
        ({"vision": {"kind": "cnn", "cnn_channels": []}}, "field vision.cnn_channels is empty"),
        ({"vision": {"kind": "cnn", "cnn_blocks": [0, 0, 1]}}, r"vision.cnn_blocks \(0, 0, 1\) does not fit cnn_channels"),
        ({"vision": {"kind": "cnn", "cnn_blocks": [1, 1]}}, r"vision.cnn_blocks \(1, 1\) does not fit cnn_channels \(32, 64, 128\)"),
        ({"vision": {"kind": "cnn", "cnn_blocks": "2"}}, "field vision.cnn_blocks must be an integer.* or .*must be a list"),
        ({"tokenizer": "bpe"}, "field tokenizer must be an object, got the string 'bpe'"),
    ],
)
def test_a_bad_field_is_named_with_what_it_should_be(data, message):
    with pytest.raises(ConfigError, match=message):
        CLIPConfig.from_dict(data)


def test_blocks_per_stage_round_trip_and_build_the_tower_they_name():
    from clipkit.image_encoder import ConvEncoder

    config = config_from_preset("tiny-cpu", vision={"cnn_block": "plain", "cnn_blocks": [0, 2, 1]})
    assert CLIPConfig.from_dict(config.to_dict()) == config
    assert config.vision.blocks_per_stage() == (0, 2, 1)
    assert len(ConvEncoder(config.vision, 8).stages) == 3
    assert config_from_preset("tiny-cpu", vision={"cnn_blocks": 2}).vision.blocks_per_stage() == (2, 2, 2)


def test_a_config_that_is_not_an_object_is_refused():
    for data in ([], None, "tiny-cpu"):
        with pytest.raises(ConfigError, match="config must be a JSON object"):
            CLIPConfig.from_dict(data)
