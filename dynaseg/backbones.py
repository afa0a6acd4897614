"""Feature extractors: image ``(B, 3, H, W)`` → feature map ``(B, p, H, W)`` at full resolution.

Each backbone is built afresh for every image (a factory, ``_partial_: true`` in the configs), so
nothing is shared between images by accident. Every backbone exposes ``out_channels`` (p).
Two extractors (paper §3.2): ``CNNBackbone`` (§3.2.1) and ``ResNet18FPN`` (§3.2.2), whose ImageNet
weights are read from disk only: these machines have no network, and a missing file is an error
that says how to get it, never a download or a silent random initialisation.
"""

from __future__ import annotations

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
    """The pretrained weights cannot be used (unreadable file, or not a ResNet-18 state dict).

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
        raise PretrainedWeightsError(
            f"{path} is not a torchvision ResNet-18 state dict: {error}"
        ) from error
    return path


class ResNet18FPN(nn.Module):
    """ImageNet ResNet-18 encoder + FPN decoder → p-channel map at the input's resolution (§3.2.2).

    The encoder is torchvision's ResNet-18 without its global pooling and FC layer. The decoder is a
    Feature Pyramid Network over the chosen stages C2…C5: a 1×1 lateral conv per stage, a top-down
    path (nearest upsampling and addition), a 3×3 smoothing conv per level; the smoothed levels are
    upsampled bilinearly to the finest one and summed (every level reaches the output directly),
    then upsampled bilinearly to the input size. The input is normalised with ImageNet statistics
    first, as the pretrained encoder expects. Sizes that are not multiples of 32 are padded
    (replicating the border; up to 64 for tiny images) and the output is cropped back, so the map is
    exactly H×W and aligned with the image.

    The encoder's BatchNorm layers use each image's own statistics while it is fine-tuned (like
    the rest of the per-image network) and ImageNet's running statistics when it is frozen, so a
    frozen encoder is a fixed function whose weights and buffers never change.

    Args:
        channels: p, the channels of the decoder and of the output. Default 100, the paper's
            p = q = 100 (§4.1), as the CNN backbone's; the COCO presets set p = q = 27, the
            "output channel matched to the number of classes" of §4.1.
        stages: which of C2…C5 feed the decoder (any non-empty subset of 2, 3, 4, 5). The finest
            chosen stage sets the decoder's resolution; later encoder stages are not built.
        pretrained: load ``ResNet18_Weights.IMAGENET1K_V1`` from disk (see ``weights``). False
            leaves the encoder randomly initialised.
        weights: the weights file; None takes torchvision's hub cache,
            ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``. Nothing is ever downloaded.
        freeze_encoder: keep the encoder fixed (no gradient, eval-mode BatchNorm); only the
            decoder (and the classifier) is fitted to the image.
        encoder_lr: a learning rate of the encoder's own (e.g. 0.01 keeps more of the ImageNet
            features than the paper's lr 0.1); None uses the optimiser's.

    Raises:
        ValueError: invalid or contradictory arguments.
        WeightsNotFoundError: ``pretrained`` and the weights file is absent.
        PretrainedWeightsError: the weights file is not a torchvision ResNet-18 state dict.
    """

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

        # weights=None: torchvision must never be asked for weights, as it would download them.
        encoder = torchvision.models.resnet18(weights=None)
        if pretrained:
            load_resnet18_weights(encoder, weights)
        del encoder.avgpool, encoder.fc
        for stage in range(max(stages) + 1, 6):
            delattr(encoder, f"layer{stage - 1}")
        self.encoder = encoder
        self.lateral = nn.ModuleDict(
            {str(s): nn.Conv2d(_STAGE_CHANNELS[s], channels, 1) for s in stages}
        )
        self.smooth = nn.ModuleDict(
            {str(s): nn.Conv2d(channels, channels, 3, padding=1) for s in stages}
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.stages = stages
        self.out_channels = channels
        self.pretrained = pretrained
        self.freeze_encoder = freeze_encoder
        self.encoder_lr = encoder_lr
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> ResNet18FPN:
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

        e = self.encoder
        x = e.maxpool(e.relu(e.bn1(e.conv1(x))))
        features = {}
        for stage in range(2, max(self.stages) + 1):
            x = getattr(e, f"layer{stage - 1}")(x)
            features[stage] = x

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
