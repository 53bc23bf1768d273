"""Markov-chain sampling shared by the generative autoencoders, the DBN and the GSN: chain
starts kept with the model, the chain loop itself, and the choice of chain settings on the
validation split (:class:`ChainChoiceMixin`).

Split out of :mod:`reference_models.autoencoders` (which re-exports every name), so that module
holds the autoencoders and this one the samplers' common machinery.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn



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

    def forget_sample_choice(self) -> None:
        """Clear a recorded choice: it belongs to the weights it was made for. ``fit`` calls this
        before training a resumed model further (e.g. a 20-epoch checkpoint that holds its choice,
        extended to 30 epochs), so the longer run is chosen for anew."""
        if self._grid:
            self.sample_choice.fill_(-1)
            self.sample_choice_ll.fill_(float("nan"))

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
