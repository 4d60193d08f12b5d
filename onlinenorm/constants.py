"""Names and defaults shared by the layer, the training runtime, the sweeps and the command line.

Torch-free (standard library only), so the command-line modules and the spec
checker import the same tuples the layer and the models use instead of copies.
"""

from __future__ import annotations

# The online layer's error compensation mechanisms: activation clamping, layer scaling, none.
ECMS = ("ac", "ls", "none")
DEFAULT_CLAMP_VALUE = 5.0  # the paper's c for ImageNet
# How the online layer runs its training-mode math; "auto" picks the fastest that builds here.
KERNEL_CHOICES = ("auto", "eager", "compiled", "native", "triton")

# Normalizers the norm factory builds.
NORMS = ("online", "batch", "group", "layer", "instance", "none")
DEFAULT_GROUP_SIZE = 8  # channels per group for group norm

# Models: CIFAR ResNets of depth 6n + 2, ImageNet-style ResNets, and an MLP for the (N, C) layers.
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_MODELS = ("resnet18", "resnet50")
MODELS = (*(f"resnet{depth}" for depth in CIFAR_DEPTHS), *IMAGENET_MODELS, "mlp")
# A CIFAR ResNet's shortcut where a stage changes width: "pad" (parameter-free, option A of
# He et al. 2016) or "projection" (1x1 convolution and norm, option B). ImageNet ResNets project.
SHORTCUTS = ("pad", "projection")

# Dataset formats (each with its recipe in onlinenorm.training.config).
DATASETS = ("cifar10", "cifar100", "imagefolder", "imagenet-npz")

# The metric row a training run reports after every epoch (and, besides these, ``clamp_fraction/<layer>``
# per clamping layer): what `onlinenorm train` prints, a sweep records and ``analysis`` reads back.
METRICS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_acc_unclamped",
    "clamp_fraction",
    "samples_per_s",
    "lr",
    "diverged",
)

# Files the product writes and reads back.
SPEC_FILE = "spec.yaml"  # the effective sweep spec, in an experiment directory
RUN_CONFIG_FILE = "config.json"  # the resolved training config, in an `onlinenorm train` run folder
