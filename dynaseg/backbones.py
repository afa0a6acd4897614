"""Feature extractors: image ``(B, 3, H, W)`` → feature map ``(B, p, H, W)`` at full resolution.

Each backbone is built afresh for every image (a factory, ``_partial_: true`` in the configs), so
nothing is shared between images by accident. Every backbone exposes ``out_channels`` (p).
"""

from __future__ import annotations

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
