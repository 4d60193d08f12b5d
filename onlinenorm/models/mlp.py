"""A small MLP on flattened images, for the (N, C) normalizers (``OnlineNorm1d``)."""

from __future__ import annotations

from torch import Tensor, nn

from ..norms import NormLayer

HIDDEN_FEATURES = (512, 256)


class MLP(nn.Module):
    """(N, C, H, W) or (N, F) -> (N, num_classes): Linear, norm, ReLU per hidden layer."""

    def __init__(self, in_features: int, num_classes: int, norm_layer: NormLayer, hidden=HIDDEN_FEATURES) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width, bias=False), norm_layer(width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
