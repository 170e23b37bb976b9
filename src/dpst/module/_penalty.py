"""The distortion penalty: weighted L1 gap between latent and scaled spatial distances."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dpst._checks import check_real


def pair_distances(x: torch.Tensor, edges: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances of pairs of rows.

    Parameters
    ----------
    x
        ``(n, d)`` points (latent codes or coordinates).
    edges
        ``(E, 2)`` row indices of the pairs; None for every pair.

    Returns
    -------
    torch.Tensor
        ``(E,)`` distances, or with ``edges=None`` the ``n (n - 1) / 2``
        distances of all pairs in ``torch.pdist`` order (row-major upper
        triangle).
    """
    if edges is None:
        return F.pdist(x)
    # index_select, not x[edges[:, 0]]: the backward of advanced indexing accumulates in a
    # thread-dependent order on the CPU (runs did not repeat with 2 threads); index_select's
    # index_add is deterministic, and with one thread gives the same bits
    first, second = torch.index_select(x, 0, edges[:, 0]), torch.index_select(x, 0, edges[:, 1])
    return torch.linalg.vector_norm(first - second, dim=-1)


class DistortionPenalty(nn.Module):
    """The distortion penalty, ``sum_e w_e abs(d_z(e) - lam * d_s(e)) / denominator``.

    The sum runs over the pairs e of the graph G. ``lam = exp(log_lam)``
    stays positive. It is learned unless ``learn_lam`` is False; unless a
    value is given it is set from the data by :meth:`initialize_lam` (median
    of d_z / d_s over the pairs) when the penalty switches on. The module sees
    distances only, so it works with any backbone.

    Parameters
    ----------
    lam
        Starting (or, with ``learn_lam=False``, fixed) scale; None to set it
        from the data.
    learn_lam
        Learn lam jointly with the network.
    n_groups
        None (the default) for one lam shared by every pair; a number for one
        lam per group of pairs (per section: :meth:`forward` and
        :meth:`initialize_lam` then take each pair's group). Each group's lam
        is set from its own pairs, the first time they are seen.

    Raises
    ------
    ValueError
        When ``lam`` is not a positive finite number, or ``learn_lam`` is False
        without a ``lam``.

    Examples
    --------
    >>> import torch
    >>> penalty = dpst.module.DistortionPenalty(lam=2.0, learn_lam=False)
    >>> dz, ds = torch.tensor([2.0, 5.0]), torch.tensor([1.0, 2.0])
    >>> penalty(dz, ds, weights=None, denominator=2.0)  # (|2 - 2| + |5 - 4|) / 2
    tensor(0.5000)
    """

    def __init__(self, lam: float | None = None, learn_lam: bool = True, n_groups: int | None = None):
        super().__init__()
        if lam is not None:
            lam = check_real("lam", lam, above=0)
        if lam is None and not learn_lam:
            raise ValueError("a fixed lam (learn_lam=False) needs a value for lam")
        if n_groups is not None and (isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1):
            raise ValueError(f"n_groups must be None or a positive integer, got {n_groups!r}")
        self.n_groups = n_groups
        shape = () if n_groups is None else (n_groups,)
        init = torch.log(torch.full(shape, lam if lam is not None else 1.0, dtype=torch.float32))
        self.log_lam = nn.Parameter(init, requires_grad=learn_lam)
        self.register_buffer("initialized", torch.full(shape, lam is not None))
        # the buffer's value known on the host: reading the buffer at every step would wait for a GPU
        self._known_initialized = lam is not None

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False  # read the loaded buffer at the next initialize_lam

    @property
    def lam(self) -> float:
        """The current scale, ``exp(log_lam)``; with groups, their geometric mean."""
        return float(self.lam_tensor())

    @property
    def lams(self) -> np.ndarray:
        """Each group's current scale (one value without groups)."""
        return torch.exp(self.log_lam.detach()).cpu().numpy().reshape(-1).astype(np.float64)

    def lam_tensor(self) -> torch.Tensor:
        """The current scale (with groups, their geometric mean) on the penalty's device.

        A new scalar tensor: kept on the device, it waits for nothing.
        """
        log_lam = self.log_lam.detach()
        return torch.exp(log_lam if self.n_groups is None else log_lam.mean())

    @torch.no_grad()
    def initialize_lam(self, dz: torch.Tensor, ds: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        """Set lam to the median ratio d_z / d_s, unless it was given or already set.

        Pairs whose ratio is not positive and finite are left out. Called with
        no pairs (a minibatch without edges) it waits for the next call; when
        no pair has a usable ratio it keeps lam with a warning. With groups,
        each group not yet set is set from its own pairs among these.

        Parameters
        ----------
        dz, ds
            Latent and spatial distances of the same pairs.
        groups
            ``(E,)`` each pair's group, with ``n_groups``; None without.
        """
        if self._known_initialized or len(dz) == 0:  # a minibatch without pairs: try the next one
            return
        if self.n_groups is not None:
            self._initialize_groups(dz, ds, groups)
            return
        if bool(self.initialized):
            self._known_initialized = True
            return
        ratio = dz / ds
        ratio = ratio[torch.isfinite(ratio) & (ratio > 0)]
        if len(ratio):
            self.log_lam.copy_(torch.log(ratio.median()))
        else:
            warnings.warn(
                f"lam starts at {self.lam:g}: none of the {len(dz)} pairs has a positive, finite "
                "d_z / d_s (the latent codes coincide)",
                UserWarning,
                stacklevel=2,
            )
        self.initialized.fill_(True)  # type: ignore[operator]  # a registered buffer (a Tensor)
        self._known_initialized = True

    def _initialize_groups(self, dz: torch.Tensor, ds: torch.Tensor, groups: torch.Tensor | None) -> None:
        if groups is None:
            raise ValueError(f"this penalty has {self.n_groups} lam groups: pass each pair's group")
        initialized = self.get_buffer("initialized")
        ratio = dz / ds
        usable = torch.isfinite(ratio) & (ratio > 0)
        for group in np.flatnonzero(~initialized.cpu().numpy()):
            mine = groups == int(group)
            if not bool(mine.any()):
                continue  # not in these pairs: wait for a batch that has them
            values = ratio[mine & usable]
            if len(values):
                self.log_lam[group] = torch.log(values.median())
            else:
                warnings.warn(
                    f"lam of group {group} starts at {float(torch.exp(self.log_lam[group])):g}: none of its "
                    f"{int(mine.sum())} pairs has a positive, finite d_z / d_s (the latent codes coincide)",
                    UserWarning,
                    stacklevel=3,
                )
            initialized[group] = True
        self._known_initialized = bool(initialized.all())

    def forward(
        self,
        dz: torch.Tensor,
        ds: torch.Tensor,
        weights: torch.Tensor | None,
        denominator: float,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The penalty of a set of pairs.

        Parameters
        ----------
        dz, ds
            ``(E,)`` latent and spatial distances of the same pairs.
        weights
            ``(E,)`` pair weights, which may fold in a sampling correction
            (minibatches); None means 1.
        denominator
            Normalizer of the weighted sum, for example
            :meth:`dpst.graph.SpatialGraph.denominator`.
        groups
            ``(E,)`` each pair's group (its lam), with ``n_groups``; None without.

        Returns
        -------
        torch.Tensor
            The penalty, a scalar that carries gradients to ``dz`` and ``log_lam``.
        """
        if self.n_groups is None:
            scale = torch.exp(self.log_lam)
        elif groups is None:
            raise ValueError(f"this penalty has {self.n_groups} lam groups: pass each pair's group")
        else:
            scale = torch.exp(self.log_lam)[groups]
        gap = torch.abs(dz - scale * ds)
        total = gap.sum() if weights is None else (weights * gap).sum()
        return total / denominator
