"""Deep belief net (Hinton, Osindero & Teh 2006): a stack of binary RBMs trained greedily, layer
by layer, with contrastive divergence; sampled by Gibbs sampling in the top RBM followed by a
down pass through the directed lower layers.

docs/models.md has no section on the DBN; it gives only the GAN paper's Parzen row "DBN" (138 +- 2
on MNIST, 1909 +- 66 on TFD) [P, §1]. That row came, as recalled [R], from Bengio et al. 2013
("Better mixing via deep representations"), whose DBN sizes and chain settings were not
re-read. Everything below is therefore [R] (Hinton's published Matlab RBM code and the 2006
paper, from memory) or [A]:

* Sizes: ``image_shape`` pixels -> ``hidden`` = (500, 500, 2000) [R: Hinton et al. 2006's
  784-500-500-2000, whose top RBM also saw 10 label units; this model is unsupervised, no labels].
* RBM l (visible ``sizes[l]``, hidden ``sizes[l+1]``): p(h=1|v) = sigmoid(W v + c),
  p(v=1|h) = sigmoid(W^T h + b). Weights N(0, 0.01^2), biases 0 [R: Hinton's 2010 practical
  guide].
* The first RBM sees the grey levels in [0, 1] as probabilities (``input_mode="prob"``, [R: the
  Matlab code feeds the [0, 1] pixels as they are]) or a fresh binary sample of them at every
  step (``"binary"``). Layer l+1 trains on layer l's hidden probabilities (deterministic up
  pass) [R].
* CD-k (``method="cd"``, k = ``cd_k`` = 1 [R]): h0 ~ p(h|v) from the data; k steps of
  v_t = p(v|h_{t-1}) as probabilities, h_t probabilities (sampled between steps); the
  statistics use p(h|v0) and (v_k, p(h|v_k)) [R: the Matlab code's posprods / negprods].
  ``method="pcd"``: persistent CD (Tieleman 2008) with ``pcd_chains`` = 100 binary fantasy
  particles per layer (buffers, checkpointed), started from the layer's first minibatch.
  PCD is untuned here: at lr 0.1 with momentum 0.9 its likelihood oscillates on toy data;
  momentum (0.5, 0.5) or a smaller lr behaves (the tests use the former) [A].
* Updates: SGD on the per-example-averaged CD gradient, lr 0.1, momentum 0.5 for a layer's first
  5 epochs then 0.9, weight decay 2e-4 on the weights only [R: the Matlab code's epsilonw,
  initial/final momentum and weightcost]. One optimizer per RBM (``rbm0``, ``rbm1``, ...);
  a step only touches the active layer's.
* Greedy schedule, from the epoch counter alone: layer l = min(epoch // epochs_per_layer, L - 1)
  trains during epochs [l E, (l + 1) E) with E = ``epochs_per_layer`` = 30 [R: "30 sweeps"];
  epochs past L E keep training the top RBM (the associative memory). A run of fewer than L E
  epochs leaves the upper RBMs at their initial weights. Without fine-tuning the generative
  weights of the lower layers are the transposes of their recognition weights.
* Up-down fine-tuning (Hinton et al. 2006, section 5 and appendix B; off unless
  ``updown_from_epoch`` is set): from that epoch on, every step is one up-down (contrastive
  wake-sleep) update of the whole net instead of a greedy CD step. At its first step the
  lower layers' weights are untied: each gets generative weights G_l (``gen_weights``), copied
  from its recognition weights W_l, so the first down pass is unchanged. Then, per minibatch:
  the *up* (wake) pass samples binary states of every hidden layer below the top RBM with the
  recognition weights (the pixels stay grey-level probabilities); the generative weights and
  visible biases learn to predict each layer's states from the layer above (delta rule); the top
  RBM takes a CD-``updown_cd_k`` step from the up pass's states (k = 3 [R: the paper's first
  stage of up-down training; it later raised k to 6 and 10]); the *down* (sleep) pass samples
  each lower layer from the top RBM's negative states with the generative weights, and the
  recognition weights and hidden biases learn to predict each layer's sleep states from the
  layer below. One SGD optimizer (``updown``) over all parameters, lr ``updown_lr`` = 0.01 and
  momentum ``updown_momentum`` = 0.5, weight decay as in the greedy stage [A: the paper's
  up-down learning rates were not re-read]. No label units (the paper's top RBM also saw the
  10 labels). After fine-tuning, the down pass of sampling (and ``decode``) uses G_l.

Sampling (``sample(n, *, generator)`` -> ``[n, C, H, W]`` in [0, 1], eval / no-grad): ``chains``
(100) Gibbs chains in the top RBM (h ~ p(h|v), v ~ p(v|h), both binary) start either from
random binary states (``sample_start="random"``, default [A]) or from the up pass of stored
training images (``"data"``: ``on_fit_start`` keeps ``n_chain_starts`` of them in a buffer);
after ``sample_burn_in`` = 1000 Gibbs steps [R: the 1000 alternating Gibbs iterations of
Hinton et al. 2006], every ``sample_thin`` = 10th state is kept [A]. The top RBM's visible
probabilities then go down the directed layers: means (``down_pass="mean"``, default [A]) or
binary samples of each intermediate layer (``"sample"``); the pixels are always means.
``sample_grid`` (e.g. ``{"start": ["random", "data"], "burn_in": [100, 1000]}``): the chain
settings are chosen per trained model on the validation split (Parzen protocol on validation
images only, :class:`reference_models.chains.ChainChoiceMixin`), recorded in the
checkpoint, and used by ``sample()``: CD-1 leaves a dominant blank mode that random starts
fall into (chains from data were 96% blank after 1000 steps in evalkit's MNIST run), so the
start and chain length are chosen, not assumed.
Also: ``free_energy``, ``encode`` (top hidden probabilities), ``decode``, ``reconstruct``
(deterministic up pass, then down pass).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .chains import ChainChoiceMixin, _expand_grid, draw_chain_starts, fill_chain_starts, markov_chain_samples, register_chain_starts
from .blocks import evaluating
from .training import make_optimizer


class RBM(nn.Module):
    """A binary restricted Boltzmann machine: W ``[n_hidden, n_visible]``, visible bias b, hidden bias c."""

    def __init__(self, n_visible: int, n_hidden: int, init_std: float):
        super().__init__()
        self.weight = nn.Parameter(init_std * torch.randn(n_hidden, n_visible))
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v @ self.weight.T + self.hidden_bias)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h @ self.weight + self.visible_bias)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + W_j.v) per row; p(v) is proportional to exp(-F(v))."""
        return -(v @ self.visible_bias) - F.softplus(v @ self.weight.T + self.hidden_bias).sum(1)


class DBN(ChainChoiceMixin, nn.Module):
    registry_name = "dbn"
    description = "Hinton et al. 2006 deep belief net (greedy CD-trained RBMs, optional up-down fine-tuning, top-RBM Gibbs sampling)"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (500, 500, 2000),
        epochs_per_layer: int = 30,
        method: str = "cd",
        cd_k: int = 1,
        pcd_chains: int = 100,
        input_mode: str = "prob",
        init_std: float = 0.01,
        lr: float = 0.1,
        momentum: Sequence[float] = (0.5, 0.9),
        momentum_switch_epoch: int = 5,
        weight_decay: float = 2e-4,
        sample_start: str = "random",
        sample_chains: int = 100,
        sample_burn_in: int = 1000,
        sample_thin: int = 10,
        down_pass: str = "mean",
        n_chain_starts: int = 100,
        sample_grid: Optional[dict] = None,
        updown_from_epoch: Optional[int] = None,
        updown_lr: float = 0.01,
        updown_momentum: float = 0.5,
        updown_cd_k: int = 3,
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if sample_grid is None:  # absent unless used, so earlier checkpoints keep their arguments
            del self.hparams["sample_grid"]
        else:
            bad = sorted(set(sample_grid) - {"burn_in", "thin", "chains", "start"})
            if bad:
                raise ValueError(f"DBN sample_grid may vary burn_in, thin, chains and start; got {bad}")
            _expand_grid(sample_grid)  # validates it
            self.hparams["sample_grid"] = {k: list(v) for k, v in sample_grid.items()}
        if updown_from_epoch is None:  # absent unless used, so earlier checkpoints keep their arguments
            for k in ("updown_from_epoch", "updown_lr", "updown_momentum", "updown_cd_k"):
                del self.hparams[k]
        elif updown_from_epoch < 1 or updown_cd_k < 1 or not updown_lr > 0:
            raise ValueError(
                f"updown_from_epoch and updown_cd_k must be >= 1 and updown_lr > 0; got "
                f"{updown_from_epoch!r}, {updown_cd_k!r}, {updown_lr!r}"
            )
        for name, value, allowed in (("method", method, ("cd", "pcd")), ("input_mode", input_mode, ("prob", "binary")),
                                     ("sample_start", sample_start, ("random", "data")), ("down_pass", down_pass, ("mean", "sample"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not len(hidden):
            raise ValueError("hidden must name at least one layer")
        if epochs_per_layer < 1 or cd_k < 1:
            raise ValueError(f"epochs_per_layer and cd_k must be >= 1; got {epochs_per_layer!r}, {cd_k!r}")
        self.image_shape = tuple(image_shape)
        self.sizes = [math.prod(self.image_shape), *hidden]
        self.rbms = nn.ModuleList(RBM(self.sizes[l], self.sizes[l + 1], init_std) for l in range(len(hidden)))
        if method == "pcd":
            for l in range(len(hidden)):
                self.register_buffer(f"pcd_visible{l}", torch.zeros(pcd_chains, self.sizes[l]))
            self.register_buffer("pcd_started", torch.zeros(len(hidden), dtype=torch.bool))
        if updown_from_epoch is not None:
            # generative weights of the lower layers, untied from W_l at the first up-down step
            self.gen_weights = nn.ParameterList(
                nn.Parameter(self.rbms[l].weight.detach().clone()) for l in range(len(hidden) - 1)
            )
            self.register_buffer("updown_started", torch.zeros((), dtype=torch.bool))
        register_chain_starts(self, n_chain_starts, self.sizes[0])
        self._init_chain_choice(sample_grid)

    @property
    def n_layers(self) -> int:
        return len(self.rbms)

    def active_layer(self, epoch: int) -> int:
        """The RBM trained during ``epoch`` (0-based): the greedy schedule."""
        return min(epoch // self.hparams["epochs_per_layer"], self.n_layers - 1)

    def in_updown(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) is an up-down fine-tuning epoch."""
        start = self.hparams.get("updown_from_epoch")
        return start is not None and epoch >= start

    @property
    def untied(self) -> bool:
        """True once up-down fine-tuning has untied the lower layers' generative weights."""
        return hasattr(self, "updown_started") and bool(self.updown_started)

    def generative_probs(self, l: int, h: torch.Tensor) -> torch.Tensor:
        """p(layer l = 1 | layer l + 1 = h) through the directed generative weights (the
        transposed recognition weights until up-down fine-tuning unties them)."""
        if l < self.n_layers - 1 and self.untied:
            return torch.sigmoid(h @ self.gen_weights[l] + self.rbms[l].visible_bias)
        return self.rbms[l].visible_probs(h)

    # --- passes ----------------------------------------------------------------------------
    def up(self, x: torch.Tensor, layers: Optional[int] = None) -> torch.Tensor:
        """Hidden probabilities after ``layers`` RBMs (all by default); ``x`` images or flat rows."""
        v = x.flatten(1)
        for rbm in self.rbms[: self.n_layers if layers is None else layers]:
            v = rbm.hidden_probs(v)
        return v

    def down(self, v: torch.Tensor, *, from_layer: int, generator: Optional[torch.Generator] = None,
             stochastic: bool = False) -> torch.Tensor:
        """Pixel means ``[N, C, H, W]`` from the states ``v`` of layer ``from_layer`` (0 = pixels)
        through the directed generative weights; ``stochastic`` samples each intermediate layer."""
        for l in reversed(range(from_layer)):
            if stochastic:
                v = torch.bernoulli(v, generator=generator)
            v = self.generative_probs(l, v)
        return v.view(v.shape[0], *self.image_shape)

    def free_energy(self, v: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """F(v) ``[N]`` of RBM ``layer`` for its visible states ``v`` (images for layer 0)."""
        return self.rbms[layer].free_energy(v.flatten(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Top-layer hidden probabilities ``[N, hidden[-1]]``."""
        return self.up(x)

    @torch.no_grad()
    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Pixel means in [0, 1] from top-layer hidden states (deterministic down pass)."""
        return self.down(self.rbms[-1].visible_probs(h), from_layer=self.n_layers - 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic up pass to the top, then down to pixel means in [0, 1]."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """Squared error per example ``[N]`` of RBM ``layer``'s mean-field reconstruction of its
        input (the up pass of ``x``): ||v - p(v | p(h|v))||^2."""
        v = self.up(x, layer)
        rbm = self.rbms[layer]
        return (rbm.visible_probs(rbm.hidden_probs(v)) - v).pow(2).sum(1)

    # --- sampling --------------------------------------------------------------------------
    def on_fit_start(self, x: torch.Tensor, y=None) -> None:
        fill_chain_starts(self, x)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: Optional[torch.Generator] = None, burn_in: Optional[int] = None,
        thin: Optional[int] = None, chains: Optional[int] = None, start: Optional[str] = None,
    ) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1]: Gibbs chains in the top RBM, then the down
        pass (see the module docstring). Keyword arguments override the ``sample_*`` hyperparameters."""
        hp = self.hparams
        st = self._chain_setting(
            {"burn_in": burn_in, "thin": thin, "chains": chains, "start": start},
            {k: hp[f"sample_{k}"] for k in ("burn_in", "thin", "chains", "start")},
        )
        burn_in, thin, chains, start = st["burn_in"], st["thin"], st["chains"], st["start"]
        if start not in ("random", "data"):
            raise ValueError(f"start must be 'random' or 'data', got {start!r}")
        top, device = self.rbms[-1], self.chain_starts.device

        def init(k):
            if start == "data":
                p = self.up(draw_chain_starts(self, k, generator), self.n_layers - 1)
            else:
                p = torch.full((k, self.sizes[-2]), 0.5, device=device)
            return torch.bernoulli(p, generator=generator), p

        def step(state):
            h = torch.bernoulli(top.hidden_probs(state[0]), generator=generator)
            p = top.visible_probs(h)
            return torch.bernoulli(p, generator=generator), p

        def emit(state):
            return self.down(state[1], from_layer=self.n_layers - 1, generator=generator, stochastic=hp["down_pass"] == "sample")

        with evaluating(self):
            return markov_chain_samples(n, init, step, emit, chains=chains, burn_in=burn_in, thin=thin)

    # --- training --------------------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        opts = {
            f"rbm{l}": make_optimizer(
                torch.optim.SGD,
                [{"params": [rbm.weight], "weight_decay": h["weight_decay"]},
                 {"params": [rbm.visible_bias, rbm.hidden_bias], "weight_decay": 0.0}],
                lr=h["lr"], momentum=h["momentum"][0],
            )
            for l, rbm in enumerate(self.rbms)
        }
        if "updown_from_epoch" in h:
            weights = [rbm.weight for rbm in self.rbms] + list(self.gen_weights)
            biases = [b for rbm in self.rbms for b in (rbm.visible_bias, rbm.hidden_bias)]
            opts["updown"] = make_optimizer(
                torch.optim.SGD,
                [{"params": weights, "weight_decay": h["weight_decay"]}, {"params": biases, "weight_decay": 0.0}],
                lr=h["updown_lr"], momentum=h["updown_momentum"],
            )
        return opts

    def on_epoch_start(self, epoch: int, optimizers) -> None:
        """Momentum of the active layer: the first value for its first ``momentum_switch_epoch``
        epochs, then the second (a function of the epoch counter only)."""
        h = self.hparams
        if self.in_updown(epoch):
            return
        l = self.active_layer(epoch)
        local_epoch = epoch - l * h["epochs_per_layer"]
        m = h["momentum"][0] if local_epoch < h["momentum_switch_epoch"] else h["momentum"][1]
        for group in optimizers[f"rbm{l}"].param_groups:
            group["momentum"] = m

    def _negative_phase(self, l: int, h0: torch.Tensor, v0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_k, p(h|v_k)) for CD-k from the data, or from the persistent chains for PCD."""
        rbm, k = self.rbms[l], self.hparams["cd_k"]
        if self.hparams["method"] == "cd":
            h = torch.bernoulli(h0)
            for t in range(k):
                v = rbm.visible_probs(h)
                ph = rbm.hidden_probs(v)
                if t < k - 1:
                    h = torch.bernoulli(ph)
            return v, ph
        chains = getattr(self, f"pcd_visible{l}")
        if not bool(self.pcd_started[l]):
            idx = torch.arange(chains.shape[0], device=v0.device) % v0.shape[0]
            chains.copy_(torch.bernoulli(v0[idx]))
            self.pcd_started[l] = True
        v = chains
        for _ in range(k):
            v = torch.bernoulli(rbm.visible_probs(torch.bernoulli(rbm.hidden_probs(v))))
        chains.copy_(v)
        return v, rbm.hidden_probs(v)

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One CD (or PCD) update of the active layer's RBM only, or one up-down update of the
        whole net in a fine-tuning epoch. Labels are ignored."""
        if self.in_updown(epoch):
            return self._updown_step(x, optimizers["updown"])
        l = self.active_layer(epoch)
        rbm = self.rbms[l]
        with torch.no_grad():
            v0 = x.flatten(1)
            if self.hparams["input_mode"] == "binary":
                v0 = torch.bernoulli(v0)
            v0 = self.up(v0, l)
            h0 = rbm.hidden_probs(v0)
            vk, hk = self._negative_phase(l, h0, v0)
            n, m = v0.shape[0], vk.shape[0]
            # the CD estimate of d log p / d theta; the optimizer descends, so pass its negative
            rbm.weight.grad = -(h0.T @ v0 / n - hk.T @ vk / m)
            rbm.visible_bias.grad = -(v0.mean(0) - vk.mean(0))
            rbm.hidden_bias.grad = -(h0.mean(0) - hk.mean(0))
            recon = (rbm.visible_probs(h0) - v0).pow(2).sum(1).mean()
            fe_gap = (rbm.free_energy(v0).mean() - rbm.free_energy(vk).mean())
        optimizers[f"rbm{l}"].step()
        return {"layer": float(l), "recon": recon.item(), "fe_gap": fe_gap.item()}

    def _updown_step(self, x: torch.Tensor, optimizer) -> dict[str, float]:
        """One up-down (contrastive wake-sleep) update; see the module docstring."""
        L, top = self.n_layers, self.rbms[-1]
        with torch.no_grad():
            if not bool(self.updown_started):
                for l in range(L - 1):
                    self.gen_weights[l].copy_(self.rbms[l].weight)
                self.updown_started.fill_(True)
            v0 = x.flatten(1)
            if self.hparams["input_mode"] == "binary":
                v0 = torch.bernoulli(v0)
            n = v0.shape[0]
            # up (wake) pass: binary states of the hidden layers below the top RBM
            wake = [v0]
            for l in range(L - 1):
                wake.append(torch.bernoulli(self.rbms[l].hidden_probs(wake[-1])))
            # generative weights predict each layer's wake states from the layer above
            recon = torch.zeros(())
            for l in range(L - 1):
                err = _delta_rule(wake[l + 1], wake[l], self.gen_weights[l], self.rbms[l].visible_bias, transposed=False)
                if l == 0:
                    recon = err.pow(2).sum(1).mean()
            # the top RBM: CD-k from the up pass's states
            vt = wake[-1]
            h0 = top.hidden_probs(vt)
            h = torch.bernoulli(h0)
            for _ in range(self.hparams["updown_cd_k"]):
                pv = top.visible_probs(h)
                vk = torch.bernoulli(pv)
                hk = top.hidden_probs(vk)
                h = torch.bernoulli(hk)
            top.weight.grad = -(h0.T @ vt - hk.T @ vk) / n
            top.visible_bias.grad = -(vt.mean(0) - vk.mean(0))
            top.hidden_bias.grad = -(h0.mean(0) - hk.mean(0))
            fe_gap = top.free_energy(vt).mean() - top.free_energy(vk).mean()
            # down (sleep) pass from the top RBM's negative states; the pixels stay probabilities
            sleep = [None] * L
            sleep[L - 1] = vk
            for l in reversed(range(L - 1)):
                p = self.generative_probs(l, sleep[l + 1])  # untied by now: the generative weights G_l
                sleep[l] = p if l == 0 else torch.bernoulli(p)
            # recognition weights predict each layer's sleep states from the layer below
            for l in range(L - 1):
                _delta_rule(sleep[l], sleep[l + 1], self.rbms[l].weight, self.rbms[l].hidden_bias, transposed=True)
        optimizer.step()
        return {"layer": float(L), "recon": float(recon), "fe_gap": fe_gap.item()}


def _delta_rule(inputs: torch.Tensor, targets: torch.Tensor, weight: nn.Parameter, bias: nn.Parameter,
                *, transposed: bool) -> torch.Tensor:
    """Set ``weight.grad`` and ``bias.grad`` to the gradient of the mean Bernoulli negative
    log-likelihood of ``targets`` under ``sigmoid(inputs @ weight + bias)`` (``inputs @ weight.T``
    when ``transposed``: a recognition weight stored as [upper, lower]); returns the prediction
    error ``targets - prediction``. The delta rule of wake-sleep learning."""
    n = inputs.shape[0]
    err = targets - torch.sigmoid((inputs @ weight.T if transposed else inputs @ weight) + bias)
    weight.grad = -(err.T @ inputs if transposed else inputs.T @ err) / n
    bias.grad = -err.mean(0)
    return err
