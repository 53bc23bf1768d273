"""``evalkit eval ...``: a user's model under one benchmark's protocol (Parzen, sample quality,
semi-supervised, clustering, restoration, emotion, reconstruction, latent HMC). Registered on ``evalkit`` by :mod:`evalkit.cli`."""
from __future__ import annotations

import json
from typing import Any, Optional

import click

from .cli_common import NON_NEGATIVE, POSITIVE, check_device, kid_and_pr_options, random_init_option, set_threads, threads_and_progress_options
from .cli_common import friendly_errors as _friendly_errors
from .protocols.emotion import DEFAULTS as EMOTION
from .protocols.parzen import DEFAULTS as PARZEN
from .protocols.sample_quality import DEFAULTS as SAMPLE_QUALITY


def _load(spec: str, checkpoint: Optional[str], device: Optional[str], random_init: bool = False) -> Any:
    """The user's model (``--model`` / ``--checkpoint``) on ``device`` (default: CUDA when present);
    a name or factory without ``--checkpoint`` needs ``--random-init``."""
    from .checkpoints import load_model, require_weights
    from .devices import choose_device

    require_weights(spec, checkpoint, random_init)
    return load_model(spec, checkpoint, choose_device(device))


def _result(spec: str, checkpoint: Optional[str], loaded: Any, fields: dict, **extra: Any) -> dict:
    """What every ``evalkit eval`` command prints with ``--json``: the model, its checkpoint and
    its sha256, then the measurement's fields."""
    return {"model": spec, "checkpoint": checkpoint, "checkpoint_sha256": loaded.checkpoint_sha256, **extra, **fields}


@click.group(name="eval")
def eval_group():
    """Evaluate your own model under a benchmark's protocol."""


@eval_group.command(name="parzen")
@click.option("--model", "spec", required=True, help="Model spec: reference name, pkg.mod:factory, or a TorchScript / evalkit .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@random_init_option
@click.option("--dataset", default="mnist", show_default=True, help="Data set of the protocol (mnist, fashion-mnist, olivetti, digits).")
@click.option("--n-samples", type=POSITIVE, default=PARZEN["n_samples"], show_default=True, help="Samples drawn from the model (the Parzen kernel centres).")
@click.option("--valid-limit", type=NON_NEGATIVE, default=PARZEN["valid_limit"], show_default=True, help="First N validation images choose sigma (0: all).")
@click.option("--sigma", type=click.FloatRange(min=0, min_open=True), default=None, help="Fix sigma instead of cross-validating it.")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True, help="Seeds the samples (sample seed 1234 + seed, as the tables).")
@click.option("--device", default=None, callback=check_device, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@threads_and_progress_options
@_friendly_errors
def eval_parzen(spec, checkpoint, random_init, dataset, n_samples, valid_limit, sigma, seed, device, data_dir, as_json, threads, no_progress):
    """Gaussian Parzen log-likelihood of a user model (GAN paper protocol)."""
    set_threads(threads)
    import math

    from .protocols.parzen import evaluate_parzen

    loaded = _load(spec, checkpoint, device, random_init)
    protocol = {**PARZEN, "n_samples": n_samples, "valid_limit": valid_limit}
    if sigma is not None:
        protocol["sigma_grid"] = [float(math.log10(sigma))] * 2 + [1]
    m = evaluate_parzen(loaded.model, dataset=dataset, protocol=protocol, seed=seed, data_dir=data_dir, device=device, who=f"model {spec}",
                        progress=not no_progress).fields()
    out = _result(spec, checkpoint, loaded, m)
    if as_json:
        click.echo(json.dumps(out, indent=2, default=float))
    else:
        d = m["details"]
        click.echo(
            f"Parzen log-likelihood on {dataset} test ({d['n_test']} images), {d['n_samples']} samples: "
            f"{m['value']:.2f} ± {m['pm']:.2f} nats (sigma {d['sigma']:.4f} chosen on {d['n_valid']} validation images)"
        )


def _print_or_json(out: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(out, indent=2, default=float) if as_json else text)


@eval_group.command(name="semi-supervised")
@click.option("--model", "spec", required=True, help="Model spec offering predict_logits(x) -> [N, K]: reference name, pkg.mod:factory, or a .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@random_init_option
@click.option("--labels", "n_labels", type=NON_NEGATIVE, required=True, help="Number of labels the model was trained with (0: all); recorded with the result.")
@click.option("--label-seed", type=NON_NEGATIVE, default=0, show_default=True, help="Seed of the labelled subset the model was trained with (see `evalkit data subset`).")
@click.option("--dataset", default="mnist", show_default=True, help="Data set of the protocol (its test split is scored).")
@click.option("--device", default=None, callback=check_device, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@threads_and_progress_options
@_friendly_errors
def eval_semi(spec, checkpoint, random_init, n_labels, label_seed, dataset, device, data_dir, as_json, threads, no_progress):
    """Test error of a user classifier trained with N labels (AAE paper Table 2 protocol).

    The protocol's labelled subset is class-balanced and drawn from the training split
    by a seeded permutation: export its indices with `evalkit data subset` and train on
    those labels only; the test split is never used for training or model selection.
    """
    set_threads(threads)
    from .data import labelled_subset, load, subset_fingerprint
    from .protocols.semi_supervised import evaluate_classifier

    loaded = _load(spec, checkpoint, device, random_init)
    keep = labelled_subset(load(dataset, "train", data_dir=data_dir).labels, n_labels, label_seed)
    m = evaluate_classifier(loaded.model, dataset=dataset, protocol={}, data_dir=data_dir, device=device, who=f"model {spec}")
    m.details.update(n_labels=int(keep.size), labelled_subset=subset_fingerprint(keep), label_seed=label_seed)
    m = m.fields()
    out = _result(spec, checkpoint, loaded, m)
    d = m["details"]
    _print_or_json(
        out, as_json,
        f"test error on {dataset} ({d['n_errors']} errors): {m['value']:.2f}% (accuracy {d['accuracy']:.4f}; "
        f"mean per-class accuracy {d['mean_class_accuracy']:.4f}); protocol subset {d['labelled_subset']} of {d['n_labels']} labels, seed {label_seed}",
    )


@eval_group.command(name="clustering")
@click.option("--model", "spec", required=True, help="Model spec offering cluster_probs(x) -> [N, K] (softmax q(y|x)).")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@random_init_option
@click.option("--dataset", default="mnist", show_default=True, help="Data set of the protocol (its test split is scored).")
@click.option("--reference", type=click.Choice(["validation", "train"]), default="validation", show_default=True,
              help="Set whose most confident example labels each cluster (the paper: a held-out validation set).")
@click.option("--device", default=None, callback=check_device, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@threads_and_progress_options
@_friendly_errors
def eval_clustering(spec, checkpoint, random_init, dataset, reference, device, data_dir, as_json, threads, no_progress):
    """Unsupervised cluster-assignment error of a user clusterer (AAE paper Table 3 protocol)."""
    set_threads(threads)
    from .protocols.clustering import evaluate_clusterer

    loaded = _load(spec, checkpoint, device, random_init)
    m = evaluate_clusterer(loaded.model, dataset=dataset, protocol={"reference": reference}, data_dir=data_dir, device=device, who=f"model {spec}").fields()
    out = _result(spec, checkpoint, loaded, m)
    d = m["details"]
    _print_or_json(
        out, as_json,
        f"cluster-assignment error on {dataset} test: {m['value']:.2f}% ({d['n_clusters']} clusters, {d['n_clusters_used']} used; "
        f"labels from the {reference} set); beside it: Hungarian accuracy {d['hungarian_accuracy_pct']:.2f}%, NMI {d['nmi']:.4f}",
    )


@eval_group.command(name="restoration")
@click.option("--model", "spec", required=True, help="Model spec offering restore(y) -> x (degraded image in, restored image out, [0, 1]).")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@random_init_option
@click.option("--task", required=True, help="Degradation task: sr2, sr4, noise05, noise10, noise20, blur.")
@click.option("--dataset", default="set14", show_default=True, help="Test images: a restoration set (set14, set5, bsd68, cbsd68, kodak24, mcmaster, set12), 'natural' (the split's test half) or 'faces' (celeba test).")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True, help="Noise seed (image i uses seed * 100003 + i).")
@click.option("--channel", type=click.Choice(["rgb", "y"]), default="rgb", show_default=True, help="PSNR/SSIM on RGB, or on the luma (Y of YCbCr) channel as SR papers report.")
@click.option("--crop-border", type=NON_NEGATIVE, default=None, help="Border crop before PSNR/SSIM (default: the SR scale, else 0).")
@click.option("--device", default=None, callback=check_device, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@threads_and_progress_options
@_friendly_errors
def eval_restoration(spec, checkpoint, random_init, task, dataset, seed, channel, crop_border, device, data_dir, as_json, threads, no_progress):
    """PSNR / SSIM of a user restorer on a test set under a named degradation (the restoration table's protocol)."""
    set_threads(threads)
    from .baselines import DEGRADATIONS
    from .data import load
    from .devices import choose_device
    from .errors import EvalkitError
    from .protocols.restoration import GROUPS, evaluate_restoration, group_data

    if task not in DEGRADATIONS:
        raise EvalkitError(f"unknown task {task!r}; choose one of {', '.join(DEGRADATIONS)}")
    deg = DEGRADATIONS[task]
    if dataset in GROUPS:
        _, images, _, _ = group_data(dataset, data_dir)
    else:
        test = load(dataset, "test", data_dir=data_dir)
        images = [test.tensor(i) for i in range(len(test))] if hasattr(test, "files") else [test.tensor()[i : i + 1] for i in range(len(test))]
    loaded = _load(spec, checkpoint, device, random_init)
    if not callable(getattr(loaded.model, "restore", None)):
        raise EvalkitError(f"model {spec}: {type(loaded.model).__name__} has no restore(y) method, which this protocol needs")
    dev = choose_device(device)
    border = deg.scale if crop_border is None and deg.kind == "sr" else (crop_border or 0)
    m = evaluate_restoration(
        lambda y: loaded.model.restore(y.to(dev)), images, deg, seed=seed, channel=channel, crop_border=border, who=f"model {spec}",
        progress=not (no_progress or as_json),  # --json: nothing but the JSON document
    ).fields()
    out = _result(spec, checkpoint, loaded, m, dataset=dataset)
    d = m["details"]
    _print_or_json(
        out, as_json,
        f"{task} on {dataset} ({d['n_images']} images, {channel}, border {border}): PSNR {m['value']:.2f} dB, SSIM {d['ssim']:.4f}"
        + (f" (degraded input {d['input_psnr']:.2f} dB)" if d.get("input_psnr") is not None else ""),
    )


@eval_group.command(name="emotion")
@click.option("--model", "spec", required=True, help="Model spec offering predict_logits(x) -> [N, 7]: reference name, pkg.mod:factory, or a .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@random_init_option
@click.option("--dataset", type=click.Choice(sorted(EMOTION["size_by_dataset"])), default="ckplus48", show_default=True, help="Face data set of the emotion protocol.")
@click.option("--size", type=POSITIVE, default=None, help="Square input size (default: the emotion table's, 48 for ckplus48, 64 for jaffe).")
@click.option("--device", default=None, callback=check_device, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@threads_and_progress_options
@_friendly_errors
def eval_emotion(spec, checkpoint, random_init, dataset, size, device, data_dir, as_json, threads, no_progress):
    """Per-emotion accuracy of a user classifier on the test subjects (the emotion tables' protocol).

    Images are gray, centre-cropped and resized to SIZE, in [0, 1]; the test subjects are never
    in the training split (`evalkit.data.load(dataset, "train")` is what a model may train on).
    """
    set_threads(threads)
    from .protocols.emotion import emotion_split, score_classifier, working_size

    size = working_size(dataset, size)
    loaded = _load(spec, checkpoint, device, random_init)
    x, y, classes, fp = emotion_split(dataset, EMOTION["test_split"], size, data_dir)
    m = score_classifier(loaded.model, x, y, classes, f"model {spec}")
    m.data = {"dataset": dataset, "test": fp, "size": size}
    m = m.fields()
    out = _result(spec, checkpoint, loaded, m)
    per = ", ".join(f"{c} {v:.1f}" for c, v in m["details"]["per_class"].items())
    _print_or_json(out, as_json, f"{dataset} test subjects ({m['details']['n_test']} images, {size}x{size}): mean per-emotion accuracy "
                   f"{m['value']:.2f}% (overall {m['details']['overall_accuracy_pct']:.2f}%); {per}")


@eval_group.command(name="reconstruction")
@click.option("--model", "spec", required=True, help="Model spec offering restore(y) or reconstruct(x): reference name, pkg.mod:factory, or a .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@random_init_option
@click.option("--dataset", default="mnist", show_default=True,
              help="A paired face task (illumination-yale, pose-ckplus48, pose-jaffe: input -> target) or an image data set (target = input).")
@click.option("--split", default="test", show_default=True, help="Split whose images are reconstructed.")
@click.option("--size", type=POSITIVE, default=None, help="Face tasks: square working size (default: the task's, 64 or 48).")
@click.option("--limit", type=NON_NEGATIVE, default=0, show_default=True, help="Only the first N images (0: all).")
@click.option("--device", default=None, callback=check_device, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@threads_and_progress_options
@_friendly_errors
def eval_reconstruction(spec, checkpoint, random_init, dataset, split, size, limit, device, data_dir, as_json, threads, no_progress):
    """PSNR / SSIM / MSE of a model's reconstructions: an autoencoder on an image set (sparse,
    denoising, contractive AE, VAE, AAE ...) or an image-to-image model on a face task."""
    set_threads(threads)
    from .protocols.reconstruction import evaluate_reconstruction

    loaded = _load(spec, checkpoint, device, random_init)
    m = evaluate_reconstruction(loaded.model, dataset, split=split, data_dir=data_dir, size=size, limit=limit, who=f"model {spec}")
    out = _result(spec, checkpoint, loaded, m)
    d = m["details"]
    what = "input -> target pairs" if d["kind"] == "paired" else "images, target = input"
    _print_or_json(out, as_json, f"{dataset} {split} ({d['n_test']} {what}): PSNR {d['psnr']:.2f} dB, "
                   + (f"SSIM {d['ssim']:.3f}" if d["ssim"] is not None else "no SSIM (images under its 11x11 window)") + f", MSE {d['mse']:.5f}")


@eval_group.command(name="sample-quality")
@click.option("--model", "spec", required=True, help="Model spec offering sample(n, *, generator=None) -> [n, C, H, W] in [0, 1]: reference name, pkg.mod:factory, or a .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@random_init_option
@click.option("--dataset", default="mnist", show_default=True, help="Data set of the protocol (the sample-quality table's is mnist; digits works offline).")
@click.option("--n-samples", type=POSITIVE, default=SAMPLE_QUALITY["n_samples"], show_default=True, help="Samples drawn (seed 1234 + --seed).")
@click.option("--valid-limit", type=NON_NEGATIVE, default=SAMPLE_QUALITY["valid_limit"], show_default=True, help="Parzen: first N validation images choose sigma (0: all).")
@kid_and_pr_options(SAMPLE_QUALITY)
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True, help="Seeds the samples (1234 + seed) and the KID subsets.")
@click.option("--device", default=None, callback=check_device, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="evalkit cache root holding the feature networks (else $EVALKIT_CACHE, else ~/.cache/evalkit).")
@threads_and_progress_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly_errors
def eval_sample_quality(spec, checkpoint, random_init, dataset, n_samples, valid_limit, kid_subsets, kid_subset_size, k, seed, device,
                        data_dir, cache_dir, threads, no_progress, as_json):
    """Parzen log-likelihood, FD, KID, precision / recall and modes covered of a user model's samples
    (the sample-quality table's protocol and feature network: evalkit's LeNet of the data set, built
    and cached on first use; values are not comparable with Inception-based FID / KID)."""
    from .cli_compare import warnings_as_lines
    from .protocols.sample_quality import evaluate_sample_quality

    set_threads(threads)
    loaded = _load(spec, checkpoint, device, random_init)
    protocol = {**SAMPLE_QUALITY, "n_samples": n_samples, "valid_limit": valid_limit, "kid_subsets": kid_subsets,
                "kid_subset_size": kid_subset_size, "pr_k": k}
    with warnings_as_lines():
        m = evaluate_sample_quality(loaded.model, dataset=dataset, protocol=protocol, seed=seed, data_dir=data_dir, device=device,
                                    progress=not no_progress, who=f"model {spec}", cache_dir=cache_dir,
                                    log=lambda s: click.echo(s, err=True))
    f = m.fields()
    f.pop("samples", None)
    out = _result(spec, checkpoint, loaded, f, protocol=protocol)
    d = f["details"]
    lines = [
        f"sample quality of model {spec} on {dataset}: {d['n_samples']} samples against {d['n_real']} {protocol['test_split']} images",
        f"Parzen log-likelihood: {f['value']:.2f} ± {f['pm']:.2f} nats (± = standard error over {d['n_test']} test images; "
        f"sigma {d['sigma']:.4f} chosen on {d['n_valid']} validation images)",
        f"feature network: {d['feature_network']}",
        f"FD:  {d['fd']:.4f}",
        f"KID: {d['kid_mean']:.6f} ± {d['kid_std']:.6f} (± = std over {d['kid_subsets']} subsets of {d['kid_subset_size']}; "
        f"x1000: {d['kid_mean'] * 1000:.3f})",
        f"precision {d['precision']:.4f}, recall {d['recall']:.4f} (k = {d['k']})",
        f"modes covered: {d['modes_covered']} of {d['n_classes']} (KL from uniform {d['mode_kl']:.4f} nats)",
        f"note: {d['features_note']}",
    ] + ([f"note: {d['kid_note']}"] if d.get("kid_note") else [])
    _print_or_json(out, as_json, "\n".join(lines))


@eval_group.command(name="latent-hmc")
@click.option("--model", "spec", required=True, help="Model spec offering encode(theta [N, D]) -> z [N, d] and decode(z) -> theta: pkg.mod:factory, a reference name or a .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint; read with weights_only=True).")
@random_init_option
@click.option("--dim", "dim", type=POSITIVE, required=True, help="D, the dimension of θ of the banana posterior (2: the banana).")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True, help="Chain starts and sampler randomness.")
@threads_and_progress_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly_errors
def eval_latent_hmc(spec, checkpoint, random_init, dim, seed, threads, no_progress, as_json):
    """HMC in a user's latent space on the D-dimensional banana posterior (the latent-hmc table's protocol).

    The chain runs leapfrog on the pulled-back posterior in z and is corrected to the exact
    posterior by delayed acceptance (evalkit/hmc/latent.py); the value is bulk ESS per second,
    with acceptance, moment errors against a long θ-space HMC reference and R-hat beside it.
    """
    from .protocols.latent_hmc import DEFAULTS as LATENT_HMC
    from .protocols.latent_hmc import evaluate_user_latent

    set_threads(threads)
    loaded = _load(spec, checkpoint, "cpu", random_init)
    log = (lambda _: None) if no_progress or as_json else (lambda msg: click.echo(msg, err=True))
    m = evaluate_user_latent(loaded.model, settings={**LATENT_HMC, "dim": dim}, seed=seed, who=f"model {spec}", log=log).fields()
    out = _result(spec, checkpoint, loaded, m)
    d = m["details"]
    _print_or_json(out, as_json, f"latent HMC (corrected) in a {d['latent_dim']}-d latent space, D={dim}, seed {seed}: bulk ESS/s {m['value']:.2f} "
                   f"(ESS {d['ess']:.0f}, ESS/grad {d['ess_per_grad']:.4f}, acceptance {d['accept_rate']:.2f} = stage 1 {d['stage1_accept']:.2f} "
                   f"x stage 2 {d['stage2_accept']:.2f}, mean error {d['mean_err']:.3f}, cov error {d['cov_err']:.3f}, R-hat {d['rhat']:.3f})")
