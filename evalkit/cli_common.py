"""Helpers shared by the ``evalkit`` command modules."""
from __future__ import annotations

import functools
import sys
import warnings

import click


def friendly_errors(fn):
    """Print user-facing errors as one clear message (exit 2), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .data import DataError
        from .errors import EvalkitError
        from .results import StoreWarning

        try:
            with warnings.catch_warnings():
                shown, said = warnings.showwarning, set()

                def one_line(message, category, filename, lineno, file=None, line=None):
                    # A skipped result-store line: one "warning:" line (where, what, how to fix), once per command.
                    if issubclass(category, StoreWarning):
                        if str(message) not in said:
                            said.add(str(message))
                            click.secho(f"warning: {message}", fg="yellow", err=True)
                    else:
                        shown(message, category, filename, lineno, file, line)

                warnings.showwarning = one_line
                return fn(*args, **kwargs)
        except (EvalkitError, DataError) as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted: results recorded so far are kept; run the same command again to resume.", fg="yellow", err=True)
            sys.exit(130)

    return wrapper


def check_device(ctx, param, value):
    """click callback: ``--device`` names a torch device this machine has (None: the default)."""
    if value is None:
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f"{value!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise click.BadParameter(f"{value!r}: this machine has no CUDA device (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise click.BadParameter(f"{value!r}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif dev.type not in ("cpu", "mps"):
        raise click.BadParameter(f"{value!r}: evalkit runs on cpu or cuda")
    return value


POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)


def random_init_option(f):
    """``--random-init``: allow ``--model`` without ``--checkpoint`` (refused otherwise, see
    :func:`evalkit.checkpoints.require_weights`)."""
    return click.option(
        "--random-init", is_flag=True,
        help="Score --model without --checkpoint, with the weights its factory builds (random for a reference model). "
             "Without this flag a model name or factory needs --checkpoint.",
    )(f)


def threads_and_progress_options(f):
    """``--threads`` and ``--no-progress``, as ``evalkit run`` has them (every ``eval`` command, ``compare``)."""
    f = click.option("--no-progress", is_flag=True, help="No progress bars.")(f)
    return click.option("--threads", type=POSITIVE, default=None, help="CPU threads for torch (default: torch's choice).")(f)


def kid_and_pr_options(defaults):
    """``--kid-subsets``, ``--kid-subset-size`` and ``--k`` with the defaults of the sample-quality
    protocol's table ``defaults`` (``eval sample-quality`` and ``compare`` share them)."""

    def deco(f):
        f = click.option("--k", "k", type=POSITIVE, default=defaults["pr_k"], show_default=True,
                         help="Precision / recall: k nearest neighbours.")(f)
        f = click.option("--kid-subset-size", type=click.IntRange(min=2), default=defaults["kid_subset_size"], show_default=True,
                         help="KID: points per subset (reduced, with a warning, to the smaller set's size).")(f)
        return click.option("--kid-subsets", type=POSITIVE, default=defaults["kid_subsets"], show_default=True,
                            help="KID: random subsets.")(f)

    return deco


def set_threads(threads) -> None:
    """Apply ``--threads`` (None: leave torch's choice)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))
