"""The interface between a method and the method-agnostic training loop (`handflow.train`).

A method is an object with:
- `init_params(rng, batch) -> params`: a parameter pytree (batch: one global batch dict);
- `loss_fn(params, batch, rng) -> (loss, metrics)`: a scalar loss and a dict of scalar metrics,
  pure and jit-able; `batch["mask"]` (1 real, 0 padding) must be honoured;
- `eval_stats(params, batch) -> handflow.eval.metrics.Stats`: exact, mask-aware statistics of
  one evaluation batch (summed over batches and hosts by the loop).
Everything method-specific (models, losses, evaluation protocol) lives behind these three.
"""

from __future__ import annotations

from typing import Any, Protocol

from handflow.eval import metrics


class Method(Protocol):
  name: str

  def init_params(self, rng, batch: dict) -> Any: ...

  def loss_fn(self, params, batch: dict, rng) -> tuple[Any, dict]: ...

  def eval_stats(self, params, batch: dict) -> metrics.Stats: ...
