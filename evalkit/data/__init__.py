"""evalkit.data: named image data sets as uint8 ``ImageSet`` objects.

    from evalkit.data import load
    ds = load("mnist", "train")          # ImageSet, images uint8 [N, 1, 28, 28]
    x = ds.tensor()                      # float32 in [0, 1]
    kodak = load("kodak24", "test")      # ImageList: sizes differ; kodak.tensor(0) -> [1, 3, H, W]
    train, test, how = restoration_split("natural")   # leakage-free restoration protocol

Data root: ``data_dir`` argument, else ``$EVALKIT_DATA``, else ``~/.cache/evalkit/data``
(``$XDG_CACHE_HOME/evalkit/data``); one sub-folder per set with the original file names.
"""
from .core import DataError, ImageSet, clear_hash_cache, describe_data_dir, resolve_data_dir, sha256_file, to_float
from .imagelist import ImageList
from .registry import DATASETS, SPLITS, DatasetSpec, FileSpec, FileStatus, describe, get_spec, load, names, verify
from .splits import restoration_split
from .fetch import fetch
from .subsets import labelled_subset, masked_labels, subset_fingerprint
from .face_tasks import TASKS as FACE_TASKS, PairSet, pose_pairs, task_pairs, yaw_warp  # noqa: F401  (paired GASA face tasks)

__all__ = [
    "DATASETS", "SPLITS", "DataError", "DatasetSpec", "FileSpec", "FileStatus", "ImageList", "ImageSet",
    "clear_hash_cache", "describe", "describe_data_dir", "fetch", "get_spec", "load", "names",
    "resolve_data_dir", "restoration_split", "sha256_file", "to_float", "verify",
    "labelled_subset", "masked_labels", "subset_fingerprint",
]
