"""Worker for tests/test_distributed.py: the sample-quality protocol on a block-seeded stream
(``sample_stream = "blocks"``), run on whatever number of ranks it was started with; rank 0
writes the measurement as JSON. The digits feature network must already be in CACHE_DIR.

Usage: python tests/dist_sq_worker.py OUT.json CACHE_DIR
"""
from __future__ import annotations

import json
import sys

import torch

from evalkit import distributed as ekdist
from evalkit.protocols.sample_quality import evaluate_sample_quality

PROTOCOL = {"n_samples": 600, "valid_limit": 0, "kid_subsets": 10, "kid_subset_size": 100,
            "sample_stream": "blocks", "seed_block": 150}


class ToySampler:
    """8x8 'digits' from a seeded generator: a smooth random blob per sample, values in [0, 1]."""

    def sample(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        z = torch.rand(n, 1, 4, 4, generator=generator)
        return torch.nn.functional.interpolate(z, size=(8, 8), mode="bilinear", align_corners=False).clamp(0, 1)


def main() -> None:
    out, cache = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    rank, world = ekdist.init_from_env("cpu")
    m = evaluate_sample_quality(ToySampler(), dataset="digits", protocol=PROTOCOL, seed=0, device="cpu", progress=False,
                                cache_dir=cache, log=lambda _m: None)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"world": world, "value": m.value, "details": m.details}, f)
    ekdist.finish()


if __name__ == "__main__":
    main()
