"""The network of one image's fit: a backbone, then the classifier that makes the response map.

Paper §3.1: the feature map is classified into q clusters by a linear (1×1 conv) classifier
followed by batch normalisation over the image's pixels, giving the normalised response map r'.
BatchNorm always uses this image's own statistics (the module is never switched to eval mode).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Classifier(nn.Sequential):
    """1×1 convolution p → q, then BatchNorm per channel over the spatial axis."""

    def __init__(self, in_channels: int, n_clusters: int) -> None:
        if n_clusters < 2:
            raise ValueError(f"n_clusters (q) must be >= 2, got {n_clusters}")
        super().__init__(nn.Conv2d(in_channels, n_clusters, 1), nn.BatchNorm2d(n_clusters))


class SegmentationNet(nn.Module):
    """Backbone + classifier; ``forward`` returns the features and the response map r'."""

    def __init__(self, backbone: nn.Module, n_clusters: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = Classifier(backbone.out_channels, n_clusters)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: the backbone's own, if it defines them (a pretrained
        encoder may want its own learning rate), then the classifier's."""
        if hasattr(self.backbone, "parameter_groups"):
            groups = list(self.backbone.parameter_groups())
        else:
            groups = [{"params": list(self.backbone.parameters())}]
        return [*groups, {"params": list(self.classifier.parameters())}]

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(image)
        return features, self.classifier(features)
