"""Several same-size images' networks as one: the parameters of B networks stacked along a new
leading axis, and the per-image forward pass vectorised over them.

``torch.func.vmap`` over ``functional_call`` turns a convolution with batched weights into one
grouped convolution, and BatchNorm keeps per-image statistics. SGD (momentum, weight decay) acts
element by element, so one optimiser over the stacked parameters equals B separate ones. On a GPU
this turns B small launches into one large one; on a CPU it mostly saves Python overhead. The fit
loop itself (:meth:`dynaseg.engine.Segmenter.fit_many`) is the same for one image and for B.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

ForwardLosses = Callable[[nn.Module, Tensor, int], tuple[Tensor, Tensor, Tensor, Tensor]]


class StackedNetworks:
    """B networks of one architecture as stacked, trainable parameter tensors.

    Args:
        nets: freshly built networks of the same architecture, on one device (the first one
            becomes the template whose structure the forward pass follows).
    """

    def __init__(self, nets: list[nn.Module]) -> None:
        self.template = replace_all_batch_norm_modules_(nets[0])
        names = [name for name, _ in self.template.named_parameters()]
        self.params = {
            name: torch.stack([dict(net.named_parameters())[name].detach() for net in nets])
            .clone()
            .requires_grad_(True)
            for name in names
        }
        first = next(iter(self.params.values()))
        self.structure = hash(
            (
                str(first.device),
                tuple((name, tuple(p.shape[1:])) for name, p in self.params.items()),
            )
        )
        """Equal for stacks that one vectorised forward pass can serve (it is cached on it)."""

    def vectorised(
        self, forward_losses: ForwardLosses, n_clusters: int
    ) -> Callable[[dict[str, Tensor], Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]:
        """``(params, xs) -> (target, q', L_sim, L_con)``, each with a leading batch axis."""
        template = self.template

        def one(params: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            target, n_labels, loss_sim, loss_con = forward_losses(
                Functional(template, params), x[None], n_clusters
            )
            return target[0], n_labels, loss_sim, loss_con

        return vmap(one)

    def call(self, forward: Callable[..., Any], xs: Tensor) -> Any:
        """Run a vectorised forward pass on this stack's parameters."""
        return forward(self.params, xs)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The template's optimiser parameter groups, mapped onto the stacked parameters."""
        name_of = {id(p): name for name, p in self.template.named_parameters()}
        return [
            {**group, "params": [self.params[name_of[id(p)]] for p in group["params"]]}
            for group in self.template.parameter_groups()
        ]


class Functional(nn.Module):
    """Calls a template module with substituted parameters (and buffers), as a module (what
    ``forward_losses`` expects)."""

    def __init__(self, template: nn.Module, params: dict[str, Tensor]) -> None:
        super().__init__()
        self.template = template
        self.params = params

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return functional_call(self.template, self.params, (x,))
