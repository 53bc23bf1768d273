"""Worker for tests/test_distributed.py's data-parallel training tests, started with
``python -m torch.distributed.run`` (or plainly, as one process): trains a tiny reference model on
the embedded digits with ``TrainConfig(ddp=...)`` and rank 0 writes the loss history and the
final weights as JSON.

Usage: python tests/ddp_worker.py OUT.json MODEL EPOCHS BATCH RUN_DIR
"""
from __future__ import annotations

import json
import sys

import torch

import reference_models
from evalkit import data as ekdata
from evalkit import distributed as ekdist
from reference_models import ddp
from reference_models.training import TrainConfig, fit

TINY = {
    # deterministic step (no noise, no batch statistics): data parallelism must follow one process
    "contractive_ae": {"image_shape": [1, 8, 8], "code_dim": 24, "lr": 3e-3, "sample_chains": 10, "sample_burn_in": 5,
                       "sample_thin": 2, "n_chain_starts": 20},
    # dropout and z noise: the ranks draw different noise, so only "trains and stays in sync" is asserted
    "gan": {"image_shape": [1, 8, 8], "g_hidden": [32], "d_units": 16, "optimizer": "adam"},
}


def main() -> None:
    out, name, epochs, batch, run_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    torch.set_num_threads(1)
    rank, world = ekdist.init_from_env("cpu")
    train = ekdata.load("digits", "train")
    torch.manual_seed(0)
    model = reference_models.build(name, **TINY[name])
    cfg = TrainConfig(epochs=epochs, batch_size=batch, seed=0, device="cpu", progress=False, ddp=world > 1)
    fit(model, train.tensor(), torch.as_tensor(train.labels), cfg, run_dir=run_dir)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"world": world, "history": model.train_state_.history,
                       "params": {k: v.double().flatten().tolist() for k, v in model.state_dict().items()}}, f)
    ddp.barrier()
    ekdist.finish()


if __name__ == "__main__":
    main()
