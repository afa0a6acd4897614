"""Many same-size images fitted at once, each with its own network, optimiser state, μ, q' and
stopping, in one set of kernels.

The B networks' parameters are stacked along a new leading axis and the per-image forward pass is
vectorised with ``torch.func.vmap`` over ``functional_call``: a convolution with batched weights
becomes one grouped convolution, BatchNorm keeps per-image statistics. SGD (momentum, weight
decay) acts element by element, so one optimiser over the stacked parameters equals B separate
ones. On a GPU this turns B small launches into one large one; on a CPU it mostly saves Python
overhead. An image that meets its stopping rule keeps the labels of that exact iteration; its
loss weight drops to zero while the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

from dynaseg.engine import (
    HISTORY_KEYS,
    SegmentationResult,
    Segmenter,
    forward_losses,
    relabel_by_size,
    to_tensor,
)


class BatchedSegmenter:
    """Runs a :class:`Segmenter`'s method on a batch of same-size images in one fit.

    Args:
        segmenter: the method and its settings (backbone, weighting, stopping, q, T, optimiser,
            device); each image gets the network ``segmenter.build_network(seed)`` would give it.
            Any other method with a ``fit(image, seed)`` (the baselines) runs one image at a time.
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter

    def fit(
        self, images: Sequence[np.ndarray | Tensor], seeds: Sequence[int]
    ) -> list[SegmentationResult | FloatingPointError]:
        """Fit one fresh network per image, all together (a single image takes the one-image
        loop, which is exact and has nothing to batch).

        Returns:
            One result per image, in order; an image whose loss became non-finite gets the
            ``FloatingPointError`` naming the iteration instead, and the others are unaffected.
        """
        seg = self.segmenter
        if len(images) != len(seeds) or not images:
            raise ValueError(f"need one seed per image, got {len(images)} and {len(seeds)}")
        if len(images) == 1 or not isinstance(seg, Segmenter):
            return [self._fit_one(image, seed) for image, seed in zip(images, seeds, strict=True)]
        start = time.perf_counter()
        tensors = [to_tensor(image) for image in images]
        if len({tuple(x.shape) for x in tensors}) != 1:
            raise ValueError("all images of a batch must have the same size")
        xs = torch.stack(tensors).to(seg.device)
        batch = xs.shape[0]
        nets = [seg.build_network(seed) for seed in seeds]
        thresholds = [
            seg.stopping.resolve(x, lambda net=net, x=x: net.backbone(x[None])[0], seed)
            for net, x, seed in zip(nets, xs, seeds, strict=True)
        ]
        template = nets[0]
        replace_all_batch_norm_modules_(template)
        names = [name for name, _ in template.named_parameters()]
        stacked = {
            name: torch.stack([dict(net.named_parameters())[name].detach() for net in nets])
            .clone()
            .requires_grad_(True)
            for name in names
        }
        optimizer = seg.optimizer(self._groups(template, stacked))

        def one(params: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            return forward_losses(_Functional(template, params), x[None], seg.n_clusters)

        step = vmap(one)
        history = torch.zeros(seg.max_iter + 1, batch, len(HISTORY_KEYS), device=seg.device)
        final = torch.zeros((batch, *xs.shape[2:]), dtype=torch.int16, device=seg.device)
        active = torch.ones(batch, dtype=torch.bool, device=seg.device)
        threshold = torch.tensor([t for t, _ in thresholds], device=seg.device)
        stop_at = [seg.max_iter] * batch
        stop_reason = ["max_iter"] * batch
        errors: dict[int, FloatingPointError] = {}
        iteration = 0
        for iteration in range(seg.max_iter + 1):
            with seg.autocast():
                target, n_labels, loss_sim, loss_con = step(stacked, xs)
            mu = seg.weighting(n_labels)
            history[iteration] = torch.stack(
                [n_labels.float(), mu, loss_sim.detach(), loss_con.detach()], 1
            )
            losses = loss_sim + mu * loss_con
            fired = active & (n_labels <= threshold)
            broken = active & ~torch.isfinite(losses)
            newly = fired | broken | (active & (iteration == seg.max_iter))
            final[newly] = target[newly, 0].to(torch.int16)
            for b in torch.nonzero(newly).flatten().tolist():
                stop_at[b] = iteration
                if bool(broken[b]):
                    errors[b] = FloatingPointError(f"non-finite loss at iteration {iteration}")
                elif bool(fired[b]):
                    stop_reason[b] = "threshold"
            active &= ~newly
            if not bool(active.any()):
                break
            optimizer.zero_grad(set_to_none=True)
            torch.where(active, losses, torch.zeros_like(losses)).sum().backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        labels = final.cpu().numpy()
        recorded = history.cpu()
        results: list[SegmentationResult | FloatingPointError] = []
        for b in range(batch):
            if b in errors:
                results.append(errors[b])
                continue
            rows = recorded[: stop_at[b] + 1, b].T.tolist()
            results.append(
                SegmentationResult(
                    labels=relabel_by_size(labels[b]),
                    iterations=stop_at[b],
                    stop_reason=stop_reason[b],
                    threshold=thresholds[b][0],
                    opt_nc=thresholds[b][1],
                    seconds=seconds,
                    history=dict(zip(HISTORY_KEYS, rows, strict=True)),
                )
            )
        return results

    def _fit_one(self, image: np.ndarray | Tensor, seed: int) -> SegmentationResult | Exception:
        try:
            return self.segmenter.fit(image, seed)
        except FloatingPointError as error:
            return error

    @staticmethod
    def _groups(template: torch.nn.Module, stacked: dict[str, Tensor]) -> list[dict]:
        """The template's optimiser parameter groups, mapped onto the stacked parameters."""
        name_of = {id(p): name for name, p in template.named_parameters()}
        groups = []
        for group in template.parameter_groups():
            params = [stacked[name_of[id(p)]] for p in group["params"]]
            groups.append({**group, "params": params})
        return groups


class _Functional(torch.nn.Module):
    """Calls a template module with substituted parameters (what ``forward_losses`` expects)."""

    def __init__(self, template: torch.nn.Module, params: dict[str, Tensor]) -> None:
        super().__init__()
        self.template = template
        self.params = params

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return functional_call(self.template, self.params, (x,))
