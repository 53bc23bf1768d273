"""evalkit.hmc: the numerical core of the latent-space HMC study (issue 16).

* :mod:`.target`: the lecture's banana/biscuit/doughnut posterior (:class:`BananaPosterior`)
  and a Gaussian test target.
* :mod:`.samplers`: θ-space HMC with dual-averaging warm-up (:func:`hmc`), random-walk
  Metropolis (:func:`rwm`).
* :mod:`.autoencoders`: AE and VAE with a 2-d latent space trained on posterior samples.
* :mod:`.latent`: HMC in the latent space, uncorrected (the lecture) or corrected to the
  exact posterior by delayed acceptance on an augmented space (:func:`latent_hmc`).
* :mod:`.diagnostics`: bulk ESS (Geyer's initial monotone sequence), split R-hat, moment errors.
* :mod:`.reference`: long θ-space HMC reference; grid quadrature for D = 2.
* :mod:`.cell`: :func:`run_cell` (one sampler × D × seed → measurements).
* :mod:`.figures` (imported on its own; matplotlib Agg): latent trajectory, pair marginals.
"""
from .autoencoders import VAE, AutoEncoder, LatentMap, TrainReport, train_autoencoder, train_vae
from .cell import SAMPLERS, make_reference, run_cell, train_latent
from .diagnostics import ess, moment_errors, split_rhat
from .latent import PulledBackDensity, ThetaProposal, latent_hmc
from .reference import Reference, quadrature_moments, reference_hmc
from .samplers import ChainResult, DualAveraging, hmc, rwm
from .target import BananaPosterior, GaussianTarget, log_prob_and_grad

__all__ = [
    "SAMPLERS",
    "run_cell",
    "make_reference",
    "train_latent",
    "Reference",
    "reference_hmc",
    "quadrature_moments",
    "LatentMap",
    "AutoEncoder",
    "VAE",
    "TrainReport",
    "train_autoencoder",
    "train_vae",
    "PulledBackDensity",
    "ThetaProposal",
    "latent_hmc",
    "BananaPosterior",
    "GaussianTarget",
    "log_prob_and_grad",
    "ChainResult",
    "DualAveraging",
    "hmc",
    "rwm",
    "ess",
    "split_rhat",
    "moment_errors",
]
