"""The norm factory and the models that take its layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import onlinenorm
from onlinenorm.models import MODELS, NORM_DIMS, create_model
from onlinenorm.norms import NORMS, create_norm
from onlinenorm.training import config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "norm,dim,expected",
    [
        ("online", 2, onlinenorm.OnlineNorm2d),
        ("online", 1, onlinenorm.OnlineNorm1d),
        ("batch", 2, nn.BatchNorm2d),
        ("batch", 1, nn.BatchNorm1d),
        ("group", 2, nn.GroupNorm),
        ("layer", 2, nn.GroupNorm),
        ("layer", 1, nn.LayerNorm),
        ("instance", 2, nn.InstanceNorm2d),
        ("none", 2, nn.Identity),
    ],
)
def test_factory_maps_names_to_layers(norm, dim, expected):
    layer = create_norm(norm, dim=dim)(16)
    assert type(layer) is expected


def test_factory_passes_online_options():
    layer = create_norm("online", ecm="ls", alpha_fwd=0.9, alpha_bkw=0.8, clamp_value=2.0, ls_eps=1e-3)(4)
    assert (layer.ecm, layer.alpha_fwd, layer.alpha_bkw, layer.clamp_value, layer.ls_eps) == ("ls", 0.9, 0.8, 2.0, 1e-3)


def test_factory_group_size_and_layer_norm_groups():
    assert create_norm("group", group_size=4)(16).num_groups == 4
    assert create_norm("layer")(16).num_groups == 1
    with pytest.raises(ValueError, match="does not divide"):
        create_norm("group", group_size=5)(16)


def test_factory_rejects_unknown_names_and_instance_vectors():
    with pytest.raises(ValueError, match="norm must be one of"):
        create_norm("bn")
    with pytest.raises(ValueError, match="dim=1"):
        create_norm("instance", dim=1)


def test_config_knows_every_model_and_norm():
    assert set(MODELS) == set(config.MODELS) and set(NORMS) == {"online", "batch", "group", "layer", "instance", "none"}


@pytest.mark.parametrize("depth,params", [(20, 0.27e6), (56, 0.85e6), (110, 1.7e6)])
def test_cifar_resnet_sizes_match_he_et_al(depth, params):
    model = create_model(f"resnet{depth}", 10, create_norm("batch"))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.03)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("norm", ["online", "batch"])
def test_every_model_runs_forward_and_backward(name, norm):
    size = 32 if name != "resnet50" else 16
    model = create_model(name, 7, create_norm(norm, dim=NORM_DIMS[name]), (3, size, size))
    x = torch.randn(4, 3, size, size)
    out = model(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("size,stage1", [(32, 32), (64, 32), (128, 32)])
def test_imagenet_resnet_stem_suits_the_resolution(size, stage1):
    model = create_model("resnet18", 10, create_norm("batch"), (3, size, size))
    assert model.stem(torch.zeros(1, 3, size, size)).shape[-1] == stage1


def test_models_report_clamp_fractions_per_layer():
    model = create_model("resnet20", 10, create_norm("online", clamp_value=0.5))
    model(torch.randn(8, 3, 32, 32))
    fractions = onlinenorm.clamp_fractions(model)
    assert "norm" in fractions and "blocks.0.norm1" in fractions and 0 < fractions["all"] < 1


def test_cifar_resnet_projection_shortcuts_are_a_1x1_convolution_and_a_norm_at_each_width_change():
    pad = create_model("resnet20", 10, create_norm("batch"))
    projection = create_model("resnet20", 10, create_norm("batch"), shortcut="projection")
    extra = sum(p.numel() for p in projection.parameters()) - sum(p.numel() for p in pad.parameters())
    assert extra == 16 * 32 + 32 * 64 + 2 * (32 + 64)  # two 1x1 convolutions, their norms' weight and bias
    x = torch.randn(2, 3, 32, 32)
    assert projection(x).shape == pad(x).shape == (2, 10)
    with pytest.raises(ValueError, match="shortcut must be one of pad, projection"):
        create_model("resnet20", 10, create_norm("batch"), shortcut="identity")
