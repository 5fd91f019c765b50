"""The record of a training run: :class:`History`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass
class History:
    """What :func:`fit` did.

    Attributes:
      train_loss: mean training NLL (nats per point) of each epoch.
      val_loss: validation NLL after each epoch (empty without validation data).
      best_epoch: index of the epoch whose parameters the flow ends with (-1:
        no epoch finished with a finite loss; the flow keeps its initial
        parameters).
      best_loss: the mean NLL of exactly those parameters, evaluated after
        that epoch (batch norm in eval mode): on the validation data if given,
        else on the whole training set. ``val_loss[e]`` is the validation NLL
        of epoch ``e``'s judged parameters (the better of the last iterate and
        the moving average), so ``best_loss == val_loss[best_epoch]``.
        (``train_loss`` is the mean over the epoch's minibatches, taken while
        the parameters were being updated, so it is not the loss of any one
        set of parameters.)
      epoch_time: wall-clock seconds of each epoch (the first includes compilation).
      wall_time: total seconds.
      stop_reason: ``"completed"``, ``"early_stopping"``, ``"non_finite"`` or
        ``"interrupted"``.
      averaged: per epoch, whether the parameters judged (and, at the best
        epoch, returned) were the moving average rather than the last
        iterate (see ``ema_epochs`` in :func:`fit`).
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = math.inf
    epoch_time: list[float] = dataclasses.field(default_factory=list)
    wall_time: float = 0.0
    stop_reason: str = "completed"
    averaged: list[bool] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the history."""
        return dataclasses.asdict(self)
