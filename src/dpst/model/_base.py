"""What DPVAE and DPSCVI share: construction, fitting, latent codes, reconstruction, results."""

from __future__ import annotations

import os
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch

from dpst._checks import check_in_memory, check_int
from dpst.graph import SpatialGraph, pair_lengths, spatial_graph
from dpst.module import X_KEY, DistortionPenalty, VAEModule
from dpst.pp import read_penalty_graph, stored_values
from dpst.pp._coordinates import micrometre_coordinates
from dpst.train import PenaltySettings, TileWidth, TrainingSettings, train_module

from . import _query
from ._files import load_model, save_model
from ._registry import DataRegistry

DEFAULT_ALPHA = 100.0

# The constructor's parameters, documented once and placed into the docstrings of
# DPVAE and DPSCVI (where Sphinx autodoc and help() show them).
_PARAMETERS_DOC = """
    Parameters
    ----------
    adata
        Spots x genes, with spot coordinates in ``obsm[spatial_key]``. The model
        keeps a reference to it (no copy).
    layer
        Where the model input is: a key of ``adata.layers``, None for ``adata.X``,
        or ``"default"`` for the class's default (%(default_input)s).
    spatial_key
        Key of the spot coordinates in ``adata.obsm``.
    library_key
        Column of ``adata.obs`` naming each spot's library (tissue section), for
        several sections in one AnnData: G is built within each section, distances
        are measured within a section and minibatch tiles are drawn within sections.
        None: ``batch_key``'s column if given, else one section.
    batch_key
        Column of ``adata.obs`` naming each spot's batch (scvi-tools' meaning): its
        one-hot enters the encoder and the decoder, so the latent need not encode
        what differs between batches. None: no batch covariate.
    coordinate_unit
        ``"auto"``, ``"pixel"`` or ``"um"``: how ``obsm[spatial_key]`` becomes
        micrometres (see :func:`dpst.pp.spatial_coordinates`).
    n_latent
        Dimension of the latent space.
    n_hidden
        Units per hidden layer of the encoder and the decoder.
    n_layers
        Hidden layers of the encoder and of the decoder.
    dropout_rate
        Dropout of the encoder's hidden layers (the decoder has none).
    alpha
        Weight of the distortion penalty; 0 trains the plain backbone.
    graph
        Kind of the penalty's pair graph G: ``"knn"``, ``"radius"``,
        ``"gaussian"`` or ``"all"`` (see :func:`dpst.graph.spatial_graph`).
        Ignored with ``graph_key``.
    n_neighbors
        k of the ``knn`` graph (18: the first three rings of the Visium grid).
        Ignored with ``graph_key``.
    radius
        Radius of the ``radius`` graph, in micrometres. Ignored with ``graph_key``.
    sigma
        Width of the ``gaussian`` graph's weights, in micrometres. Ignored with ``graph_key``.
    graph_key
        Key under which :func:`dpst.pp.penalty_graph` stored G in ``adata``
        (``"dpst_penalty"`` by default there); the model then uses that graph and
        ignores ``graph``, ``n_neighbors``, ``radius`` and ``sigma``, recording the
        stored graph's kind and parameters in ``init_params`` instead. None
        (default): the model builds G itself from those four arguments, the same
        graph to the bit as :func:`dpst.pp.penalty_graph` with the same settings.
    normalization
        ``"pairs"`` divides the penalty by the sum of G's weights, ``"n2"`` by
        ``N^2 / 2`` (the study's ``1 / N^2`` over ordered pairs).
    penalty_latent
        Latent codes the penalty measures: ``"sample"`` (the sampled z) or
        ``"mean"`` (the posterior mean).
    lam
        Scale between latent and spatial distances. None: set at the first step
        to the median ratio ``d_z / d_s`` of the pairs.
    learn_lam
        Learn lam with the network; False keeps it fixed (then ``lam`` is required).
    lam_per_library
        False (default): one lam for every section, the natural choice when all
        are measured the same way (the latent distance per micrometre is then a
        property of the tissue). True: one lam per library of ``library_key``,
        each set from its own pairs and learned from them (sections whose
        geometry or depth differ); :attr:`lam` is then their geometric mean and
        :attr:`lam_by_library` gives each.
    penalty_warmup_epochs
        Epochs trained without the penalty before it is switched on.
    neighborhood
        What the model reads of each spot's neighbourhood, the mean input of its
        neighbours in the neighbourhood graph (the Visium hexagon's 6, 4 on a
        square lattice, the 6 nearest cells; within its section), as BANKSY reads
        neighbourhood expression. ``"none"`` (default): the spot alone.
        ``"encoder"``: the encoder reads it beside the spot's own input; the
        decoder reconstructs the spot alone. ``"reconstructed"``: the encoder reads
        it and the decoder reconstructs it too, so the latent describes the spot
        and its neighbourhood.
    seed
        Seed of the weights' initialization and, unless :meth:`train` is given
        another, of training. A fixed seed gives identical results on CPU.
    **module_kwargs
        Further arguments of the torch module%(module_kwargs)s.

    Raises
    ------
    KeyError
        ``spatial_key``, ``layer`` or ``graph_key`` is missing from ``adata``.
    ValueError
        Bad settings or input (one line naming the parameter), or a stored graph
        whose size or distances do not match ``adata``.
"""


def _with_parameters(default_input: str, module_kwargs: str):
    """Put the constructor's parameters into a model class's docstring."""

    def document(cls):
        cls.__doc__ = cls.__doc__.replace(
            "%(parameters)s",
            _PARAMETERS_DOC.strip()
            % {
                "default_input": default_input,
                "module_kwargs": module_kwargs,
            },
        )
        return cls

    return document


class _DPModel:
    """What DPVAE and DPSCVI share; subclasses set the module and the input.

    The constructor's parameters are documented on :class:`DPVAE` and :class:`DPSCVI`.
    """

    module_class: type[VAEModule]
    default_layer: str | None = None

    def __init__(
        self,
        adata: ad.AnnData,
        *,
        layer: str | None = "default",
        spatial_key: str = "spatial",
        library_key: str | None = None,
        batch_key: str | None = None,
        coordinate_unit: Literal["auto", "pixel", "um"] = "auto",
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        alpha: float = DEFAULT_ALPHA,
        graph: Literal["knn", "radius", "gaussian", "all"] = "knn",
        n_neighbors: int = 18,
        radius: float = 250.0,
        sigma: float = 100.0,
        graph_key: str | None = None,
        normalization: Literal["pairs", "n2"] = "pairs",
        penalty_latent: Literal["sample", "mean"] = "sample",
        lam: float | None = None,
        learn_lam: bool = True,
        lam_per_library: bool = False,
        penalty_warmup_epochs: int = 0,
        neighborhood: Literal["none", "encoder", "reconstructed"] = "none",
        seed: int = 0,
        _registry: DataRegistry | None = None,
        **module_kwargs,
    ):
        # _registry: the saved registry of a loaded model (its batches, in its order), not a setting
        self.init_params = {k: v for k, v in locals().items() if k not in ("self", "adata", "__class__", "_registry")}
        self.init_params.update(self.init_params.pop("module_kwargs"))
        self.adata = adata
        # the penalty stays within sections: batches are sections unless told otherwise
        library_key = batch_key if library_key is None else library_key
        self.spatial_key, self.library_key, self.coordinate_unit = spatial_key, library_key, coordinate_unit
        self.penalty_settings = PenaltySettings(alpha, normalization, penalty_latent, penalty_warmup_epochs)
        seed = check_int("seed", seed)
        check_in_memory(adata, type(self).__name__)
        if adata.n_obs < 2:
            raise ValueError(f"adata has {adata.n_obs} spot(s); the model needs at least 2")
        if adata.n_vars == 0:
            raise ValueError("adata has 0 genes (n_vars == 0); the model needs at least one")
        self.registry = _registry or DataRegistry.register(
            adata,
            self.default_layer if layer == "default" else layer,
            batch_key,
            neighborhood=neighborhood,
            spatial_key=spatial_key,
            coordinate_unit=coordinate_unit,
            library_key=library_key,
        )
        self.registry.batch_codes(adata)  # a loaded model refuses batches it does not know
        self._check_input(stored_values(self.registry.matrix(adata)))
        # the micrometres of each library; non-finite or non-planar coordinates are refused there
        self.coords, _record, self.libraries = micrometre_coordinates(adata, spatial_key, coordinate_unit, library_key)
        if graph_key is None:
            self.graph: SpatialGraph = spatial_graph(
                self.coords,
                graph,
                n_neighbors=n_neighbors,
                radius=radius,
                sigma=sigma,
                groups=self.libraries.groups(),
                group_names=self.libraries.names,
            )
        else:
            self.graph = self._stored_graph(adata, graph_key)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = self.module_class(
                adata.n_vars,
                n_latent=n_latent,
                n_hidden=n_hidden,
                n_layers=n_layers,
                dropout_rate=dropout_rate,
                n_batch=self.registry.n_batch,
                neighborhood=self.registry.neighborhood,
                **module_kwargs,
            )
        if not isinstance(lam_per_library, bool):
            raise ValueError(f"lam_per_library must be True or False, got {lam_per_library!r}")
        if lam_per_library and self.graph.is_complete:
            raise ValueError("lam_per_library=True needs a sparse graph G; graph='all' pairs every spot")
        n_groups = len(self.libraries.names) if lam_per_library else None
        self.penalty = DistortionPenalty(lam=lam, learn_lam=learn_lam, n_groups=n_groups)
        self.seed = seed
        self.history: pd.DataFrame | None = None
        self.train_indices: np.ndarray | None = None
        self.validation_indices: np.ndarray | None = None
        self.is_trained = False
        self.frozen_reference = False  # set by load_query_data: train only the query's weights

    # ----------------------------------------------------------------- data
    def _stored_graph(self, adata: ad.AnnData, graph_key: str) -> SpatialGraph:
        """G from :func:`dpst.pp.penalty_graph`'s ``graph_key``, checked against the model's coordinates."""
        stored = read_penalty_graph(adata, graph_key)
        # a graph built on other coordinates (another spatial_key or unit) would pair the
        # penalty's latent distances with distances of another geometry
        own = pair_lengths(self.coords, stored.edges)
        if not np.allclose(own, stored.distances, rtol=1e-9, atol=0):
            raise ValueError(
                f"graph {graph_key!r}: its distances are not those of the model's coordinates "
                f"(obsm[{self.spatial_key!r}] in micrometres); build it with dpst.pp.penalty_graph(adata, "
                f"spatial_key={self.spatial_key!r}, coordinate_unit={self.coordinate_unit!r})"
            )
        codes = self.libraries.codes
        crossing = codes[stored.edges[:, 0]] != codes[stored.edges[:, 1]]
        if crossing.any():
            raise ValueError(
                f"graph {graph_key!r}: {crossing.sum()} of its pairs join two libraries of "
                f"adata.obs[{self.library_key!r}]; build it with dpst.pp.penalty_graph(adata, "
                f"library_key={self.library_key!r})"
            )
        # the record says which graph was used, not the construction defaults it ignored
        self.init_params.update(graph=stored.kind, **stored.params)
        return stored

    def _spot_data(self, adata: ad.AnnData):
        """What the module reads of ``adata``.

        The neighbourhood mean of the model's own input (a graph and a product over
        every spot) is built once, and again only when that input is replaced.
        """
        if adata is not self.adata or self.registry.neighborhood == "none":
            return self.registry.spot_data(adata)
        matrix = self.registry.matrix(adata)
        cached = getattr(self, "_own_data", None)
        if cached is None or cached.x is not matrix:
            self._own_data = cached = self.registry.spot_data(adata)
        return cached

    def _check_input(self, values: np.ndarray) -> None:
        if not np.isfinite(values).all():
            raise ValueError(f"adata: the model input ({self._input_name}) has NaN or infinite values")
        if not values.any():
            raise ValueError(f"adata: the model input ({self._input_name}) is all zeros")

    @property
    def _input_name(self) -> str:
        return self.registry.input_name

    @property
    def layer(self) -> str | None:
        """Where the model input is: a key of ``adata.layers``, or None for ``adata.X``."""
        return self.registry.layer

    def _require_trained(self, method: str) -> None:
        # an untrained encoder returns random codes that look like results
        if not self.is_trained:
            raise RuntimeError(f"{type(self).__name__}.{method}: the model is not trained; call train() first")

    def _validate_adata(self, adata: ad.AnnData | None) -> ad.AnnData:
        if adata is None:
            return self.adata
        if list(adata.var_names) != list(self.adata.var_names):
            raise ValueError("adata's genes (var_names) differ from those the model was built on")
        return adata

    # ------------------------------------------------------------- training
    def train(
        self,
        max_epochs: int = TrainingSettings.max_epochs,
        lr: float = TrainingSettings.lr,
        batch_size: int | None = TrainingSettings.batch_size,
        kl_warmup_epochs: int = TrainingSettings.kl_warmup_epochs,
        validation_fraction: float = TrainingSettings.validation_fraction,
        early_stopping: bool = TrainingSettings.early_stopping,
        patience: int = TrainingSettings.patience,
        device: str = TrainingSettings.device,
        progress_bar: bool = TrainingSettings.progress_bar,
        seed: int | None = None,
        tiles: TileWidth = TrainingSettings.tiles,
        **optimizer_kwargs,
    ) -> _DPModel:
        """Train full batch (``batch_size=None``, one step per epoch) or in minibatches.

        ``validation_fraction`` of the spots (seeded) are held out of training:
        they are the held-out set of the reconstruction metrics and, with
        ``early_stopping``, the set whose negative ELBO is monitored.

        Parameters
        ----------
        max_epochs
            Epochs to train (fewer with ``early_stopping``).
        lr
            Adam's learning rate.
        batch_size
            None: full batch. Otherwise about this many spots per minibatch; with the
            penalty the batches are spatially tiled so they keep G's pairs (unbiased).
        kl_warmup_epochs
            Epochs over which the KL weight rises linearly from 0 to 1.
        validation_fraction
            Share of the spots held out of training.
        early_stopping
            Stop when the held-out negative ELBO has not improved for ``patience``
            epochs, and restore the best epoch's weights.
        patience
            Epochs without improvement before stopping.
        device
            ``"auto"`` (a GPU when torch sees one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        progress_bar
            Show progress: a tqdm bar on a terminal; written to a file (a job's log),
            a plain line every tenth of the epochs.
        seed
            Seed of the split and of training; None: the model's ``seed``.
        tiles
            With ``batch_size`` and the penalty, how wide the spatial tiles are.
            ``"wide"``: twice the 99th percentile of the pairs' larger axis extent
            (on Visium about 600 um; a batch of 128 is a few patches of tissue).
            ``"narrow"``: the narrowest side that leaves at most 8% of the pairs to
            their first spot's batch (on Visium about 290 um, a dozen patches a
            batch, so BatchNorm sees statistics nearer the tissue's; a penalised
            step costs more on dense grids). Which is better depends on the
            backbone: Method page, "The size of the tiles".
        **optimizer_kwargs
            ``weight_decay`` and ``adam_eps`` of Adam (scvi-tools' defaults).

        Returns
        -------
        DPVAE or DPSCVI
            The model itself, trained; ``history`` holds the per-epoch losses.

        Raises
        ------
        dpst.TrainingDivergedError
            The loss became NaN or infinite.
        """
        if self.frozen_reference:  # weight decay would shrink the frozen reference weights
            optimizer_kwargs.setdefault("weight_decay", 0.0)
        settings = TrainingSettings(
            max_epochs=max_epochs,
            lr=lr,
            batch_size=batch_size,
            kl_warmup_epochs=kl_warmup_epochs,
            validation_fraction=validation_fraction,
            early_stopping=early_stopping,
            patience=patience,
            seed=self.seed if seed is None else seed,
            device=device,
            progress_bar=progress_bar,
            tiles=tiles,
            **optimizer_kwargs,
        )
        self.history, self.train_indices, self.validation_indices = train_module(
            self.module,
            self.penalty,
            self._spot_data(self.adata),
            self.coords,
            self.graph,
            self.penalty_settings,
            settings,
            libraries=self.libraries.groups(),
        )
        self.is_trained = True
        return self

    # ------------------------------------------------------------ inference
    @torch.no_grad()
    def _decode_batches(self, adata, batch_size: int, fn) -> np.ndarray:
        self.module.eval()
        device = next(self.module.parameters()).device
        data = self._spot_data(adata)
        out = [fn(data.rows(slice(i, i + batch_size), device)) for i in range(0, adata.n_obs, batch_size)]
        return torch.cat(out).cpu().numpy()

    def get_latent_representation(
        self, adata: ad.AnnData | None = None, give_mean: bool = True, batch_size: int = 4096
    ) -> np.ndarray:
        """Latent codes (posterior means, or samples with ``give_mean=False``) of a trained model.

        Parameters
        ----------
        adata
            Spots to encode, with the model's genes; default: the model's AnnData.
        give_mean
            Posterior means (True) or one sample per spot.
        batch_size
            Spots encoded at a time.

        Returns
        -------
        numpy.ndarray
            ``(n_obs, n_latent)`` float32 codes.
        """
        self._require_trained("get_latent_representation")
        adata = self._validate_adata(adata)
        key = "qz_mean" if give_mean else "z"
        return self._decode_batches(adata, batch_size, lambda tensors: self.module.inference(tensors)[key])

    def get_reconstruction(self, adata: ad.AnnData | None = None, batch_size: int = 4096) -> np.ndarray:
        """Reconstruction in log-normalized space, decoded from the posterior mean.

        VAE: the decoder mean. scVI: ``log1p(1e4 * scale)``. The model must be trained.

        Parameters
        ----------
        adata
            Spots to reconstruct, with the model's genes; default: the model's AnnData.
        batch_size
            Spots decoded at a time.

        Returns
        -------
        numpy.ndarray
            ``(n_obs, n_vars)`` float32 reconstruction, comparable with
            :meth:`get_observed_log_normalized`.
        """
        self._require_trained("get_reconstruction")
        adata = self._validate_adata(adata)

        def reconstruct(tensors):
            _inf, gen = self.module(tensors, use_mean=True)
            return self.module.log_normalized(gen)

        return self._decode_batches(adata, batch_size, reconstruct)

    def get_reconstruction_error(self, adata: ad.AnnData | None = None, indices=None, batch_size: int = 4096) -> float:
        """Mean per-spot ``-log p(x | z)`` with z one posterior sample (scvi-tools' definition).

        Unlike the other outputs it works untrained (as in scvi-tools): the baseline a fit must beat.

        Parameters
        ----------
        adata
            Spots with the model's genes; default: the model's AnnData.
        indices
            Positions of the spots to average over; default: all.
        batch_size
            Spots evaluated at a time.

        Returns
        -------
        float
            The mean negative log-likelihood per spot.
        """
        adata = self._validate_adata(adata)
        if indices is not None:
            adata = adata[np.asarray(indices)]

        def nll(tensors):
            _inf, gen = self.module(tensors)
            return -self.module.log_likelihood(tensors[X_KEY], gen).sum(-1)

        return float(self._decode_batches(adata, batch_size, nll).mean())

    @torch.no_grad()
    def squared_errors(self, adata: ad.AnnData | None = None, batch_size: int = 4096) -> np.ndarray:
        """Per spot, the sum over genes of (observed - reconstructed)², a batch of spots at a time.

        What :func:`dpst.metrics.reconstruction_mse` averages, without holding the
        dense spots x genes matrices (at 10⁵-10⁶ spots they would take gigabytes).

        Parameters
        ----------
        adata
            Spots with the model's genes; default: the model's AnnData.
        batch_size
            Spots decoded at a time.

        Returns
        -------
        numpy.ndarray
            ``(n_obs,)`` float64 sums, :meth:`get_observed_log_normalized` against
            :meth:`get_reconstruction`.
        """
        self._require_trained("squared_errors")
        adata = self._validate_adata(adata)
        self.module.eval()
        device = next(self.module.parameters()).device
        data, matrix = self._spot_data(adata), self.registry.matrix(adata)
        sums = np.empty(adata.n_obs)
        for start in range(0, adata.n_obs, batch_size):
            rows = slice(start, start + batch_size)
            _inf, gen = self.module(data.rows(rows, device), use_mean=True)
            reconstructed = self.module.log_normalized(gen).cpu().numpy()
            observed = self._log_normalized(matrix[rows]).astype(np.float64)
            sums[rows] = ((observed - reconstructed) ** 2).sum(axis=1)
        return sums

    @staticmethod
    def _log_normalized(x) -> np.ndarray:
        """Rows of the registered matrix as :meth:`get_observed_log_normalized` gives them."""
        raise NotImplementedError

    def get_observed_log_normalized(self, adata: ad.AnnData | None = None) -> np.ndarray:
        """The observed counterpart of :meth:`get_reconstruction`.

        Parameters
        ----------
        adata
            Spots with the model's genes; default: the model's AnnData.

        Returns
        -------
        numpy.ndarray
            ``(n_obs, n_vars)`` float32 log-normalized expression.
        """
        raise NotImplementedError

    @property
    def lam(self) -> float:
        """The penalty's current scale lam, latent units per micrometre; NaN at ``alpha = 0`` (never fitted).

        With ``lam_per_library`` the geometric mean of the libraries' (each in :attr:`lam_by_library`).
        """
        return self.penalty.lam if self.penalty_settings.alpha > 0 else float("nan")

    @property
    def lam_by_library(self) -> pd.Series:
        """Each library's lam (the shared one repeated without ``lam_per_library``), NaN at ``alpha = 0``."""
        names = list(self.libraries.names)
        if self.penalty_settings.alpha == 0:
            values = np.full(len(names), np.nan)
        else:
            values = self.penalty.lams if self.penalty.n_groups is not None else np.full(len(names), self.lam)
        return pd.Series(values, index=pd.Index(names, name=self.library_key or "library"), name="lam")

    @classmethod
    def default_key(cls) -> str:
        """The ``obsm``/``uns`` key :meth:`write_results` writes by default.

        Returns
        -------
        str
            ``"X_dpvae"`` or ``"X_dpscvi"``.
        """
        return f"X_{cls.__name__.lower()}"

    def write_results(self, adata: ad.AnnData | None = None, key_added: str | None = None) -> str:
        """Write the latent means to ``obsm[key_added]`` and the fit to ``uns[key_added]``.

        Parameters
        ----------
        adata
            Where to write, with the model's genes (its spots are encoded);
            default: the model's AnnData.
        key_added
            Key in ``obsm`` and ``uns``; default ``"X_dpvae"`` or ``"X_dpscvi"``.

        Returns
        -------
        str
            The key written. ``uns[key]`` holds ``model`` (the class name),
            ``params`` (the constructor's settings that are not None), ``lam``,
            ``lam_by_library`` (with ``lam_per_library``) and ``graph`` (kind,
            pairs and parameters of G).

        Examples
        --------
        >>> key = model.write_results()  # doctest: +SKIP
        >>> dpst.tl.distortion(adata, key)  # doctest: +SKIP
        """
        self._require_trained("write_results")
        adata = self._validate_adata(adata)
        key = key_added or self.default_key()
        adata.obsm[key] = self.get_latent_representation(adata)
        adata.uns[key] = {
            "model": type(self).__name__,
            "params": {k: v for k, v in self.init_params.items() if v is not None},
            "lam": self.lam,
            **({"lam_by_library": self.lam_by_library.to_dict()} if self.penalty.n_groups is not None else {}),
            "graph": {"kind": self.graph.kind, "n_edges": self.graph.n_edges, **self.graph.params},
        }
        return key

    # ------------------------------------------------------------ query mapping
    @classmethod
    def load_query_data(
        cls,
        adata: ad.AnnData,
        reference,
        *,
        freeze: bool = True,
        zero_fill_missing_genes: bool = False,
        seed: int | None = None,
    ) -> _DPModel:
        """A model for new sections ``adata``, grown from a trained reference (scArches-style surgery).

        The query's batches (``adata.obs[batch_key]``, the reference's
        ``batch_key``; none of them in the reference) get new one-hot columns
        in the first layer of the encoder and of the decoder; all other weights
        are the reference's. With ``freeze`` only the new columns (and, with
        ``dispersion="gene-batch"``, the new dispersion rows) are trained, without
        weight decay, and the encoder's batch-normalization statistics stay the
        reference's, so the query lands in the reference's latent space. The
        penalty's graph G is built on the query's own coordinates, with the
        reference's settings, section by section; lam is fitted anew. Train the
        result with :meth:`train`; save and load it like any model.

        Parameters
        ----------
        adata
            The query: the reference's genes (any order, extra genes ignored), its
            ``layer``, coordinates and ``batch_key`` column.
        reference
            A trained model with ``batch_key``, or the folder it was saved in.
        freeze
            Train only what the query adds (True) or fine-tune every weight.
        zero_fill_missing_genes
            Map a query that lacks some of the reference's genes with those genes
            at zero; by default such a query is refused.
        seed
            Seed of the new columns' initialization and of training; None: the
            reference's.

        Returns
        -------
        DPVAE or DPSCVI
            The query model, untrained. Its ``adata`` is ``adata`` itself when the
            genes match the reference's exactly, else a copy on those genes.

        Raises
        ------
        ValueError
            The reference has no ``batch_key``, a query batch is in the reference,
            genes are missing, or the reference is untrained (one line each).
        FileNotFoundError
            ``reference`` is a path that holds no saved model.
        """
        params, reference_registry, genes, weights = _query.reference_state(cls, reference)
        registry = _query.query_registry(adata, reference_registry)
        mapped = _query.query_genes(adata, genes, registry.layer, zero_fill_missing_genes)
        params = {key: value for key, value in params.items() if key != "graph_key"}  # G is the query's own
        if seed is not None:
            params["seed"] = seed
        model = cls(mapped, **params, _registry=registry)
        n_reference = reference_registry.n_batch
        with torch.no_grad():
            _query.transplant(model.module, weights)
        if freeze:
            _query.freeze_reference(model.module, n_reference)
            model.frozen_reference = True
        return model

    # ------------------------------------------------------------ save/load
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Save weights, settings, spot names and training history into the folder ``path``.

        ``model.pt`` holds tensors only (loaded with ``weights_only=True``), ``model.json``
        the settings and names, ``history.csv`` the per-epoch history.

        Parameters
        ----------
        path
            The folder to write (written aside and renamed into place).
        overwrite
            Replace an existing ``path``.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is False.
        """
        save_model(self, path, overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, adata: ad.AnnData, device: str = "auto") -> _DPModel:
        """Load a model saved by :meth:`save` onto ``adata``: the same genes and the same spots.

        Spots may come in another order (the held-out set follows them by name).
        A model built on a stored graph (``graph_key``) needs that graph in ``adata``.

        Parameters
        ----------
        path
            A folder written by :meth:`save`.
        adata
            The same genes (in order) and the same spots (any order).
        device
            Where to put the weights: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

        Returns
        -------
        DPVAE or DPSCVI
            The loaded model.

        Raises
        ------
        FileNotFoundError
            ``path`` is not a saved model.
        ModelFileError
            A corrupt, truncated or unsafe file.
        TypeError
            ``path`` holds the other model class.
        ValueError
            ``adata``'s genes or spots differ from the saved ones.
        """
        return load_model(cls, path, adata, device)

    def __repr__(self) -> str:
        p = self.penalty_settings
        return (
            f"{type(self).__name__}(n_obs={self.adata.n_obs}, n_vars={self.adata.n_vars}, "
            f"alpha={p.alpha}, graph={self.graph.kind!r} with {self.graph.n_edges} pairs, "
            f"trained={self.is_trained})"
        )
