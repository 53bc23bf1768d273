"""``evalkit compare A B``: sample-quality numbers of two image sets (folders, arrays or a model's
samples) in a named feature space. Registered on ``evalkit`` by :mod:`evalkit.cli`; the numbers
come from :func:`evalkit.compare.compare_images`."""
from __future__ import annotations

import contextlib
import json
import warnings
from typing import Optional

import click

from .cli_common import NON_NEGATIVE, POSITIVE, check_device, kid_and_pr_options, set_threads, threads_and_progress_options
from .cli_common import friendly_errors as _friendly_errors
from .protocols.sample_quality import DEFAULTS

#: Data set whose LeNet feature network ``--features lenet`` uses when ``--dataset`` is not given.
INFERRED_DATASET = {(1, 8, 8): "digits", (1, 28, 28): "mnist"}


def _read(text: str, checkpoint: Optional[str], n_samples: int, seed: int, device: Optional[str], progress: bool, which: str,
          random_init: bool = False):
    """(images float32 numpy [N, C, H, W], a one-line description, provenance dict) of a folder, array or model spec."""
    from .errors import EvalkitError
    from .image_files import is_image_source, read_images

    if is_image_source(text):
        if checkpoint:
            raise click.UsageError(f"--checkpoint-{which.lower()} is for a model spec; {which} = {text} is a folder or array")
        im = read_images(text)
        return im.images, f"{im.source}: {im.note}", {"source": im.source, "kind": im.kind}
    from .checkpoints import load_model, require_weights
    from .devices import choose_device
    from .evaluation import draw_samples

    try:
        require_weights(text, checkpoint, random_init and not checkpoint)
        loaded = load_model(text, checkpoint, choose_device(device))
    except EvalkitError as exc:
        raise EvalkitError(f"{which} = {text!r} is not a folder, a .npy / .npz file, or a loadable model spec ({exc})") from exc
    sample_seed = int(DEFAULTS["sample_seed"]) + seed
    x = draw_samples(loaded.model, n_samples, seed=sample_seed, device=choose_device(device, model=loaded.model),
                     progress=progress, who=f"model {text}")
    desc = f"{n_samples} samples of model {text} (sample seed {sample_seed})"
    return x.float().numpy(), desc, {"source": text, "kind": "model", "checkpoint": checkpoint,
                                     "checkpoint_sha256": loaded.checkpoint_sha256, "sample_seed": sample_seed}


@contextlib.contextmanager
def warnings_as_lines():
    """Python warnings raised inside (e.g. KID's reduced subset size) as one ``warning: ...`` line each
    on stderr, instead of a file path and a source line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)


@click.command(name="compare")
@click.argument("a")
@click.argument("b")
@click.option("--features", "kind", type=click.Choice(["lenet", "inception"]), default="lenet", show_default=True,
              help="Feature network: evalkit's LeNet of --dataset (built and cached on first use), or the FID "
                   "Inception-v3 (needs --feature-weights).")
@click.option("--dataset", default=None,
              help="lenet: the data set whose feature network embeds the images (default: digits for 1x8x8, mnist "
                   "for 1x28x28 images).")
@click.option("--feature-weights", type=click.Path(dir_okay=False), default=None,
              help="inception: the FID weights file pt_inception-2015-12-05-6726825d.pth (never downloaded).")
@click.option("--feature-weights-sha256", default=None,
              help="inception: the file's full SHA-256 to check (default: check the published 6726825d prefix).")
@click.option("--checkpoint-a", default=None, help="Weights for A when A is a model spec.")
@click.option("--checkpoint-b", default=None, help="Weights for B when B is a model spec.")
@click.option("--random-init", is_flag=True, help="Allow a model spec A or B without --checkpoint-a / -b (its factory's weights, random for a reference model).")
@click.option("--n-samples", type=POSITIVE, default=DEFAULTS["n_samples"], show_default=True,
              help="Samples drawn from a model spec.")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True,
              help="Seeds the KID subsets, the Parzen validation/test split of B and model sampling (1234 + seed).")
@kid_and_pr_options(DEFAULTS)
@click.option("--no-parzen", is_flag=True, help="Skip the Parzen log-likelihood.")
@click.option("--batch-size", type=POSITIVE, default=100, show_default=True, help="Images per feature-network call.")
@click.option("--device", default=None, callback=check_device, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory for building a LeNet feature network (else $EVALKIT_DATA, else the user cache).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="evalkit cache root holding the feature networks (else $EVALKIT_CACHE, else ~/.cache/evalkit).")
@threads_and_progress_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly_errors
def compare(a, b, kind, dataset, feature_weights, feature_weights_sha256, checkpoint_a, checkpoint_b, random_init, n_samples, seed,
            kid_subsets, kid_subset_size, k, no_parzen, batch_size, device, data_dir, cache_dir, threads, no_progress, as_json):
    """Compare image set A (samples) with B (real images): Parzen log-likelihood (same shape only),
    FD, KID and precision / recall, in a feature space the output names.

    A and B are each a folder of PNG / JPEG images, a .npy / .npz array (FILE.npz:KEY for one of
    several arrays; uint8, or float in [0, 1]), or a model spec (reference name, pkg.mod:factory,
    .pt file) whose samples are drawn. With the default LeNet features, values are not comparable
    with Inception-based FID; --features inception --feature-weights FILE gives FID's features.
    """
    from .compare import compare_images
    from .errors import EvalkitError

    set_threads(threads)
    if kind == "inception" and not feature_weights:
        raise click.UsageError("--features inception needs --feature-weights FILE (pt_inception-2015-12-05-6726825d.pth; "
                               "evalkit downloads nothing)")
    if kind == "lenet" and (feature_weights or feature_weights_sha256):
        raise click.UsageError("--feature-weights / --feature-weights-sha256 go with --features inception")
    progress = not no_progress
    xa, desc_a, prov_a = _read(a, checkpoint_a, n_samples, seed, device, progress, "A", random_init)
    xb, desc_b, prov_b = _read(b, checkpoint_b, n_samples, seed, device, progress, "B", random_init)
    info: dict = {}
    if kind == "inception":
        from .fid_inception import load_fid_inception

        net = load_fid_inception(feature_weights, sha256=feature_weights_sha256, device=device)
        info = {"weights": net.weights, "weights_sha256": net.sha256}
    else:
        from .features import load_feature_net

        if dataset is None:
            dataset = INFERRED_DATASET.get(tuple(xb.shape[1:]))
            if dataset is None:
                raise EvalkitError(f"B's images are {'x'.join(map(str, xb.shape[1:]))} ([C, H, W]); name the data set "
                                   f"whose LeNet feature network embeds them with --dataset, or use --features inception")
            info["dataset_inferred"] = f"{dataset} (from the {'x'.join(map(str, xb.shape[1:]))} images; --dataset to choose)"
        try:
            net = load_feature_net(dataset, cache_dir, data_dir, device=device, progress=progress)
        except EvalkitError:
            click.echo(f"no cached feature network for {dataset}: building it once (evalkit features build {dataset})", err=True)
            net = load_feature_net(dataset, cache_dir, data_dir, build_if_missing=True, device=device, progress=progress)
        info.update(dataset=dataset, key=net.key, test_accuracy=net.info.get("test_accuracy"))
    with warnings_as_lines():
        res = compare_images(xa, xb, net, seed=seed, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, k=k,
                             sigma_grid=DEFAULTS["sigma_grid"], parzen=not no_parzen, batch_size=batch_size, feature_info=info)
    res["a"].update(prov_a, description=desc_a)
    res["b"].update(prov_b, description=desc_b)
    if as_json:
        click.echo(json.dumps(res, indent=2, default=float))
        return
    kid = res["kid"]
    lines = [f"A (samples): {desc_a}", f"B (real):    {desc_b}",
             f"feature network: {res['feature_network']['description']}"]
    if res["feature_network"].get("dataset_inferred"):
        lines.append(f"  data set of the feature network: {res['feature_network']['dataset_inferred']}")
    p = res["parzen"]
    if p:
        lines.append(f"Parzen log-likelihood of B's test half: {p['mean']:.2f} ± {p['stderr']:.2f} nats (± = standard error "
                     f"over {p['n_test']} images; sigma {p['sigma']:.4f})")
        lines.append(f"  sigma selection: {p['sigma_selection']}")
    else:
        lines.append(f"Parzen: skipped ({res['parzen_skipped']})")
    lines += [
        f"FD:  {res['fd']:.4f}",
        f"KID: {kid['mean']:.6f} ± {kid['std']:.6f} (± = std over {kid['subsets']} subsets of {kid['subset_size']} "
        f"points; x1000: {kid['mean'] * 1000:.3f})",
        f"precision {res['precision']:.4f}, recall {res['recall']:.4f} (k = {res['k']})",
    ]
    lines += [f"note: {n}" for n in res["notes"]]
    click.echo("\n".join(lines))
