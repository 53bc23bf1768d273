"""Registry of named data sets, ``load``, ``verify`` and ``describe``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from . import digits as _digits
from . import faces as _faces
from . import idx as _idx
from . import olivetti as _olivetti
from . import restoration as _restoration
from . import svhn as _svhn
from .core import DataError, ImageSet, _resolve, sha256_file
from .imagelist import ImageList
from .specs import DatasetSpec, FileSpec, manifest_digest

SPLITS = ("train", "valid", "test", "train-full")


# ----------------------------------------------------------------------------- sets
def _idx_loader(classes):
    def load(spec, split, directory, source, hashes):
        return _idx.load_idx_set(spec.name, split, directory, hashes, classes)
    return load


def _digits_loader(spec, split, directory, source, hashes):
    return _digits.load_digits_set(split, spec.name)


def _olivetti_loader(spec, split, directory, source, hashes):
    return _olivetti.load_olivetti_set(split, directory, source, hashes, spec.name)


def _svhn_loader(spec, split, directory, source, hashes):
    return _svhn.load_svhn_set(spec.name, split, directory, hashes, with_extra=_svhn.EXTRA in source)


_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/{}", "http://yann.lecun.com/exdb/mnist/{}")
_FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{}",)


def _files(table, url_patterns):
    return tuple(FileSpec(fn, (h,), tuple(u.format(fn) for u in url_patterns), size) for fn, h, size in table)


_MNIST_SPLIT_SIZES = {"train": 50000, "valid": 10000, "train-full": 60000, "test": 10000}

# SVHN (format 2, cropped 32x32 digits). SHA-256 and sizes: TFDS url_checksums/svhn_cropped.txt
# (the MD5s of torchvision's table are quoted in evalkit/data/svhn.py). Protocol, as for MNIST:
# valid = the last 10,000 of train_32x32 (DCGAN's "10,000 examples from the non-extra set"),
# train = the rest (63,257), train-full = all 73,257, test = test_32x32 only (26,032).
# ``svhn-extra`` is the same with extra_32x32 (531,131) appended to train and train-full (the
# "train (+extra)" setting docs/models.md §11 gives for the AAE / Kingma et al. SVHN runs); it shares the svhn/
# folder, so ``evalkit data fetch svhn`` never downloads the 1.3 GB extra file.
_SVHN_FILES = {
    fn: FileSpec(fn, (h,), (f"http://ufldl.stanford.edu/housenumbers/{fn}",), size)
    for fn, h, size in [
        (_svhn.TRAIN, "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8", 182040794),
        (_svhn.TEST, "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b", 64275384),
        (_svhn.EXTRA, "a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3", 1329278602),
    ]
}
_SVHN_COMMON = dict(
    splits=SPLITS, shape=_svhn.IMAGE_SHAPE, classes=tuple(_svhn.CLASSES), loader=_svhn_loader, subdir="svhn",
    source="Y. Netzer, T. Wang, A. Coates, A. Bissacco, B. Wu, A.Y. Ng, Reading Digits in Natural Images with "
           "Unsupervised Feature Learning, NIPS Workshop 2011; http://ufldl.stanford.edu/housenumbers/",
    licence="commonly stated (SVHN web page): non-commercial use only",
)

DATASETS: dict = {
    "digits": DatasetSpec(
        name="digits",
        description="scikit-learn's embedded 8x8 handwritten digits (UCI optdigits test set), 1797 images, values 0..16 scaled to 0..255",
        splits=SPLITS, shape=(1, 8, 8), classes=tuple(_digits.CLASSES), files=(),
        loader=_digits_loader,
        source="sklearn.datasets.load_digits (embedded in scikit-learn, offline)",
        licence="UCI ML Optical Recognition of Handwritten Digits; CC BY 4.0 (as distributed with scikit-learn, BSD-3)",
        split_sizes={"train": 1197, "valid": 300, "test": 300, "train-full": 1497},
    ),
    "mnist": DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits, 28x28 grayscale; train = first 50k of the official train set, valid = last 10k",
        splits=SPLITS, shape=(1, 28, 28), classes=tuple(_idx.MNIST_CLASSES),
        files=_files([
            ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
            ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
            ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
            ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        ], _MNIST_URLS),
        loader=_idx_loader(_idx.MNIST_CLASSES),
        source="Y. LeCun, C. Cortes, C.J.C. Burges (1998), http://yann.lecun.com/exdb/mnist/",
        licence="commonly stated: CC BY-SA 3.0",
        split_sizes=_MNIST_SPLIT_SIZES,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        description="Fashion-MNIST (Zalando) clothing images, 28x28 grayscale, 10 classes; train = first 50k, valid = last 10k",
        splits=SPLITS, shape=(1, 28, 28), classes=tuple(_idx.FASHION_CLASSES),
        files=_files([
            ("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
            ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
            ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        ], _FASHION_URLS),
        loader=_idx_loader(_idx.FASHION_CLASSES),
        source="Zalando Research (H. Xiao, K. Rasul, R. Vollgraf, 2017), https://github.com/zalandoresearch/fashion-mnist",
        licence="MIT",
        split_sizes=_MNIST_SPLIT_SIZES,
    ),
    "olivetti": DatasetSpec(
        name="olivetti",
        description="Olivetti/ORL faces, 400 images 64x64 grayscale of 40 subjects (label = subject); subject-disjoint splits 28/6/6 subjects",
        splits=SPLITS, shape=(1, 64, 64), classes=tuple(_olivetti.CLASSES),
        files=(
            FileSpec(_olivetti.MAT, (
                "b612fb967f2dc77c9c62d3e1266e0c73d5fca46a4b8906c18e454d41af987794",  # scikit-learn's figshare file
                "b1988d02c72fe5b8ee82b5ef3bb7982eafc74f1e1ff0ae0ade35061ad0af534d",  # MATLAB re-save (pixel-identical)
            ), ("https://ndownloader.figshare.com/files/5976027",)),
            FileSpec(_olivetti.PKZ, ("9dbc94bfe9fb4524eb42864d1c91bdf11f6752627cef8a1282a68c44d467dd36",), (), 1405394),
            FileSpec(_olivetti.NPY, ("ee4c0bdf23ebef66f534aaea556c84e3b798f30e7b53d5fd269533bd1d88b807",), (), 6553728),
            FileSpec(_olivetti.NPY_TARGET, ("6b5231638be0dbd85128e0f8684dc477f9e475b26f156714074b4f1f7853f942",), (), 3328),
        ),
        sources=_olivetti.SOURCES,
        loader=_olivetti_loader,
        source="AT&T Laboratories Cambridge ORL face database (1992-94); 64x64 version by Sam Roweis (as used by scikit-learn)",
        licence="commonly stated: free for research use with acknowledgement of AT&T Laboratories Cambridge",
        split_sizes={"train": 280, "valid": 60, "test": 60, "train-full": 340},
    ),
    "svhn": DatasetSpec(
        name="svhn",
        description="SVHN cropped house-number digits, 32x32 RGB, 10 classes; train = first 63,257 of train_32x32, "
                    "valid = its last 10,000, test = test_32x32",
        files=(_SVHN_FILES[_svhn.TRAIN], _SVHN_FILES[_svhn.TEST]),
        split_sizes={"train": 63257, "valid": 10000, "train-full": 73257, "test": 26032},
        **_SVHN_COMMON,
    ),
    "svhn-extra": DatasetSpec(
        name="svhn-extra",
        description="SVHN with extra_32x32 (531,131) added to train and train-full; valid and test as in svhn",
        files=tuple(_SVHN_FILES.values()),
        split_sizes={"train": 594388, "valid": 10000, "train-full": 604388, "test": 26032},
        **_SVHN_COMMON,
    ),
    # Folder sets (no download URL: the user copies the original files in; each set pinned by
    # its file names and one SHA-256 manifest digest over all its files, manifests.json). Splits, with the rules in the modules' docstrings:
    #   restoration test sets (restoration.py), ImageList, only split "test" = the whole set:
    #     bsd68 68, cbsd68 68 (same photos in colour), set5 5, set12 12, set14 14, kodak24 24,
    #     mcmaster 18. Training on them: restoration_split("natural") = train Kodak24 +
    #     McMaster (42) / test Set14 + Set5 minus its two crops of Set14 images (17).
    #   face sets (faces.py), ImageSet with meta (subject, file, ...), subject-disjoint:
    #     yale      subjects 9/3/3 by RandomState(0)      images 99/33/32, train-full 132
    #     ckplus48  subjects 80/19/19 class-stratified    images 681/153/147, train-full 834
    #     jaffe     subjects 6/2/2 by RandomState(0)      images 128/41/44, train-full 169
    #     celeba    file order (no identities known)      images 350/50/100, train-full 400
    **_restoration.SPECS,
    **_faces.SPECS,
}


def names() -> list:
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(DATASETS))
        raise DataError(f"Unknown data set {name!r}. Valid data sets: {valid}.") from None


# ----------------------------------------------------------------------------- messages
def _fetch_cmd(spec: DatasetSpec, root: Path, how: str) -> str:
    cmd = f"evalkit data fetch {spec.name}"
    return cmd + f" --data-dir {root}" if how.startswith("given explicitly") else cmd


def how_to_get(name: str, *, data_dir=None) -> str:
    """One line: the command that fetches data set ``name``, or where to copy its files by hand
    when it has no canonical download URL (``evalkit data verify`` prints it for a missing set)."""
    spec = get_spec(name)
    root, how = _resolve(data_dir)
    if any(f.urls for f in spec.files):
        return f"get it with: {_fetch_cmd(spec, root, how)}"
    return (f"no download URL (source: {spec.source}; licence: {spec.licence}): copy its original files into "
            f"{root / spec.dirname}/")


def _fix_lines(spec: DatasetSpec, root: Path, how: str) -> list:
    can_fetch = any(f.urls for f in spec.files)
    lines = []
    if not can_fetch:
        lines.append(f"About {spec.name!r}: {spec.description}. Source: {spec.source}. Licence: {spec.licence}.")
        lines.append("It has no canonical download URL, so evalkit cannot fetch it.")
    lines.append("To fix, either:")
    if can_fetch:
        lines.append(f"  - download it:  {_fetch_cmd(spec, root, how)}")
        lines.append(f"  - or copy the original files by hand into {root / spec.dirname}/")
    else:
        example = spec.files[0].filename if spec.files else "<file>"
        lines.append(f"  - copy its {len(spec.files)} original files, with their original names, into "
                     f"{root / spec.dirname}/ (e.g. {root / spec.dirname / example})")
    lines.append(f"  - or point --data-dir / EVALKIT_DATA at a directory that holds {spec.dirname}/ "
                 f"(e.g. EVALKIT_DATA=/path/to/data, with /path/to/data/{spec.dirname}/<files>)")
    return lines


def _missing_message(spec: DatasetSpec, root: Path, how: str, missing: Sequence[str]) -> str:
    d = root / spec.dirname
    groups = spec.source_groups
    if not d.is_dir():
        what = f"folder {d} does not exist (it should hold {len(groups[0])} file{'s' if len(groups[0]) > 1 else ''}: " \
               + ", ".join(_shorten(list(groups[0]))) + ")"
    else:
        what = ("missing file " if len(missing) == 1 else f"{len(missing)} missing files: ") + ", ".join(_shorten(missing))
    lines = [f"Data set {spec.name!r} is not available: {what}."]
    if len(groups) > 1:
        alts = " or ".join("(" + " + ".join(g) + ")" for g in groups)
        lines.append(f"  (any one of these is enough: {alts})")
    lines.append(f"Looked in: {d}")
    lines.append(f"Data directory: {root} -- {how}")
    lines += _fix_lines(spec, root, how)
    return "\n".join(lines)


def _shorten(names: list, keep: int = 5) -> list:
    return names if len(names) <= keep + 1 else names[:keep] + [f"... ({len(names) - keep} more)"]


def _corrupt_message(spec: DatasetSpec, root: Path, how: str, path: Path, fs: FileSpec, actual: str) -> str:
    exp = fs.sha256[0] if len(fs.sha256) == 1 else " or ".join(fs.sha256)
    lines = [f"Data set {spec.name!r}: file {path} is corrupt or not the expected version (SHA-256 mismatch).",
             f"  expected: {exp}",
             f"  actual:   {actual}",
             f"Data directory: {root} -- {how}",
             "To fix, either:"]
    if fs.urls:
        lines.append(f"  - re-download it (replaces the bad file):  {_fetch_cmd(spec, root, how)}")
    lines.append(f"  - or replace it by hand with a good copy of {fs.filename} in {path.parent}/")
    lines.append(f"  - or point --data-dir / EVALKIT_DATA at a directory that holds a good {spec.dirname}/")
    return "\n".join(lines)


def _manifest_message(spec: DatasetSpec, root: Path, how: str, d: Path, actual: str) -> str:
    return "\n".join([
        f"Data set {spec.name!r}: the {len(spec.files)} files in {d} are not the expected version "
        f"(SHA-256 mismatch of the set's manifest: some file's content differs).",
        f"  expected manifest: {spec.manifest}",
        f"  actual manifest:   {actual}",
        f"Data directory: {root} -- {how}",
        "To fix, either:",
        f"  - copy the set again from its source ({spec.source})",
        "  - or find the bad file with `sha256sum -c` against the checksums published with your copy of the set",
        f"  - or point --data-dir / EVALKIT_DATA at a directory that holds a good {spec.dirname}/",
    ])


# ----------------------------------------------------------------------------- load
def _check_split(spec: DatasetSpec, split: str) -> None:
    if split not in spec.splits:
        raise DataError(f"Data set {spec.name!r} has no split {split!r}. Valid splits: {', '.join(spec.splits)}.")


def _pick_source(spec: DatasetSpec, root: Path, how: str) -> tuple:
    """First complete source group, verified. Returns (directory, group, {filename: sha256})."""
    d = root / spec.dirname
    chosen = None
    for group in spec.source_groups:
        if all((d / fn).is_file() for fn in group):
            chosen = group
            break
    if chosen is None:
        first = spec.source_groups[0]
        missing = [fn for fn in first if not (d / fn).is_file()]
        raise DataError(_missing_message(spec, root, how, missing))
    hashes = {}
    for fn in chosen:
        fs = spec.file(fn)
        path = d / fn
        try:
            digest = sha256_file(path)
        except OSError as e:
            raise DataError(f"Data set {spec.name!r}: cannot read {path}: {e}\n"
                            f"Data directory: {root} -- {how}") from None
        if not fs.accepts(digest):
            raise DataError(_corrupt_message(spec, root, how, path, fs, digest))
        hashes[fn] = digest
    if spec.manifest and manifest_digest(hashes) != spec.manifest:
        raise DataError(_manifest_message(spec, root, how, d, manifest_digest(hashes)))
    return d, chosen, hashes


def load(name: str, split: str, *, data_dir=None) -> Union[ImageSet, ImageList]:
    """Load split ``split`` ("train", "valid", "test", "train-full") of data set ``name``.

    Returns an :class:`ImageSet`, or an :class:`ImageList` for the restoration test sets
    (images of different sizes; their only split is "test").

    Files are looked up in ``resolve_data_dir(data_dir)/<name>/`` and verified by SHA-256 (per
    file, or per set through its manifest digest for the folder sets; hashes are
    cached per path/size/mtime). Raises :class:`DataError` with an actionable message."""
    spec = get_spec(name)
    _check_split(spec, split)
    if spec.embedded:
        return spec.loader(spec, split, None, (), {})
    root, how = _resolve(data_dir)
    directory, group, hashes = _pick_source(spec, root, how)
    try:
        return spec.loader(spec, split, directory, group, hashes)
    except DataError as e:
        msg = str(e)
        if "Data directory:" not in msg:
            msg += f"\nData directory: {root} -- {how}"
        raise DataError(msg) from None


# ----------------------------------------------------------------------------- verify / describe
@dataclass(frozen=True)
class FileStatus:
    dataset: str
    file: str
    path: Path
    status: str  # "ok" | "missing" | "corrupt"
    expected: str  # canonical sha256 (accepted alternatives joined by " or ")
    actual: Optional[str]  # None when missing

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _file_status(spec: DatasetSpec, fs: FileSpec, d: Path) -> FileStatus:
    path = d / fs.filename
    expected = " or ".join(fs.sha256)
    if not path.is_file():
        return FileStatus(spec.name, fs.filename, path, "missing", expected, None)
    try:
        digest = sha256_file(path)
    except OSError:
        return FileStatus(spec.name, fs.filename, path, "corrupt", expected, None)
    return FileStatus(spec.name, fs.filename, path, "ok" if fs.accepts(digest) else "corrupt", expected, digest)


def verify(*, data_dir=None, names=None) -> list:
    """Status of every registered file (of ``names``, default all) under the data dir."""
    root, _ = _resolve(data_dir)
    out = []
    for spec in (get_spec(n) for n in (names if names is not None else list(DATASETS))):
        d = root / spec.dirname
        files = [_file_status(spec, fs, d) for fs in spec.files]
        out.extend(files)
        if spec.manifest and all(f.actual for f in files):
            actual = manifest_digest({f.file: f.actual for f in files})
            if actual != spec.manifest:
                out.append(FileStatus(spec.name, "(content manifest of all files)", d, "corrupt", spec.manifest, actual))
    return out


def dataset_status(name: str, *, data_dir=None) -> str:
    """"embedded", "ok" (a complete verified source is present), "corrupt" or "missing"."""
    spec = get_spec(name)
    if spec.embedded:
        return "embedded"
    root, how = _resolve(data_dir)
    try:
        _pick_source(spec, root, how)
        return "ok"
    except DataError as e:
        return "corrupt" if "mismatch" in str(e) or "cannot read" in str(e) else "missing"


def describe(*, data_dir=None, check: bool = True) -> list:
    """Registry info for ``evalkit list``: one dict per data set.

    Keys: name, description, splits, split_sizes, shape, classes, files, source, licence,
    directory, status ("embedded"/"ok"/"missing"/"corrupt"), present (bool). With
    ``check=False`` files are only tested for existence, not hashed."""
    root, _ = _resolve(data_dir)
    rows = []
    for spec in DATASETS.values():
        if check:
            status = dataset_status(spec.name, data_dir=root)
        elif spec.embedded:
            status = "embedded"
        else:
            d = root / spec.dirname
            status = "ok" if any(all((d / fn).is_file() for fn in g) for g in spec.source_groups) else "missing"
        rows.append({
            "name": spec.name,
            "description": spec.description,
            "splits": list(spec.splits),
            "split_sizes": dict(spec.split_sizes),
            "shape": tuple(spec.shape),
            "num_classes": len(spec.classes),
            "files": [f.filename for f in spec.files],
            "source": spec.source,
            "licence": spec.licence,
            "directory": None if spec.embedded else str(root / spec.dirname),
            "status": status,
            "present": status in ("ok", "embedded"),
        })
    return rows
