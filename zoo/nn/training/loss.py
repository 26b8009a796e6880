"""The training loss, per irreps block (zoo.nn.training's docstring: 'Loss, per irreps block')."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from zoo import properties
from zoo.nn import model_config
from zoo.nn.model_config import ModelConfig

# mse_mean_frequency: the weight of the squared relative mean-frequency error beside the DOS MSE, chosen on the
# validation split with benchmarks/ablation.py phonon (the figures are in params.yaml beside the release's phonon line)
MEAN_FREQUENCY_WEIGHT = 0.2


def block_weights(config: ModelConfig, irrep_weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """The weight of each irreps block (block_index) in the loss: irrep_weights[irrep] (TrainSettings.
    loss_irrep_weights; 1 for an irrep not named), scaled to a mean of 1 over the blocks so that the loss keeps
    its size."""
    irrep_weights = dict(irrep_weights or {})
    irreps = model_config.output_irreps(config)
    if not properties.get(config.property).is_tensor:
        if not irrep_weights:
            return torch.ones(irreps.dim, dtype=torch.float64)  # the DOS: each bin its own block
        raise ValueError(f"loss_irrep_weights weighs the irreps blocks of a tensor; {config.property} predicts "
                         "a DOS")
    present = {str(ir) for _, ir in irreps}
    unknown = sorted(set(irrep_weights) - present)
    if unknown:
        raise ValueError(f"loss_irrep_weights names {unknown}, which {config.property}'s output irreps "
                         f"{irreps} do not hold")
    weights = torch.tensor([float(irrep_weights.get(str(ir), 1.0)) for mul, ir in irreps for _ in range(mul)],
                           dtype=torch.float64)
    return weights / weights.mean()


def loss_weights(config: ModelConfig, block_scales: Sequence[float] | None = None,
                 kind: str = "mse") -> torch.Tensor:
    """Per-component weights w with loss = sum_c w_c (pred_c - y_c)^2 averaged over structures (module docstring):
    1 / (n_blocks dim_b s_b^2) for a tensor, 1 / 51 for the DOS; for 'mandel' one weight 1 / (sum_b dim_b s_b^2)
    for every component. block_scales: s_b of the training targets (default: the config's output_scale, which is
    the same for the linear heads)."""
    spec = properties.get(config.property)
    irreps = model_config.output_irreps(config)
    if not spec.is_tensor:
        return torch.full((irreps.dim,), 1.0 / irreps.dim, dtype=torch.float64)
    scale = block_scales or config.output_scale or (1.0,) * irreps.num_irreps
    if kind == "mandel":
        total = sum(ir.dim * s * s for (mul, ir), block in zip(irreps, _instances(irreps, scale)) for s in block)
        return torch.full((irreps.dim,), 1.0 / total, dtype=torch.float64)
    weights = []
    for (mul, ir), block_scales in zip(irreps, _instances(irreps, scale)):
        for s in block_scales:
            weights += [1.0 / (irreps.num_irreps * ir.dim * s * s)] * ir.dim
    return torch.tensor(weights, dtype=torch.float64)


def block_index(config: ModelConfig) -> torch.Tensor:
    """For each output component, the irrep instance (block) it belongs to: 0..n_blocks-1."""
    irreps = model_config.output_irreps(config)
    return torch.tensor([block for block, ir in enumerate(ir for mul, ir in irreps for _ in range(mul))
                         for _ in range(ir.dim)], dtype=torch.long)


# The loss kinds, each with the description the training log (training_log.json, shipped in the releases) records:
# change no text, or the trained models' folders stop reproducing byte for byte. zoo.core.train_config.LOSSES, which
# the params schema checks (zoo.core cannot import zoo.nn), names the same kinds in the same order (a test holds it).
LOSS_KINDS = {
    # sum_c w_c e_c^2 (``loss_weights``)
    "mse": "per-irreps-block normalised MSE (zoo.nn.training.Loss); phonon: MSE over the 51 DOS bins",
    # mean over blocks b of |e_b| / s_b, the Euclidean norm of each irrep instance's error in units of its scale: an
    # L1-like loss over blocks, so a few extreme targets (eps up to 257) pull less than under a square, and still
    # rotation invariant (a norm per irrep, not a sum of |components|)
    "block_norm": "mean of per-irreps-block error norms over the block scales (zoo.nn.training.Loss)",
    # |e|^2 / sum_b dim_b s_b^2, over one data-set constant. Every block weighs as in the tensor itself, so the
    # isotropic (0e) part, which carries the bulk and shear moduli, counts most
    "mandel": "squared Frobenius norm of the Cartesian error over the summed block scales: rotation "
              "invariant, the Mandel (Kelvin) norm for a stiffness (zoo.nn.training.Loss)",
    # phonon: mse plus MEAN_FREQUENCY_WEIGHT x ((w_pred - w_true) / w_true)^2 of the mean frequency. The MSE alone
    # leaves a thin positive tail over the high bins (softplus output, small squares), and in the mean frequency
    # that tail adds up: heavy-element materials came out 15-55% too high
    "mse_mean_frequency": "phonon: MSE over the 51 DOS bins plus the squared relative error of the DOS's mean "
                          "frequency (zoo.nn.training.Loss)",
}


class Loss(torch.nn.Module):
    """Per-structure loss of prediction errors (n, dim) -> (n,); `kind` is one of LOSS_KINDS (described there)."""

    def __init__(self, config: ModelConfig, kind: str = "mse", block_scales: Sequence[float] | None = None,
                 irrep_weights: Mapping[str, float] | None = None):
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {tuple(LOSS_KINDS)}, got {kind!r}")
        spec = properties.get(config.property)
        grid = spec.spectrum_grid
        if kind == "mse_mean_frequency" and grid is None:
            raise ValueError(f"loss 'mse_mean_frequency' needs a spectrum on a frequency grid (a phonon DOS); "
                             f"{config.property!r} predicts a tensor")
        self.kind = kind
        dtype = model_config.DTYPES[config.dtype]
        weights = loss_weights(config, block_scales, kind)
        blocks = block_index(config) if spec.is_tensor else torch.arange(weights.numel())
        self.n_blocks = int(blocks.max()) + 1
        self.register_buffer("blocks", blocks, persistent=False)
        # mse, mandel: the squared error of a block times its weight; block_norm: its norm times its weight (all
        # exactly 1 without loss_irrep_weights, and x * 1.0 == x: the same arithmetic as no weights at all)
        per_block = block_weights(config, irrep_weights)
        self.register_buffer("block_weights", per_block.to(dtype), persistent=False)
        if kind in ("mse", "mandel", "mse_mean_frequency"):
            weights = weights * per_block[blocks]
        self.register_buffer("weights", weights.to(dtype), persistent=False)
        # w_c = 1 / (n_blocks dim_b s_b^2), so n_blocks dim_b w_c = 1 / s_b^2 on every component of block b
        dims = torch.bincount(blocks, minlength=self.n_blocks)[blocks]
        self.register_buffer("inverse_square_scale", (weights * self.n_blocks * dims).to(dtype), persistent=False)
        if kind == "mse_mean_frequency":
            self.register_buffer("grid", torch.tensor(grid, dtype=dtype), persistent=False)

    def forward(self, errors: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """errors = prediction - targets, (n, dim); targets only for mse_mean_frequency."""
        if self.kind == "mse_mean_frequency":
            if targets is None:
                raise ValueError("loss 'mse_mean_frequency' needs the targets beside the errors")
            true = mean_frequency(targets, self.grid)
            relative = (mean_frequency(targets + errors, self.grid) - true) / true
            return (errors.square() * self.weights).sum(dim=1) + MEAN_FREQUENCY_WEIGHT * relative.square()
        if self.kind in ("mse", "mandel"):
            return (errors.square() * self.weights).sum(dim=1)
        scaled = errors.square() * self.inverse_square_scale
        per_block = scaled.new_zeros(errors.shape[0], self.n_blocks).index_add_(1, self.blocks, scaled)
        # sqrt(x + eps^2) - eps: the norm with a finite gradient at zero error
        eps = 1e-6
        norms = (per_block + eps * eps).sqrt() - eps
        return (norms * self.block_weights).mean(dim=1)


def mean_frequency(dos: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(n, bins) DOS -> (n,) mean frequencies in the grid's unit: zoo.core.phonon_derived.mean_frequency (trapezoid
    rule) in torch, differentiable. A DOS with no weight (a prediction of zeros) counts as a mean frequency of 0."""
    area = torch.trapezoid(dos, grid, dim=1)
    return torch.trapezoid(dos * grid, grid, dim=1) / area.clamp(min=torch.finfo(dos.dtype).tiny)


def _instances(irreps, values):
    """values (one per irrep instance) grouped by irreps entry."""
    out, start = [], 0
    for mul, _ in irreps:
        out.append(values[start:start + mul])
        start += mul
    return out
