"""HLOP: Hebbian learning based orthogonal projection (Xiao et al., "Hebbian Learning based
Orthogonal Projection for Continual Learning of Spiking Neural Networks", ICLR 2024).

Instead of storing SVDs of old tasks' activations (GPM), every protected layer gets ``k``
*subspace neurons* with lateral weights ``H`` [k, m] from the layer's input ``x ∈ R^m``:
``y = H x``. The lateral weights are learnt by Hebbian / anti-Hebbian plasticity — Oja's
subspace rule, an online PCA::

    X̃ = X − (X H_oldᵀ) H_old   (lateral inhibition by the frozen neurons; repeated until it
                                settles, :meth:`HebbianSubspace.lateral_residual`)
    ΔH_new = (η / s) · ( Yᵀ X̃  −  Yᵀ Y H_new ),   Y = X̃ H_newᵀ   (one mini-batch X [B, m])

``Yᵀ X̃`` is the Hebbian term (co-activity of a subspace neuron and its input), ``−Yᵀ Y H_new``
the anti-Hebbian lateral term among the new neurons. The stable fixed points have orthonormal
rows spanning the top principal subspace of the residual ``E[x̃ x̃ᵀ]``, orthogonal to the
frozen rows (Oja 1989; Oja & Karhunen 1985). The step is normalised by ``s`` = the batch's
mean ``‖x̃‖²`` (normalised-LMS style: ``λ_max(E[x̃ x̃ᵀ]) <= s``, so ``η < 1`` is stable at any
input scale).

Per task (after training it, like GPM): new neurons are added in chunks of ``chunk``. Each
is imprinted with a random mixture of the residual inputs (a Hebbian step with random
postsynaptic activity) passed through the lateral inhibition of the neurons imprinted before
it, so a chunk starts inside the residual's span with near-orthonormal rows (without this,
rows imprinted from inputs dominated by one direction, e.g. ReLU outputs with a large mean,
start nearly collinear and the symmetric rule separates them very slowly). Only the new
neurons learn (old ones are frozen, so old tasks' subspaces are kept), for ``epochs`` passes
over ``num_samples`` of the task's inputs; chunks are added until the captured energy
``‖X Hᵀ‖² / ‖X‖²`` — itself a Hebbian read-out, the subspace neurons' output power — reaches
``threshold`` (or ``max_neurons``). Learning forms no SVD, QR or covariance matrix (the
projection below uses one Cholesky factorisation of a ``k × k`` matrix to express the
settled circuit in the :class:`~subspace_continual.memory.SubspaceMemory` format).

Projection: the lateral circuit maps ``x`` to ``x − Hᵀ H x``; settled for three rounds it is
``(I − HᵀH)³``, and a weight update is projected as ``ΔW ← ΔW (I − HᵀH)³`` (the harness
applies it through :class:`~subspace_continual.memory.SubspaceMemory` with
``U = HebbianSubspace.projection_basis()``; it is the orthogonal projection on the complement
of the neurons' span when ``H`` has orthonormal rows, i.e. at convergence, and
:meth:`HebbianSubspace.orthonormality_error` measures the distance to that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from subspace_continual.data import Scenario, Task
from subspace_continual.gpm import projection_mode, protected_thresholds
from subspace_continual.harness import Strategy, TrainConfig
from subspace_continual.memory import ProjectionHandle, SubspaceMemory, layer_inputs
from subspace_continual.models import MultiHeadMLP

__all__ = ["HLOP", "HebbianReport", "HebbianSubspace"]


@dataclass(frozen=True)
class HebbianReport:
    """What :meth:`HebbianSubspace.grow` did: neurons ``added``, total ``size``, the energy
    fraction of the data the neurons captured ``before`` and ``after``, Hebbian ``steps``."""

    added: int
    size: int
    before: float
    after: float
    steps: int


class HebbianSubspace:
    """Subspace neurons with lateral weights ``H`` [k, m] learnt by Oja's subspace rule.

    Args:
        dim: input dimension ``m``.
        dtype: dtype of ``H`` and of the Hebbian arithmetic (float64 is the most accurate).
    """

    def __init__(self, dim: int, *, dtype: torch.dtype = torch.float64):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        self.dim, self.dtype = dim, dtype
        self.H = torch.zeros(0, dim, dtype=dtype)

    @property
    def size(self) -> int:
        """Number of subspace neurons ``k``."""
        return int(self.H.shape[0])

    def _check(self, X: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(X) or X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"X: expected inputs [n, {self.dim}], got "
                             f"{tuple(X.shape) if torch.is_tensor(X) else type(X).__name__}")
        return X.to(self.dtype)

    def captured_energy(self, X: torch.Tensor) -> float:
        """``‖X Hᵀ‖² / ‖X‖²`` for inputs ``X`` [n, m]: the output power of the subspace neurons
        relative to the input power (the energy fraction in ``span(Hᵀ)`` when the rows are
        orthonormal)."""
        X = self._check(X)
        total = float(X.square().sum())
        return float((X @ self.H.T).square().sum()) / total if total > 0 else 1.0

    def orthonormality_error(self) -> float:
        """``max |H Hᵀ − I|`` (0 for orthonormal rows)."""
        if self.size == 0:
            return 0.0
        eye = torch.eye(self.size, dtype=self.dtype)
        return float((self.H @ self.H.T - eye).abs().max())

    def lateral_residual(self, X: torch.Tensor, rows: int | None = None,
                         settle: int = 3) -> torch.Tensor:
        """What the first ``rows`` neurons (default all) leave of ``X`` [n, m] after their
        lateral inhibition settles: ``settle`` rounds of ``X ← X − (X Hᵀ) H`` (one round is
        exact for orthonormal rows; the repeats remove what imperfectly normalised rows
        leave, converging to the orthogonal complement while ``‖H‖ < √2``)."""
        H = self.H if rows is None else self.H[:rows]
        if H.shape[0] == 0:
            return X
        for _ in range(settle):
            X = X - (X @ H.T) @ H
        return X

    def projection_basis(self, settle: int = 3) -> torch.Tensor:
        """``U`` [m, k] with ``G − G U Uᵀ`` = the settled lateral circuit applied to the rows
        of ``G``: ``G (I − HᵀH)^settle``.

        ``(I − HᵀH)^s = I − Hᵀ M H`` with ``M = Σ_{i=1..s} C(s, i) (−1)^{i+1} K^{i−1}``,
        ``K = H Hᵀ`` [k, k] (for ``s = 3``: ``M = 3I − 3K + K²``, positive definite for any
        ``K``); ``U = Hᵀ L`` with ``M = L Lᵀ`` (Cholesky of the small ``k × k`` matrix — an
        exact rewrite of the circuit, no decomposition of activations). For orthonormal rows
        ``U = Hᵀ``.
        """
        if settle not in (1, 3):
            raise ValueError(f"settle: expected 1 or 3, got {settle!r}")
        if self.size == 0:
            return self.H.T.clone()
        if settle == 1:
            return self.H.T.clone()
        K = self.H @ self.H.T
        eye = torch.eye(self.size, dtype=self.dtype)
        L = torch.linalg.cholesky(3 * eye - 3 * K + K @ K)
        return self.H.T @ L

    def hebbian_step(self, X: torch.Tensor, first: int, lr: float) -> None:
        """One Oja subspace-rule update of the neurons ``first:`` on the mini-batch ``X``
        [B, m]; rows ``:first`` are frozen and act through lateral inhibition only: the new
        neurons see :meth:`lateral_residual` of ``X``."""
        self._oja_step(self.lateral_residual(self._check(X), first), first, lr)

    def _oja_step(self, residual: torch.Tensor, first: int, lr: float) -> None:
        s = float(residual.square().sum(1).mean())
        if s <= 0:
            return
        new = self.H[first:]
        Y = residual @ new.T  # [B, k_new] outputs of the new subspace neurons
        delta = Y.T @ residual - (Y.T @ Y) @ new  # Hebbian − anti-Hebbian lateral term
        self.H[first:] += (lr / (s * residual.shape[0])) * delta

    def grow(self, X: torch.Tensor, *, threshold: float, chunk: int = 10, epochs: int = 30,
             lr: float = 0.5, batch_size: int = 32, max_neurons: int | None = None,
             generator: torch.Generator | None = None) -> HebbianReport:
        """Add neurons (``chunk`` at a time, each chunk trained for ``epochs`` passes over
        ``X`` [n, m] in shuffled mini-batches) until ``captured_energy(X) >= threshold``.

        Args:
            X: the new task's inputs to the layer.
            threshold: energy target in ``(0, 1]``.
            chunk: neurons added per growth step.
            epochs, lr, batch_size: Hebbian learning schedule (``lr`` is the normalised step
                ``η``, stable for ``η < 1``).
            max_neurons: cap on ``k`` (default ``m``).
            generator: for the initial weights and the batch order.
        """
        X = self._check(X)
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold: expected a float in (0, 1], got {threshold!r}")
        for name, v in (("chunk", chunk), ("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if not 0 < lr < 1:
            raise ValueError(f"lr: expected a normalised step in (0, 1), got {lr!r}")
        cap = self.dim if max_neurons is None else min(int(max_neurons), self.dim)
        g = generator or torch.Generator().manual_seed(0)
        start_size, before = self.size, self.captured_energy(X)
        captured, steps = before, 0
        while captured < threshold and self.size < cap:
            first, n_new = self.size, min(chunk, cap - self.size)
            residual = self.lateral_residual(X)  # frozen during the chunk: settle it once
            # imprint: each new neuron starts as a random mixture of the residual inputs (a
            # Hebbian step with random postsynaptic activity), passed through the lateral
            # inhibition of the neurons imprinted before it, so the chunk starts inside the
            # residual span with near-orthonormal rows
            mix = torch.randn(n_new, X.shape[0], generator=g, dtype=self.dtype)
            for i in range(n_new):
                row = self.lateral_residual((mix[i] @ residual)[None])
                norm = float(row.norm())
                if not norm > 1e-12 * float(residual.norm()):
                    break  # the residual is exhausted
                self.H = torch.cat([self.H, row / norm])
            if self.size == first:
                break
            for _ in range(epochs):
                order = torch.randperm(X.shape[0], generator=g)
                for lo in range(0, X.shape[0], batch_size):
                    self._oja_step(residual[order[lo:lo + batch_size]], first, lr)
                    steps += 1
            captured = self.captured_energy(X)
        return HebbianReport(added=self.size - start_size, size=self.size, before=before,
                             after=captured, steps=steps)


class HLOP(Strategy):
    """HLOP in the harness: Hebbian subspace neurons per protected layer, projection of every
    update on their orthogonal complement (see module doc).

    Args:
        threshold: energy target per protected layer (float or one per layer, same order as
            :class:`~subspace_continual.gpm.GPM`); default GPM's PMNIST thresholds when there
            are 3 protected layers, else 0.97.
        chunk, epochs, lr, batch_size: :meth:`HebbianSubspace.grow` schedule.
        num_samples: training examples per task whose layer inputs drive the Hebbian learning.
        mode: projection mode; ``"auto"`` = gradient for plain SGD, update otherwise.
        max_orthonormality_error: after a task's Hebbian learning, a layer whose neurons'
            ``max |H Hᵀ − I|`` exceeds this raises RuntimeError (the circuit would not be a
            projection; no silent failure).
    """

    name = "hlop"

    def __init__(self, threshold: float | Sequence[float] | None = None, *, chunk: int = 10,
                 epochs: int = 30, lr: float = 0.5, batch_size: int = 32,
                 num_samples: int = 300, mode: str = "auto",
                 max_orthonormality_error: float = 0.1):
        if mode not in ("auto", "gradient", "update"):
            raise ValueError(f"mode: expected 'auto', 'gradient' or 'update', got {mode!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
        self.threshold, self.chunk, self.epochs = threshold, chunk, epochs
        self.lr, self.batch_size, self.num_samples, self.mode = lr, batch_size, num_samples, mode
        self.max_orthonormality_error = float(max_orthonormality_error)
        self._handle: ProjectionHandle | None = None
        self.history: list[dict[str, Any]] = []

    def setup(self, model: MultiHeadMLP, scenario: Scenario, cfg: TrainConfig) -> None:
        super().setup(model, scenario, cfg)
        layers = model.trunk_layers() + ([] if model.multi_head else ["heads.0"])
        self.thresholds = protected_thresholds(self.threshold, layers)
        self.memory = SubspaceMemory(model, layers, threshold=1.0)  # projection only
        self.neurons = {n: HebbianSubspace(self.memory.dim(n)) for n in layers}
        self.history = []

    def before_task(self, task: Task, optimizer: torch.optim.Optimizer) -> None:
        if all(h.size == 0 for h in self.neurons.values()):
            return
        for n, h in self.neurons.items():  # ΔW ← ΔW (I − HᵀH)³, the settled lateral circuit
            self.memory.bases[n] = h.projection_basis().to(self.memory.dtype).contiguous()
        self._handle = self.memory.attach(optimizer, mode=projection_mode(self.mode, optimizer))

    @torch.no_grad()
    def after_task(self, model: nn.Module, task: Task) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        g = torch.Generator().manual_seed(self.cfg.seed * 1000 + 600 + task.task_id)
        idx = torch.randperm(len(task.y_train), generator=g)[: self.num_samples]
        inputs: dict[str, torch.Tensor] = {}
        hooks = []
        for name, module in self.memory.layers.items():
            def hook(mod: nn.Module, args: tuple, name: str = name) -> None:
                inputs[name] = layer_inputs(mod, args[0].detach(), self.memory.include_bias)
            hooks.append(module.register_forward_pre_hook(hook))
        was_training = model.training
        model.eval()
        try:
            model(task.x_train[idx], self.head(task.task_id))
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        record = {}
        for name, neurons in self.neurons.items():
            report = neurons.grow(inputs[name], threshold=self.thresholds[name], chunk=self.chunk,
                                  epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                  generator=g)
            error = neurons.orthonormality_error()
            if not error <= self.max_orthonormality_error:
                raise RuntimeError(
                    f"HLOP layer {name!r}, task {task.task_id}: the Hebbian neurons did not "
                    f"converge (max |H Hᵀ − I| = {error:.3g} > {self.max_orthonormality_error}); "
                    "use more epochs, a smaller lr or a smaller chunk")
            record[name] = {"added": report.added, "size": report.size,
                            "captured_before": round(report.before, 4),
                            "captured": round(report.after, 4),
                            "orthonormality_error": round(error, 5)}
        self.history.append(record)

    def info(self) -> dict[str, Any]:
        return {"neurons": {n: h.size for n, h in self.neurons.items()}, "history": self.history}

    def state_dict(self) -> dict[str, Any]:
        return {**{f"H.{n}": h.H for n, h in self.neurons.items()}, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for n, h in self.neurons.items():
            h.H = state[f"H.{n}"].to(h.dtype).clone()
        self.history = list(state.get("history", []))
