"""Helpers shared by the ``evalkit`` command modules."""
from __future__ import annotations

import functools
import sys

import click


def friendly_errors(fn):
    """Print user-facing errors as one clear message (exit 2), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .data import DataError
        from .errors import EvalkitError

        try:
            return fn(*args, **kwargs)
        except (EvalkitError, DataError) as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted: results recorded so far are kept; run the same command again to resume.", fg="yellow", err=True)
            sys.exit(130)

    return wrapper
