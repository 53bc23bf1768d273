"""Regularised MLP autoencoders: sparse, denoising and contractive (docs/models.md §10), with the
Markov-chain samplers that make the denoising and contractive ones generative.

All three share one shape: flattened images ``[N, C*H*W]`` in [0, 1] -> ``hidden`` widths ->
a code of ``code_dim`` units (``activation`` after every encoder layer, the code included)
-> the mirrored decoder -> sigmoid means in [0, 1]. Adam (lr 1e-3, betas (0.9, 0.999)) [A:
the Keras examples' optimiser; §10 lists "Adam/Adadelta"]. PyTorch's default initialisation.

Reconstruction loss [A]: ``loss="bce"`` (default; cross-entropy of the [0, 1] grey levels
under the sigmoid means, as the Keras examples do) or ``"mse"``. ``reduction="mean"``
(default) averages it over pixels per example, then over the batch: the Keras convention in
which §10 states lambda = 1e-4, and the one every penalty weight below is given in;
``reduction="sum"`` sums over pixels (the UFLDL / Rifai et al. convention of
``||x - g(f(x))||^2``). Penalties are per example, averaged over the batch.

* :class:`SparseAE` [§10]: 784-32 ReLU-784 sigmoid [A: the Keras example], loss + lambda
  ||h||_1 with lambda = 1e-4 [C lecture slides: ``l1(10e-5)``, and 10e-5 = 1e-4].
  ``sparsity="kl"``: beta sum_j KL(rho || rho_hat_j) with rho_hat the batch mean of a sigmoid
  code, rho = 0.05, beta = 3 [A]; that beta was stated with a summed squared error (UFLDL's
  1/2 ||x_hat - x||^2), so pair it with ``loss="mse", reduction="sum"``. No sampler: the
  sparse autoencoder is not a generative model and none is invented here.
* :class:`DenoisingAE` [§10]: trained to map a corrupted x~ back to the clean x.
  ``corruption="gaussian"`` (default): x~ = clip(x + 0.5 N(0, 1), 0, 1) [C slides,
  ``noise_factor = 0.5``]; ``"masking"``: a fraction 0.25 of the pixels set to 0 [A, Vincent
  et al. 2008]; ``"salt_pepper"``: each pixel, with probability ``salt_pepper_fraction`` (0.4),
  replaced by 0 or 1 with equal odds [C yaoli/GSN model.py ``salt_and_pepper``, the
  ``input_salt_and_pepper = 0.4`` of its run scripts]. 784-1000 sigmoid-784 [A].
* :class:`ContractiveAE` [§10]: one sigmoid layer h = sigmoid(W x + b), loss + lambda
  ||J_f(x)||_F^2 with the closed form sum_j (h_j (1 - h_j))^2 sum_i W_ji^2, lambda = 1e-4
  [A]. 1000 code units and a tied decoder x_hat = sigmoid(W^T h + c) [R: Rifai et al. 2011].

Samplers, all ``sample(n, *, generator)`` -> ``[n, C, H, W]`` in [0, 1], in eval / no-grad mode.
``chains`` Markov chains run side by side from their start points; after ``burn_in``
transitions, every ``thin``-th state of every chain is kept until ``n`` images are collected
(defaults: 100 chains, burn-in 100, thin 10 [A]). Start points: ``"noise"`` (uniform pixels)
or ``"data"``: a random pick from ``n_chain_starts`` (100) training images that
``on_fit_start`` stores in the buffer ``chain_starts`` (chosen by a fixed seed, saved with the
checkpoint, so a loaded model rebuilds the same starts).

* :meth:`DenoisingAE.sample`: the Markov chain of Bengio, Yao, Alain & Vincent 2013
  ("Generalized denoising auto-encoders as generative models"): x_t -> corrupt with the
  training corruption -> reconstruct -> x_{t+1} ~ Bernoulli(reconstruction) (or the means,
  ``chain_visible="mean"``); the kept images are the reconstruction means. Start: noise [A].
* :meth:`ContractiveAE.sample`: the process of Rifai, Bengio, Dauphin & Vincent 2012 ("A
  generative process for sampling contractive auto-encoders"), as recalled [R]:
  x_{t+1} = g(f(x_t) + eps J J^T n) with n ~ N(0, I) in code space and J = J_f(x_t), so the
  code moves along the Jacobian's leading directions (``sample_noise="jjt"``); or
  ``"j"``: f(x_t) + eps J n with n ~ N(0, I) in pixel space (the code noise has covariance
  eps^2 J J^T). eps = 1 [A: on the 8x8 digits it gives samples whose per-pixel spread matches
  the data's; 0.1 stays near the start images, 10 leaves the digit manifold]. Start: training
  images [A]. On MNIST eps = 1 drives the chains off the digit manifold (Parzen -271 nats)
  while 0.1 gives -52, so the step must be chosen per data set: ``sample_grid`` (e.g.
  ``{"step": [0.03, 0.1, 0.3, 1.0], "burn_in": [100, 1000]}``) names candidate chain settings
  and :meth:`ContractiveAE.choose_on_validation` (:func:`choose_chain_settings`) picks the one
  whose samples give the best Parzen log-likelihood on the VALIDATION split (sigma chosen on
  valid[0:1000], the log-likelihood averaged over valid[1000:2000]; the test split is never
  seen) and records it in the buffers ``sample_choice`` / ``sample_choice_ll``, so the
  checkpoint keeps the choice; ``sample()`` refuses to run before a choice is recorded.

Close kin, not the published models (footnote these in any report): the GAN paper's Parzen
table (docs/models.md §1 [P]) has "Stacked CAE" (121 +- 1.6 on MNIST) and "Deep GSN" (214 +- 1.1)
rows. As recalled [R], the first is a two-layer CAE sampled with the Rifai et al. process in
its top representation (Bengio et al. 2013, "Better mixing via deep representations") and
the second a deep generative stochastic network trained with walkback (Bengio et al. 2014),
whose MNIST chains used salt-and-pepper noise. Here: one-layer CAE, and a one-layer DAE with
the 2013 chain and no walkback. The Deep GSN itself, as in its authors' code, is
:class:`reference_models.gsn.GSN`; the DAE chain stays as its one-layer kin.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import evaluating, mlp

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
LOSSES = ("bce", "mse")
REDUCTIONS = ("mean", "sum")


def _hparams(local_vars: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in local_vars.items() if k not in ("self", "__class__")}


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


# --- Markov-chain sampling shared by the generative models (also used by reference_models.dbn) ---
def salt_and_pepper(x: torch.Tensor, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Salt-and-pepper noise as in the GSN code (yaoli/GSN ``model.py``, ``salt_and_pepper``):
    each value independently, with probability ``p``, is replaced by 0 or by 1 (equal odds);
    the others are kept. Every random draw comes from ``generator``."""
    hit = torch.rand(x.shape, device=x.device, generator=generator) < p
    salt = torch.rand(x.shape, device=x.device, generator=generator) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def register_chain_starts(module: nn.Module, n_starts: int, dim: int) -> None:
    """Buffers for ``n_starts`` training images (flattened) that chains may start from."""
    if n_starts < 1:
        raise ValueError(f"n_chain_starts must be at least 1, got {n_starts!r}")
    module.register_buffer("chain_starts", torch.zeros(n_starts, dim))
    module.register_buffer("chain_starts_filled", torch.zeros((), dtype=torch.bool))


@torch.no_grad()
def fill_chain_starts(module: nn.Module, x: torch.Tensor) -> None:
    """Store a fixed-seed random pick of the training images ``x`` as chain starts (the same
    pick for the same data, so a resumed fit leaves the global RNG and the buffer as they were)."""
    n = module.chain_starts.shape[0]
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    idx = idx.repeat(math.ceil(n / idx.shape[0]))[:n]
    module.chain_starts.copy_(x[idx.to(x.device)].flatten(1))
    module.chain_starts_filled.fill_(True)


def draw_chain_starts(module: nn.Module, k: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``k`` rows drawn (with replacement) from the stored training images."""
    if not bool(module.chain_starts_filled):
        raise RuntimeError(
            f"{type(module).__name__}: no training images stored for start='data' chains; "
            "train it with reference_models.training.fit (on_fit_start stores them) or sample with start='noise'"
        )
    n = module.chain_starts.shape[0]
    idx = torch.randint(n, (k,), device=module.chain_starts.device, generator=generator)
    return module.chain_starts[idx].clone()


def markov_chain_samples(
    n: int, start: Callable[[int], object], step: Callable[[object], object], emit: Callable[[object], torch.Tensor],
    *, chains: int, burn_in: int, thin: int,
) -> torch.Tensor:
    """``n`` rows from ``chains`` parallel chains: ``start(k)`` gives k initial states, ``step``
    one transition of all of them; after ``burn_in`` transitions, ``emit(state)`` is kept
    every ``thin`` transitions. Rows come record by record (all chains' first kept states, then
    their second ...), cut to ``n``."""
    if n < 1 or chains < 1 or burn_in < 0 or thin < 1:
        raise ValueError(f"need n >= 1, chains >= 1, burn_in >= 0, thin >= 1; got {n}, {chains}, {burn_in}, {thin}")
    chains = min(chains, n)
    state = start(chains)
    for _ in range(burn_in):
        state = step(state)
    out = []
    for _ in range(math.ceil(n / chains)):
        for _ in range(thin):
            state = step(state)
        out.append(emit(state))
    return torch.cat(out)[:n]


# --- chain settings chosen on validation (ContractiveAE.sample_grid) -------------------------
#: Keys a ``sample_grid`` may vary: keyword arguments of the samplers' ``sample()``.
SAMPLE_GRID_KEYS = ("step", "noise", "burn_in", "thin", "chains", "start")


def _expand_grid(grid: Optional[dict]) -> list[dict]:
    """The product of a ``{key: [values]}`` grid as a list of settings (keys in
    :data:`SAMPLE_GRID_KEYS` order, values in the given order); [] for None."""
    if grid is None:
        return []
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"sample_grid must be a non-empty dict of lists, e.g. {{'step': [0.1, 1.0]}}; got {grid!r}")
    bad = sorted(set(grid) - set(SAMPLE_GRID_KEYS))
    if bad:
        raise ValueError(f"sample_grid keys must be among {SAMPLE_GRID_KEYS}; got {bad}")
    keys = [k for k in SAMPLE_GRID_KEYS if k in grid]
    values = []
    for k in keys:
        v = grid[k]
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
            raise ValueError(f"sample_grid[{k!r}] must be a non-empty list, got {v!r}")
        values.append(list(v))
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def choose_chain_settings(
    model, valid: torch.Tensor, settings: Sequence[dict], *, n_samples: int = 10000, n_choose: int = 1000,
    n_score: int = 1000, seed: int = 0, sigmas=None, log: Optional[Callable[[str], None]] = None,
) -> dict:
    """Score every chain setting (keyword arguments of ``model.sample``) on VALIDATION images
    only and pick the best: for each setting, ``n_samples`` samples drawn with a generator
    seeded ``seed`` (the same seed for every setting); the Parzen sigma is chosen on
    ``valid[0:c]`` and the mean log-likelihood taken over ``valid[c:c + s]``, with
    c = min(n_choose, len(valid) // 2) and s = min(n_score, len(valid) - c) (MNIST: valid[0:1000]
    and valid[1000:2000]; the evaluation protocol's test split is never passed here). Ties go
    to the earlier setting. Returns ``{"chosen", "chosen_index", "results": [{"setting",
    "valid_ll", "valid_ll_se", "sigma"}], "n_samples", "valid_choose", "valid_score", "seed"}``."""
    from evalkit.metrics import parzen_log_likelihood

    if not settings:
        raise ValueError("no chain settings to choose from")
    valid = valid.float()
    if valid.shape[0] < 2:
        raise ValueError(f"need at least 2 validation images (one to choose sigma, one to score), got {valid.shape[0]}")
    c = min(n_choose, valid.shape[0] // 2)
    s = min(n_score, valid.shape[0] - c)
    v_choose, v_score = valid[:c], valid[c:c + s]
    device = next(model.parameters()).device
    results = []
    for setting in settings:
        gen = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            samples = model.sample(n_samples, generator=gen, **setting).detach().float().cpu()
        res = parzen_log_likelihood(samples.clamp(0, 1), v_score, validation=v_choose, sigmas=sigmas)
        results.append({"setting": dict(setting), "valid_ll": float(res.mean), "valid_ll_se": float(res.stderr), "sigma": float(res.sigma)})
        if log:
            log(f"chain setting {setting}: validation Parzen LL {res.mean:.1f} +- {res.stderr:.1f} (sigma {res.sigma:.3g})")
    lls = [r["valid_ll"] if math.isfinite(r["valid_ll"]) else -math.inf for r in results]
    best = max(range(len(results)), key=lambda i: (lls[i], -i))
    if log:
        log(f"chosen on validation: {results[best]['setting']}")
    return {"chosen": dict(settings[best]), "chosen_index": best, "results": results, "n_samples": n_samples,
            "valid_choose": f"valid[0:{c}]", "valid_score": f"valid[{c}:{c + s}]", "seed": seed}


class ChainChoiceMixin:
    """Chain settings of a Markov-chain sampler chosen on the validation split.

    A model with a ``sample_grid`` hyperparameter (``{key: [values]}``, keys among
    :data:`SAMPLE_GRID_KEYS`) calls :meth:`_init_chain_choice` in its constructor; the runner
    then calls :meth:`choose_on_validation` once per trained model (never with test images),
    which records the best setting in the buffers ``sample_choice`` / ``sample_choice_ll``
    (saved with the checkpoint), and :meth:`_chain_setting` gives ``sample()`` the setting to
    use. Used by :class:`ContractiveAE` and :class:`reference_models.dbn.DBN`."""

    def _init_chain_choice(self, sample_grid: Optional[dict]) -> None:
        self._grid = _expand_grid(sample_grid)
        if self._grid:  # only then: checkpoints of models without a grid keep their keys
            self.register_buffer("sample_choice", torch.full((), -1, dtype=torch.long))
            self.register_buffer("sample_choice_ll", torch.full((len(self._grid),), float("nan")))

    @property
    def sample_settings(self) -> list[dict]:
        """The candidate chain settings of ``sample_grid`` (its product, in a fixed order)."""
        return [dict(s) for s in self._grid]

    @property
    def chosen_sample_settings(self) -> Optional[dict]:
        """The setting recorded by :meth:`choose_on_validation` (None: no grid, or not chosen yet)."""
        if not self._grid or int(self.sample_choice) < 0:
            return None
        return dict(self._grid[int(self.sample_choice)])

    def _chain_setting(self, given: dict, defaults: dict) -> dict:
        """Per key: the argument given to ``sample()``, else the chosen setting, else the
        ``sample_*`` hyperparameter. RuntimeError when a grid is set, nothing is chosen yet and
        a grid key was not given (the test split must never choose it)."""
        chosen: dict = {}
        if self._grid:
            chosen = self.chosen_sample_settings or {}
            if not chosen and any(given.get(k) is None for k in self._grid[0]):
                raise RuntimeError(
                    f"{type(self).__name__}: sample_grid is set but no chain setting has been chosen yet; call "
                    "choose_on_validation(validation images) first (the test split must never choose it)"
                )
        return {k: given[k] if given.get(k) is not None else chosen.get(k, defaults[k]) for k in defaults}

    def choose_on_validation(
        self, valid: torch.Tensor, *, n_samples: int = 10000, seed: int = 0, sigmas=None,
        redo: bool = False, checkpoint=None, log: Callable[[str], None] = print,
    ) -> Optional[dict]:
        """Pick the ``sample_grid`` setting whose samples score best under the Parzen protocol on
        the VALIDATION images ``valid`` (:func:`choose_chain_settings`) and record it in the
        buffers ``sample_choice`` / ``sample_choice_ll``. A choice already recorded (e.g. loaded
        with the checkpoint) is kept unless ``redo``. With ``checkpoint`` (a checkpoint file of
        this model), the buffers are written into its state dict as well (atomically), so later
        loads keep the choice. Returns a JSON-able summary (None when there is no grid)."""
        if not self._grid:
            return None
        if int(self.sample_choice) >= 0 and not redo:
            return self.choice_summary()
        out = choose_chain_settings(self, valid, self.sample_settings, n_samples=n_samples, seed=seed, sigmas=sigmas, log=log)
        self.sample_choice.fill_(out["chosen_index"])
        self.sample_choice_ll.copy_(torch.tensor([r["valid_ll"] for r in out["results"]], dtype=self.sample_choice_ll.dtype))
        if checkpoint is not None:
            from .training import atomic_save, load_checkpoint

            ck = load_checkpoint(checkpoint)
            ck["state_dict"]["sample_choice"] = self.sample_choice.detach().cpu().clone()
            ck["state_dict"]["sample_choice_ll"] = self.sample_choice_ll.detach().cpu().clone()
            ck["sample_choice"] = out
            atomic_save(ck, checkpoint)
        return out

    def choice_summary(self) -> Optional[dict]:
        """The recorded choice as a JSON-able dict (None when nothing is recorded)."""
        chosen = self.chosen_sample_settings
        if chosen is None:
            return None
        lls = [None if math.isnan(v) else float(v) for v in self.sample_choice_ll.tolist()]
        return {"chosen": chosen, "chosen_index": int(self.sample_choice),
                "results": [{"setting": s, "valid_ll": v} for s, v in zip(self.sample_settings, lls)]}


# --- the shared autoencoder ------------------------------------------------------------------
class _MLPAutoEncoder(nn.Module):
    """Encoder ``D -> hidden -> code_dim`` (``activation`` after each layer), mirrored decoder
    with sigmoid output (or tied to the encoder's transpose when there is a single layer)."""

    def __init__(self, image_shape, code_dim, hidden, activation, tied, loss, reduction, lr, betas):
        super().__init__()
        _check("activation", activation, ACTIVATIONS)
        _check("loss", loss, LOSSES)
        _check("reduction", reduction, REDUCTIONS)
        if tied and len(hidden):
            raise ValueError("tied=True needs a single encoder layer (hidden=[])")
        self.image_shape = tuple(image_shape)
        self.dim = math.prod(self.image_shape)
        self.code_dim, self.tied, self.loss, self.reduction = code_dim, tied, loss, reduction
        act = ACTIVATIONS[activation]
        self.encoder = mlp([self.dim, *hidden, code_dim], activation=act, final_activation=act())
        if tied:
            self.decoder_bias = nn.Parameter(torch.zeros(self.dim))
        else:
            self.decoder = mlp([code_dim, *list(hidden)[::-1], self.dim], activation=act)  # -> logits

    # --- capabilities --------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``[N, code_dim]`` of images ``[N, C, H, W]`` (differentiable)."""
        return self.encoder(x.flatten(1))

    def decode_logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.tied:
            return h @ self.encoder[0].weight + self.decoder_bias
        return self.decoder(h)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """The decoder's means ``[N, C, H, W]`` in [0, 1]."""
        return torch.sigmoid(self.decode_logits(h)).view(h.shape[0], *self.image_shape)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """g(f(x)) of clean images, in [0, 1]."""
        return self.decode(self.encode(x))

    # --- training ------------------------------------------------------------------------
    def reconstruction_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per example ``[N]``: BCE or squared error, mean or sum over pixels (``target`` flat)."""
        if self.loss == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            per_pixel = (torch.sigmoid(logits) - target).pow(2)
        return per_pixel.mean(1) if self.reduction == "mean" else per_pixel.sum(1)

    def corrupt(self, flat: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return flat  # no corruption but in DenoisingAE

    def penalty(self, flat_in: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h.new_zeros(())

    def configure_optimizers(self):
        h = self.hparams
        from .training import make_optimizer  # noqa: PLC0415 (FUSED_OPTIMIZERS switch)

        return {"ae": make_optimizer(torch.optim.Adam, self.parameters(), lr=h["lr"], betas=tuple(h["betas"]))}

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One Adam step on reconstruction (of the clean x) + penalty. Labels are ignored."""
        flat = x.flatten(1)
        inp = self.corrupt(flat)
        h = self.encoder(inp)
        rec = self.reconstruction_loss(self.decode_logits(h), flat).mean()
        pen = self.penalty(inp, h)
        loss = rec + pen
        opt = optimizers["ae"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out = torch.stack([loss, rec, pen]).detach().tolist()
        return {"loss": out[0], "rec": out[1], "penalty": out[2]}

    # --- chain sampling (DenoisingAE, ContractiveAE) -------------------------------------
    def on_fit_start(self, x: torch.Tensor, y=None) -> None:
        if hasattr(self, "chain_starts"):
            fill_chain_starts(self, x)

    def _chain_samples(self, n, step, *, generator, burn_in, thin, chains, start) -> torch.Tensor:
        h = self.hparams
        start = h["sample_start"] if start is None else start
        _check("start", start, ("noise", "data"))
        device = self.chain_starts.device

        def init(k):
            if start == "data":
                x0 = draw_chain_starts(self, k, generator)
            else:
                x0 = torch.rand(k, self.dim, device=device, generator=generator)
            return x0, x0

        with evaluating(self):
            out = markov_chain_samples(
                n, init, step, lambda s: s[1],
                chains=h["sample_chains"] if chains is None else chains,
                burn_in=h["sample_burn_in"] if burn_in is None else burn_in,
                thin=h["sample_thin"] if thin is None else thin,
            )
        return out.view(n, *self.image_shape)


class SparseAE(_MLPAutoEncoder):
    registry_name = "sparse_ae"
    description = "Sparse autoencoder (L1 activity penalty, or KL sparsity); no sampler"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        code_dim: int = 32,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        sparsity: str = "l1",
        l1: float = 1e-4,
        rho: float = 0.05,
        beta: float = 3.0,
        tied: bool = False,
        loss: str = "bce",
        reduction: str = "mean",
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
    ):
        hp = _hparams(locals())
        super().__init__(image_shape, code_dim, hidden, activation, tied, loss, reduction, lr, betas)
        self.hparams = hp
        _check("sparsity", sparsity, ("l1", "kl"))
        if sparsity == "kl" and activation != "sigmoid":
            raise ValueError("sparsity='kl' needs activation='sigmoid' (code activities in (0, 1))")
        if sparsity == "kl" and not 0 < rho < 1:
            raise ValueError(f"rho must lie in (0, 1), got {rho!r}")
        self.sparsity = sparsity

    def penalty(self, flat_in, h):
        hp = self.hparams
        if self.sparsity == "l1":
            return hp["l1"] * h.abs().sum(1).mean()
        rho, rho_hat = hp["rho"], h.mean(0).clamp(1e-6, 1 - 1e-6)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return hp["beta"] * kl.sum()


class DenoisingAE(_MLPAutoEncoder):
    registry_name = "denoising_ae"
    description = "Denoising autoencoder (Gaussian, masking or salt-and-pepper corruption) with the Bengio et al. 2013 generative chain"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        code_dim: int = 1000,
        hidden: Sequence[int] = (),
        activation: str = "sigmoid",
        corruption: str = "gaussian",
        noise_std: float = 0.5,
        mask_fraction: float = 0.25,
        salt_pepper_fraction: float = 0.4,
        tied: bool = False,
        loss: str = "bce",
        reduction: str = "mean",
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        chain_visible: str = "sample",
        sample_start: str = "noise",
        sample_chains: int = 100,
        sample_burn_in: int = 100,
        sample_thin: int = 10,
        n_chain_starts: int = 100,
    ):
        hp = _hparams(locals())
        super().__init__(image_shape, code_dim, hidden, activation, tied, loss, reduction, lr, betas)
        self.hparams = hp
        _check("corruption", corruption, ("gaussian", "masking", "salt_pepper"))
        _check("chain_visible", chain_visible, ("sample", "mean"))
        _check("sample_start", sample_start, ("noise", "data"))
        if not 0 <= mask_fraction < 1 or noise_std < 0:
            raise ValueError(f"need 0 <= mask_fraction < 1 and noise_std >= 0; got {mask_fraction!r}, {noise_std!r}")
        if not 0 <= salt_pepper_fraction <= 1:
            raise ValueError(f"need 0 <= salt_pepper_fraction <= 1; got {salt_pepper_fraction!r}")
        register_chain_starts(self, n_chain_starts, self.dim)

    def corrupt(self, flat, generator=None):
        """x~ ~ C(x~ | x): clip(x + noise_std N(0, 1), 0, 1), x with ``mask_fraction`` of its pixels
        zeroed, or salt-and-pepper noise on ``salt_pepper_fraction`` of them (the chain in
        :meth:`sample` uses the same corruption as training)."""
        hp = self.hparams
        if hp["corruption"] == "gaussian":
            noise = torch.randn(flat.shape, device=flat.device, generator=generator)
            return (flat + hp["noise_std"] * noise).clamp(0.0, 1.0)
        if hp["corruption"] == "salt_pepper":
            return salt_and_pepper(flat, hp["salt_pepper_fraction"], generator)
        keep = torch.rand(flat.shape, device=flat.device, generator=generator) >= hp["mask_fraction"]
        return flat * keep

    @torch.no_grad()
    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """g(f(x)) of (already corrupted) images: the same map as :meth:`reconstruct`."""
        return self.reconstruct(x)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: Optional[torch.Generator] = None, burn_in: Optional[int] = None,
        thin: Optional[int] = None, chains: Optional[int] = None, start: Optional[str] = None,
    ) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1] from the generalized-DAE chain (Bengio et al.
        2013): x -> corrupt -> reconstruction means m -> x ~ Bernoulli(m) (or m itself with
        ``chain_visible="mean"``); the kept images are the means m. Close kin of the published
        Deep GSN row, not that model (see the module docstring). Keyword arguments override
        the ``sample_*`` hyperparameters."""
        bernoulli = self.hparams["chain_visible"] == "sample"

        def step(state):
            m = torch.sigmoid(self.decode_logits(self.encoder(self.corrupt(state[0], generator))))
            return (torch.bernoulli(m, generator=generator) if bernoulli else m), m

        return self._chain_samples(n, step, generator=generator, burn_in=burn_in, thin=thin, chains=chains, start=start)


class ContractiveAE(ChainChoiceMixin, _MLPAutoEncoder):
    registry_name = "contractive_ae"
    description = "Contractive autoencoder (one sigmoid layer, closed-form Jacobian penalty) with the Rifai et al. 2012 sampler"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        code_dim: int = 1000,
        contraction: float = 1e-4,
        tied: bool = True,
        loss: str = "bce",
        reduction: str = "mean",
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        sample_step: float = 1.0,
        sample_noise: str = "jjt",
        sample_start: str = "data",
        sample_chains: int = 100,
        sample_burn_in: int = 100,
        sample_thin: int = 10,
        n_chain_starts: int = 100,
        sample_grid: Optional[dict] = None,
    ):
        hp = _hparams(locals())
        _expand_grid(sample_grid)  # validates it
        if sample_grid is not None:
            hp["sample_grid"] = {k: list(v) for k, v in sample_grid.items()}
        super().__init__(image_shape, code_dim, (), "sigmoid", tied, loss, reduction, lr, betas)
        self.hparams = hp
        _check("sample_noise", sample_noise, ("jjt", "j"))
        _check("sample_start", sample_start, ("noise", "data"))
        if contraction < 0:
            raise ValueError(f"contraction must be >= 0, got {contraction!r}")
        register_chain_starts(self, n_chain_starts, self.dim)
        self._init_chain_choice(sample_grid)

    @property
    def weight(self) -> torch.Tensor:
        """The encoder's W ``[code_dim, D]`` (h = sigmoid(W x + b))."""
        return self.encoder[0].weight

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """J_f(x) = diag(h (1 - h)) W per example, ``[N, code_dim, D]`` (closed form)."""
        h = self.encode(x)
        return (h * (1 - h)).unsqueeze(2) * self.weight.unsqueeze(0)

    def jacobian_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """||J_f(x)||_F^2 per example ``[N]``: sum_j (h_j (1 - h_j))^2 sum_i W_ji^2."""
        return self._frobenius2(self.encode(x))

    def _frobenius2(self, h: torch.Tensor) -> torch.Tensor:
        return (h * (1 - h)).pow(2) @ self.weight.pow(2).sum(1)

    def penalty(self, flat_in, h):
        return self.hparams["contraction"] * self._frobenius2(h).mean()

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: Optional[torch.Generator] = None, burn_in: Optional[int] = None,
        thin: Optional[int] = None, chains: Optional[int] = None, start: Optional[str] = None,
        step: Optional[float] = None, noise: Optional[str] = None,
    ) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1] from the Rifai et al. 2012 process:
        x_{t+1} = g(f(x_t) + eps J J^T n), n ~ N(0, I_code) (``sample_noise="jjt"``), or
        g(f(x_t) + eps J n), n ~ N(0, I_pixels) (``"j"``), with J = J_f(x_t) and eps =
        ``sample_step``; the kept images are the decoder means. A one-layer close kin of the
        published Stacked CAE row (see the module docstring). With ``sample_grid`` the setting
        recorded by :meth:`choose_on_validation` replaces the ``sample_*`` hyperparameters it
        names (RuntimeError before one is recorded); keyword arguments override both."""
        hp = self.hparams
        given = {"step": step, "noise": noise, "burn_in": burn_in, "thin": thin, "chains": chains, "start": start}
        st = self._chain_setting(given, {k: hp[f"sample_{k}"] for k in given})
        eps, w = st["step"], self.weight
        noise_kind = st["noise"]
        _check("noise", noise_kind, ("jjt", "j"))
        burn_in, thin, chains, start = st["burn_in"], st["thin"], st["chains"], st["start"]
        wwt = w @ w.T if noise_kind == "jjt" else None

        def transition(state):
            h = torch.sigmoid(state[0] @ w.T + self.encoder[0].bias)
            s = h * (1 - h)  # J = diag(s) W
            if wwt is not None:  # J J^T n = s * (W W^T (s * n))
                z = torch.randn(h.shape, device=h.device, generator=generator)
                dh = s * ((s * z) @ wwt)
            else:  # J n = s * (W n)
                z = torch.randn(h.shape[0], self.dim, device=h.device, generator=generator)
                dh = s * (z @ w.T)
            m = torch.sigmoid(self.decode_logits(h + eps * dh))
            return m, m

        return self._chain_samples(n, transition, generator=generator, burn_in=burn_in, thin=thin, chains=chains, start=start)
