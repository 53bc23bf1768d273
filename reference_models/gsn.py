"""Deep generative stochastic network (GSN): Bengio, Thibodeau-Laufer, Alain & Yosinski 2014,
"Deep Generative Stochastic Networks Trainable by Backprop", the MNIST model of the GAN
paper's Parzen table ("Deep GSN", 214 +- 1.1 nats).

Follows the authors' Theano code (``yaoli/GSN``; [C run_gsn.py] = the defaults of its
argument parser, [C model.py] = ``experiment``), written anew in PyTorch:

* Layers [C run_gsn.py]: ``K = 2`` hidden layers of ``hidden_size = 1500`` units, ``act =
  'tanh'``; visible layer 784 sigmoid units [C model.py ``simple_update_layer``: ``i == 0`` ->
  ``T.nnet.sigmoid``]. One weight matrix per pair of adjacent layers, used upwards (``h W``)
  and downwards (``h W^T``): tied weights; one bias per layer, the visible one included
  [C model.py ``weights_list`` / ``bias_list``]. Weights ~ U(+-sqrt(6 / (n_in + n_out))),
  biases 0 [C model.py ``get_shared_weights`` / ``get_shared_bias``]; ``vis_init = 0``, so
  the visible bias starts at 0 too.
* One update of the network [C model.py ``update_layers``]: first the odd layers (h1), then
  the even ones (h0 = the visible layer, h2). A layer's pre-activation sums its neighbours'
  contributions (``h_{i+1} W_i^T + h_{i-1} W_{i-1} + b_i``; the top layer only the one
  below). Hidden layers get Gaussian noise of std ``hidden_add_noise_sigma = 2`` added both
  before and after the activation, except h1: ``noiseless_h1 = 1`` [C run_gsn.py; model.py
  ``add_gaussian_noise``]. The visible update gives the expectation p(x | h1) = sigmoid(.),
  which is recorded; the new visible state is x ~ Bernoulli(p) (``input_sampling = 1``)
  with salt-and-pepper noise on top (``input_salt_and_pepper = 0.4``: each pixel, with
  probability 0.4, set to 0 or 1 with equal odds) [C model.py ``salt_and_pepper``].
* Walkback [C model.py, "Building the graph"]: the hidden layers start at 0, the visible at
  the corrupted example salt_and_pepper(x); ``N = 4`` updates are unrolled and the cost is
  the sum over the 4 recorded expectations of the mean (over pixels and examples) binary
  cross-entropy with the CLEAN x (grey levels, not binarised: ``dataset = 'MNIST'``).
  Gradients flow through the hidden chain only: the Bernoulli draw cuts them (Theano's
  binomial is a comparison with a uniform, whose gradient is 0).
* Optimiser [C run_gsn.py + model.py]: batch 100, lr 0.25, momentum 0.5 in the form
  v <- 0.5 v + 0.5 g, p <- p - lr v (v starts at 0), lr multiplied by ``annealing =
  0.995`` after every epoch. No weight decay, no clipping.
* Samples for the Parzen estimate [C model.py ``sample_some_numbers(N=10000)``]: ONE chain
  of 10,000 consecutive updates of the noisy network (hidden noise on, the same
  corruption as in training), from [a digit, 0, 0] with the digit salt-and-peppered; the
  kept images are the visible expectations p(x | h1) of every update (no burn-in, no
  thinning). Defaults here: ``sample_chains=1, sample_burn_in=0, sample_thin=1``.

Deviations [A]:

* The authors' chain starts from the first TEST image (and keeps that image itself as
  sample 0); here it starts from a training image (``sample_start="data"``: one of
  ``n_chain_starts`` training images stored by ``on_fit_start``, picked with the sampling
  generator) and only model outputs are kept: a sample must not be a test image.
* The authors train on train + valid (60,000 images) for ``n_epoch = 1000`` epochs, one
  fixed shuffle; evalkit's protocol trains on train[0:50000] (the validation split chooses
  the Parzen sigma), reshuffles every epoch, and the benchmark spec sets the epoch budget
  (CPU: far fewer than 1000; see its footnote). The annealing is per epoch, as theirs, so a
  short run is the start of the long one.
* Cross-entropy from the logits (numerically stable form of the same cost); PyTorch RNG
  instead of Theano's MRG streams.

Everything random in :meth:`sample` comes from its ``generator``. Sizes are constructor
arguments, so tests build a tiny GSN.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import evaluating
from .autoencoders import salt_and_pepper
from .chains import draw_chain_starts, fill_chain_starts, markov_chain_samples, register_chain_starts

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "rectifier": torch.relu,
}


class EMAMomentumSGD(torch.optim.Optimizer):
    """The GSN code's update: v <- m v + (1 - m) g, p <- p - lr v, with v = 0 at the start
    (``torch.optim.SGD(momentum=m, dampening=m)`` differs at its first step, where v = g)."""

    def __init__(self, params, lr: float, momentum: float):
        if lr < 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr >= 0 and 0 <= momentum < 1; got {lr!r}, {momentum!r}")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            m = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                v = state["velocity"]
                v.mul_(m).add_(p.grad, alpha=1 - m)
                p.add_(v, alpha=-group["lr"])
        return loss


class GSN(nn.Module):
    registry_name = "gsn"
    description = "Deep generative stochastic network (Bengio et al. 2014, yaoli/GSN run_gsn.py): walkback, salt-and-pepper input noise, noisy tanh layers"

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        hidden_sizes: Sequence[int] = (1500, 1500),
        activation: str = "tanh",
        walkback: int = 4,
        input_salt_pepper: float = 0.4,
        hidden_noise_std: float = 2.0,
        noiseless_h1: bool = True,
        input_sampling: bool = True,
        lr: float = 0.25,
        momentum: float = 0.5,
        annealing: float = 0.995,
        sample_start: str = "data",
        sample_chains: int = 1,
        sample_burn_in: int = 0,
        sample_thin: int = 1,
        n_chain_starts: int = 100,
    ):
        super().__init__()
        self.hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items() if k not in ("self", "__class__")}
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if len(hidden_sizes) < 1 or any(int(s) < 1 for s in hidden_sizes):
            raise ValueError(f"hidden_sizes must list at least one positive width, got {list(hidden_sizes)!r}")
        if walkback < 1:
            raise ValueError(f"walkback must be at least 1, got {walkback!r}")
        if not 0 <= input_salt_pepper <= 1 or hidden_noise_std < 0:
            raise ValueError(f"need 0 <= input_salt_pepper <= 1 and hidden_noise_std >= 0; got {input_salt_pepper!r}, {hidden_noise_std!r}")
        if sample_start not in ("data", "noise"):
            raise ValueError(f"sample_start must be 'data' or 'noise', got {sample_start!r}")
        if lr < 0 or not 0 <= momentum < 1 or not 0 < annealing <= 1:
            raise ValueError(f"need lr >= 0, 0 <= momentum < 1, 0 < annealing <= 1; got {lr!r}, {momentum!r}, {annealing!r}")
        self.image_shape = tuple(image_shape)
        self.dim = math.prod(self.image_shape)
        self.sizes = [self.dim, *[int(s) for s in hidden_sizes]]  # h0 (visible), h1, ..., hK
        self.K = len(self.sizes) - 1
        self.act = ACTIVATIONS[activation]
        self.weights = nn.ParameterList()
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            r = math.sqrt(6.0 / (n_in + n_out))
            self.weights.append(nn.Parameter(torch.empty(n_in, n_out).uniform_(-r, r)))
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in self.sizes])
        register_chain_starts(self, n_chain_starts, self.dim)

    # --- the network's stochastic update ---------------------------------------------------
    def _layer(self, h: list, i: int, noisy: bool, generator: Optional[torch.Generator], visible_logits: list) -> None:
        """Recompute layer ``i`` of the state ``h`` in place (the authors' ``simple_update_layer``);
        the visible layer's logits are appended to ``visible_logits``."""
        W, b, K = self.weights, self.biases, self.K
        if i == 0:
            pre = h[1] @ W[0].T + b[0]
        elif i == K:
            pre = h[K - 1] @ W[K - 1] + b[K]
        else:
            pre = h[i + 1] @ W[i].T + h[i - 1] @ W[i - 1] + b[i]
        hp = self.hparams
        noise = noisy and i != 0 and not (i == 1 and hp["noiseless_h1"]) and hp["hidden_noise_std"] > 0
        std = hp["hidden_noise_std"]
        if noise:
            pre = pre + std * torch.randn(pre.shape, device=pre.device, generator=generator)
        if i == 0:
            visible_logits.append(pre)
            p = torch.sigmoid(pre)
            x = torch.bernoulli(p.detach(), generator=generator) if hp["input_sampling"] else p
            h[0] = salt_and_pepper(x, hp["input_salt_pepper"], generator)
            return
        out = self.act(pre)
        if noise:
            out = out + std * torch.randn(out.shape, device=out.device, generator=generator)
        h[i] = out

    def update(self, h: list, *, noisy: bool = True, generator: Optional[torch.Generator] = None) -> list[torch.Tensor]:
        """One update of the whole state ``h = [x, h1, ..., hK]`` (in place): odd layers, then
        even layers. Returns the visible logits it produced (one tensor)."""
        logits: list[torch.Tensor] = []
        for i in range(1, self.K + 1, 2):
            self._layer(h, i, noisy, generator, logits)
        for i in range(0, self.K + 1, 2):
            self._layer(h, i, noisy, generator, logits)
        return logits

    def initial_state(self, x_flat: torch.Tensor, generator: Optional[torch.Generator] = None) -> list[torch.Tensor]:
        """[salt_and_pepper(x), 0, ..., 0]: the walkback's and the sampling chain's start."""
        h = [salt_and_pepper(x_flat, self.hparams["input_salt_pepper"], generator)]
        return h + [x_flat.new_zeros(x_flat.shape[0], s) for s in self.sizes[1:]]

    def walkback_logits(self, x: torch.Tensor, *, noisy: bool = True, generator: Optional[torch.Generator] = None) -> list[torch.Tensor]:
        """The ``walkback`` visible logits (one per update) of the chain started at the
        corrupted ``x`` ([N, C, H, W] or flat [N, D])."""
        h = self.initial_state(x.flatten(1), generator)
        out: list[torch.Tensor] = []
        for _ in range(self.hparams["walkback"]):
            out += self.update(h, noisy=noisy, generator=generator)
        return out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The last walkback expectation p(x | h1) of the chain started at the corrupted
        ``x``, ``[N, C, H, W]`` in [0, 1] (the authors' reconstruction figure, noisy network)."""
        return torch.sigmoid(self.walkback_logits(x)[-1]).view(x.shape[0], *self.image_shape)

    # --- training ---------------------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        return {"gsn": EMAMomentumSGD(self.parameters(), lr=h["lr"], momentum=h["momentum"])}

    def on_fit_start(self, x: torch.Tensor, y=None) -> None:
        fill_chain_starts(self, x)

    def on_epoch_start(self, epoch: int, optimizers) -> None:
        """lr = lr_0 annealing^epoch (the authors anneal after every epoch)."""
        h = self.hparams
        for g in optimizers["gsn"].param_groups:
            g["lr"] = h["lr"] * h["annealing"] ** epoch

    def train_step(self, x, y=None, *, step: int, epoch: int, optimizers):
        """One step on the walkback cost: sum over the ``walkback`` expectations of the mean
        binary cross-entropy with the clean x. Labels are ignored."""
        flat = x.flatten(1)
        costs = [F.binary_cross_entropy_with_logits(lg, flat) for lg in self.walkback_logits(flat)]
        loss = torch.stack(costs).sum()
        opt = optimizers["gsn"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out = torch.stack([loss, costs[0], costs[-1]]).detach().tolist()
        return {"loss": out[0], "rec_first": out[1], "rec_last": out[2]}

    # --- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, n: int, *, generator: Optional[torch.Generator] = None, burn_in: Optional[int] = None,
        thin: Optional[int] = None, chains: Optional[int] = None, start: Optional[str] = None,
    ) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1]: the visible expectations p(x | h1) of
        consecutive updates of the noisy network (the authors' ``sample_some_numbers``), from
        ``sample_chains`` chains (default 1, as theirs) started at [salt_and_pepper(x0), 0, ...,
        0] with x0 a stored training image (``start="data"``) or uniform noise
        (``"noise"``), after ``sample_burn_in`` updates, every ``sample_thin``-th. Keyword
        arguments override the ``sample_*`` hyperparameters."""
        h = self.hparams
        start = h["sample_start"] if start is None else start
        if start not in ("data", "noise"):
            raise ValueError(f"start must be 'data' or 'noise', got {start!r}")
        device = self.biases[0].device

        def init(k):
            if start == "data":
                x0 = draw_chain_starts(self, k, generator)
            else:
                x0 = torch.rand(k, self.dim, device=device, generator=generator)
            return self.initial_state(x0, generator), x0

        def transition(state):
            hs = list(state[0])
            logits = self.update(hs, noisy=True, generator=generator)
            return hs, torch.sigmoid(logits[-1])

        with evaluating(self):
            out = markov_chain_samples(
                n, init, transition, lambda s: s[1],
                chains=h["sample_chains"] if chains is None else chains,
                burn_in=h["sample_burn_in"] if burn_in is None else burn_in,
                thin=h["sample_thin"] if thin is None else thin,
            )
        return out.view(n, *self.image_shape)
