"""Worker for tests/test_distributed.py, started with ``python -m torch.distributed.run``
(or plainly, as one process): runs the block-seeded Parzen stream and the sharded FD statistics
on whatever number of ranks it was started with, and rank 0 writes the numbers as JSON.

Usage: python tests/dist_worker.py OUT.json N_SAMPLES SEED_BLOCK SAMPLE_CHUNK
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch

from evalkit import distributed as ekdist
from evalkit.metrics.moments import FeatureMoments
from evalkit.protocols import parzen as pz


class ToySampler:
    """8x8 'digits' from a seeded generator: a smooth random blob per sample, values in [0, 1]."""

    def sample(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        z = torch.rand(n, 1, 4, 4, generator=generator)
        return torch.nn.functional.interpolate(z, size=(8, 8), mode="bilinear", align_corners=False).clamp(0, 1)


def main() -> None:
    out, n, block, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    rank, world = ekdist.init_from_env("cpu")
    from evalkit.metrics import parzen_stream

    # the accumulator's sample_chunk, as a test knob: results must not depend on it (beyond rounding)
    orig = parzen_stream.ParzenAccumulator.__init__

    def init(self, *a, **k):
        k["sample_chunk"] = chunk
        orig(self, *a, **k)

    parzen_stream.ParzenAccumulator.__init__ = init
    m = pz.evaluate_parzen(ToySampler(), dataset="digits", seed=0, device="cpu", progress=False,
                           protocol={"n_samples": n, "seed_block": block, "sample_stream": "blocks", "valid_limit": 0})
    # FD from sharded statistics: every rank draws its seed blocks, features = the flattened images
    fm = FeatureMoments(64)
    for _, x in ekdist_blocks(n, block, rank, world):
        fm.add(x.reshape(x.shape[0], -1))
    mu, cov = fm.merge_ranks().mean_cov()
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"world": world, "value": m.value, "pm": m.pm, "details": m.details, "fd_mu": mu.tolist(),
                       "fd_cov": cov.tolist(), "n_fd": fm.n}, f)
    ekdist.finish()


def ekdist_blocks(n: int, block: int, rank: int, world: int):
    from evalkit.evaluation import iter_seed_blocks

    n_blocks = -(-n // block)
    return iter_seed_blocks(ToySampler(), n, seed=4321, device=torch.device("cpu"),
                            blocks=ekdist.my_blocks(n_blocks, rank, world), block=block)


if __name__ == "__main__":
    main()
