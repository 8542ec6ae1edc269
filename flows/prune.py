"""Unstructured magnitude pruning of zoo models, kept through fine-tuning and made permanent.

`MagnitudePruner` holds one boolean mask per prunable weight (every conv and linear weight of
the model; training-only auxiliary heads excluded). A round either removes the globally
smallest `fraction` of the weights still alive (so R rounds of fraction F leave
(1 - F)^R of them: BacalhauNet's three rounds of ~43 % give ~81 % zeros), or every weight with
|w| < `threshold`. The training loop calls `apply()` after each optimizer step, which writes the
zeros back into the parameters: the state dict always holds exact zeros (no `weight_orig` /
`weight_mask` reparametrisation as with `torch.nn.utils.prune`, so checkpoints keep the plain
model's keys), and a zero float weight quantizes to an exact zero in the exported graph.

`python -m flows.prune CKPT` prints the per-layer sparsity of a checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from torch import nn

from flows.errors import ToolchainError

# Modules whose name contains one of these serve training only (Imperial's auxiliary
# classifiers) and are removed at inference: they take no part in the global ranking.
TRAINING_ONLY_PARTS = ("aux_heads",)


@dataclass(frozen=True)
class LayerSparsity:
    name: str  # parameter name in the state dict, e.g. "conv.0.dw.conv.weight"
    weights: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """{state-dict name: parameter} of every conv and linear weight (Brevitas' Quant layers
    subclass torch's). A parametrized weight (ULCNN's tied complex conv) is pruned in its stored
    parameter, so the zeros hold in every tied copy."""
    out: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            continue
        if any(part in name.split(".") for part in TRAINING_ONLY_PARTS):
            continue
        prefix = f"{name}." if name else ""
        if hasattr(module, "parametrizations") and "weight" in module.parametrizations:
            out[f"{prefix}parametrizations.weight.original"] = \
                module.parametrizations.weight.original
        else:
            out[f"{prefix}weight"] = module.weight
    return out


def sparsity_report(model: nn.Module) -> list[LayerSparsity]:
    """Exact zeros per prunable weight, in model order."""
    return [LayerSparsity(name, p.numel(), int((p.detach() == 0).sum()))
            for name, p in prunable_weights(model).items()]


def report_dict(layers: list[LayerSparsity]) -> dict:
    """The JSON form: totals and one entry per layer."""
    weights = sum(layer.weights for layer in layers)
    zeros = sum(layer.zeros for layer in layers)
    return {"weights": weights, "zeros": zeros, "sparsity": zeros / weights if weights else 0.0,
            "layers": [{"name": layer.name, "weights": layer.weights, "zeros": layer.zeros,
                        "sparsity": round(layer.sparsity, 6)} for layer in layers]}


class MagnitudePruner:
    """Masks over `prunable_weights(model)`; see the module docstring."""

    def __init__(self, model: nn.Module):
        self.params = prunable_weights(model)
        if not self.params:
            raise ToolchainError(f"{type(model).__name__} has no conv or linear weight to prune.")
        self.masks = {name: torch.ones_like(p, dtype=torch.bool)
                      for name, p in self.params.items()}
        self.rounds_done = 0

    def prune_round(self, *, fraction: float | None = None,
                    threshold: float | None = None) -> int:
        """Remove the smallest `fraction` of the live weights (global ranking over all layers),
        or all with |w| < `threshold`; return how many were removed this round."""
        if (fraction is None) == (threshold is None):
            raise ToolchainError("a pruning round takes either a fraction or a threshold.")
        with torch.no_grad():
            magnitudes = {n: p.detach().abs() for n, p in self.params.items()}
            if fraction is not None:
                if not 0 < fraction < 1:
                    raise ToolchainError(f"--prune-fraction {fraction}: expected a value in "
                                         "(0, 1), the share of live weights removed per round.")
                alive = torch.cat([magnitudes[n][self.masks[n]] for n in self.params])
                k = round(fraction * alive.numel())
                if k == 0:
                    self.rounds_done += 1
                    return 0
                # ties at the cut are broken by position, so exactly k weights go
                order = torch.cat([torch.where(self.masks[n], magnitudes[n], torch.inf).ravel()
                                   for n in self.params])
                drop = torch.zeros(order.numel(), dtype=torch.bool)
                drop[torch.argsort(order, stable=True)[:k]] = True
                start = 0
                for n in self.params:
                    size = self.masks[n].numel()
                    self.masks[n] &= ~drop[start:start + size].view_as(self.masks[n])
                    start += size
                removed = k
            else:
                if threshold <= 0:
                    raise ToolchainError(f"--prune-threshold {threshold}: expected a positive "
                                         "weight magnitude.")
                removed = 0
                for n in self.params:
                    new = self.masks[n] & (magnitudes[n] >= threshold)
                    removed += int((self.masks[n] & ~new).sum())
                    self.masks[n] = new
        self.rounds_done += 1
        self.apply()
        return removed

    def apply(self) -> None:
        """Write the zeros into the parameters (after every optimizer step)."""
        with torch.no_grad():
            for name, p in self.params.items():
                p.mul_(self.masks[name])

    def state_dict(self) -> dict:
        return {"rounds_done": self.rounds_done, "masks": {n: m.clone()
                                                           for n, m in self.masks.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["masks"]) != set(self.masks):
            raise ToolchainError("the pruning masks of the checkpoint do not match the model's "
                                 "prunable weights.")
        self.rounds_done = int(state["rounds_done"])
        self.masks = {n: state["masks"][n].to(torch.bool).clone() for n in self.masks}
        self.apply()


def print_report(layers: list[LayerSparsity], title: str = "sparsity per layer") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("layer", "weights", "zeros", "sparsity"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for layer in layers:
        table.add_row(layer.name, str(layer.weights), str(layer.zeros), f"{layer.sparsity:.1%}")
    total = report_dict(layers)
    table.add_row("total", str(total["weights"]), str(total["zeros"]), f"{total['sparsity']:.1%}")
    Console(stderr=True).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.prune",
                                     description="Print the per-layer sparsity of a checkpoint "
                                                 "(prune while training: flows.train "
                                                 "--prune-rounds).")
    parser.add_argument("checkpoint", help="a checkpoint written by flows.train")
    args = parser.parse_args(argv)
    from flows.train import model_from_checkpoint

    try:
        model, _ = model_from_checkpoint(args.checkpoint)
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(sparsity_report(model), title=f"sparsity per layer: {args.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
