"""Face sets kept as original files in class / subject folders: Yale, CK+48, JAFFE, CelebA sample.

Every set is an :class:`~evalkit.data.core.ImageSet` (fixed size per set) with per-image
``meta`` arrays: ``file`` (path inside the set's folder) and, where the files tell it,
``subject`` and the set's own fields. None can be downloaded by evalkit (no canonical URL;
the licences forbid redistribution): the user copies the original files in.

Subject-disjoint splits (yale, ckplus48, jaffe); ``train-full`` = train + valid, and no
subject appears in two of train, valid, test. The subject ids found in the file names are
sorted and permuted by ``np.random.RandomState(0).permutation(n_subjects)`` (as for olivetti);

* yale, jaffe (every subject shows every class): the permutation is cut into train / valid /
  test blocks of fixed sizes (:func:`subject_split`);
* ckplus48 (subjects show different emotions): the permutation is walked and each subject
  goes to the split furthest below 70 / 15 / 15 % of every class
  (:func:`stratified_subject_split`), so that each emotion is in each split.

=========  =====================  ===============  =============================================
name       folder / files         subjects         split sizes (images; subjects)
=========  =====================  ===============  =============================================
yale       yalefaces/subjectNN.*  15               train 99 (9) / valid 33 (3) / test 32 (3)
ckplus48   ckplus48/<emotion>/    118              train 681 (80) / valid 153 (19) / test 147 (19)
jaffe      jaffe/<emotion>/       10               train 128 (6) / valid 41 (2) / test 44 (2)
celeba     celeba/img_89x109/     (not known)      train 350 / valid 50 / test 100 (file order)
=========  =====================  ===============  =============================================

* **yale** (Yale Face Database, 320x243 gray GIF, extension-less ``subjectNN.<condition>``):
  label = subject (classes ``subject01``..``subject15``), ``meta["condition"]`` one of
  :data:`YALE_CONDITIONS`. 164 images: ``subject01.centerlight`` is missing from the staged
  copy. As documented in the database's Readme, ``subject04.sad`` is a copy of
  ``subject04.normal``; besides, ``normal`` is pixel-identical to ``noglasses`` for subjects
  02, 03, 06, 07, 09, 12, 14 and to ``glasses`` for subject 08. :func:`condition_pairs`
  pairs images of one subject across conditions (e.g. side-lit -> centre-lit). Test subjects:
  01, 06, 13 (so the test split has only two centerlight images); valid: 04, 08, 12.
* **ckplus48** (CK+ 48x48 gray crops, ``S<subject>_<sequence>_<frame>.png``): label =
  emotion, classes = folder names sorted (anger, contempt, disgust, fear, happy, sadness,
  surprise): CK+ has *contempt* and **no neutral** class. The 3 images per sequence are its
  last frames (near-duplicates). ``meta``: ``subject`` (``S010``), ``sequence``
  (``S010_004``), ``frame`` (int). Images per class (anger, contempt, disgust, fear, happy,
  sadness, surprise): train 93/36/123/51/144/60/174, valid 21/9/27/12/33/12/39, test
  21/9/27/12/30/12/36.
* **jaffe** (JAFFE, 256x256 gray TIFF, ``<subject>.<EX><n>.<id>.tiff``, e.g.
  ``KA.AN1.39.tiff``): label = expression, classes = folder names sorted (angry, disgust,
  fear, happy, neutral, sad, surprise); the code in the name must agree with the folder.
  ``meta``: ``subject`` (``KA``). Test subjects: KA, NA; valid: KR, TM.
* **celeba**: the first 500 aligned CelebA images at half size (89x109 RGB JPEG, re-encoded
  by a third party; all are in CelebA's official *train* partition). No identities or
  attributes are available, so the split is by file order and the same person may appear on
  both sides; label 0 = ``face`` for all.
"""
from __future__ import annotations

import re

import numpy as np

from . import manifests as _manifests
from .core import DataError, ImageSet, make_fingerprint
from .imagefiles import content_key, read_folder
from .specs import DatasetSpec, FileSpec

SPLITS = ("train", "valid", "test", "train-full")
SEED = 0
YALE_CONDITIONS = ("centerlight", "glasses", "happy", "leftlight", "noglasses", "normal", "rightlight",
                   "sad", "sleepy", "surprised", "wink")
CK_CLASSES = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
JAFFE_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
JAFFE_CODES = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral", "SA": "sad", "SU": "surprise"}
CELEBA_SPLITS = {"train": slice(0, 350), "valid": slice(350, 400), "test": slice(400, 500), "train-full": slice(0, 400)}

_YALE_RE = re.compile(r"^(subject\d\d)\.([a-z]+)$")
_CK_RE = re.compile(r"^([a-z]+)/((S\d{3})_\d{3})_(\d{8})\.png$")
_JAFFE_RE = re.compile(r"^([a-z]+)/(([A-Z]{2})\.([A-Z]{2})\d\.\d+\.tiff)$")


def _bad_name(name: str, fn: str, pattern: str) -> DataError:
    return DataError(f"Data set {name!r}: unexpected file name {fn!r} (expected {pattern})")


def parse_yale(files) -> dict:
    subject, condition = [], []
    for fn in files:
        m = _YALE_RE.match(fn)
        if not m or m.group(2) not in YALE_CONDITIONS:
            raise _bad_name("yale", fn, f"subjectNN.<condition>, condition in {', '.join(YALE_CONDITIONS)}")
        subject.append(m.group(1))
        condition.append(m.group(2))
    return {"subject": np.array(subject), "condition": np.array(condition)}


def parse_ckplus(files) -> dict:
    label, subject, sequence, frame = [], [], [], []
    for fn in files:
        m = _CK_RE.match(fn)
        if not m or m.group(1) not in CK_CLASSES:
            raise _bad_name("ckplus48", fn, f"<emotion>/S<subject>_<sequence>_<frame>.png, emotion in {', '.join(CK_CLASSES)}")
        label.append(CK_CLASSES.index(m.group(1)))
        sequence.append(m.group(2))
        subject.append(m.group(3))
        frame.append(int(m.group(4)))
    return {"label": np.array(label, np.int64), "subject": np.array(subject), "sequence": np.array(sequence),
            "frame": np.array(frame, np.int64)}


def parse_jaffe(files) -> dict:
    label, subject = [], []
    for fn in files:
        m = _JAFFE_RE.match(fn)
        if not m or m.group(1) not in JAFFE_CLASSES or JAFFE_CODES.get(m.group(4)) != m.group(1):
            raise _bad_name("jaffe", fn, "<expression>/<subject>.<EX><n>.<id>.tiff with EX matching the folder "
                            f"({', '.join(f'{k}={v}' for k, v in JAFFE_CODES.items())})")
        label.append(JAFFE_CLASSES.index(m.group(1)))
        subject.append(m.group(3))
    return {"label": np.array(label, np.int64), "subject": np.array(subject)}


def subject_split(subjects, split: str, sizes: tuple) -> np.ndarray:
    """Sorted subject ids of ``split``: the sorted unique ``subjects`` permuted by
    ``RandomState(0)``, cut into blocks of ``sizes`` = (train, valid, test) subjects."""
    ids = np.unique(np.asarray(subjects))
    n_train, n_valid, n_test = sizes
    if n_train + n_valid + n_test != ids.size:
        raise DataError(f"subject split sizes {sizes} do not add up to the {ids.size} subjects found")
    perm = ids[np.random.RandomState(SEED).permutation(ids.size)]
    cuts = {"train": perm[:n_train], "valid": perm[n_train:n_train + n_valid],
            "test": perm[n_train + n_valid:], "train-full": perm[:n_train + n_valid]}
    return np.sort(cuts[split])


def stratified_subject_split(subjects, labels, split: str, fractions=(0.7, 0.15, 0.15)) -> np.ndarray:
    """Sorted subject ids of ``split``, subject-disjoint and stratified by class: walk the
    sorted unique ``subjects`` in the order of ``RandomState(0).permutation``, and give each
    subject to the split (train, valid, test; first wins ties) with the largest class-weighted
    deficit ``sum_c n_subject[c] * (fraction[s] * N[c] - assigned[s][c]) / N[c]``, where ``N[c]``
    is the number of images of class ``c``. Each class ends up split close to ``fractions``
    (a plain subject permutation left CK+48's test split with one fear sequence)."""
    subjects, labels = np.asarray(subjects), np.asarray(labels, np.int64)
    ids = np.unique(subjects)
    k = int(labels.max()) + 1 if labels.size else 0
    total = np.maximum(np.bincount(labels, minlength=k), 1).astype(np.float64)
    names = ("train", "valid", "test")
    assigned = {s: np.zeros(k) for s in names}
    owner = {}
    for sid in ids[np.random.RandomState(SEED).permutation(ids.size)]:
        n = np.bincount(labels[subjects == sid], minlength=k)
        deficit = [float(((f * total - assigned[s]) * n / total).sum()) for s, f in zip(names, fractions)]
        best = names[int(np.argmax(deficit))]
        assigned[best] += n
        owner[sid] = best
    want = ("train", "valid") if split == "train-full" else (split,)
    return np.sort(np.array([sid for sid in ids if owner[sid] in want], dtype=ids.dtype))


def condition_pairs(ds: ImageSet, source, target: str) -> tuple:
    """Index pairs ``(src, dst)`` into ``ds`` (a yale split): every image whose
    ``meta["condition"]`` is in ``source`` (a name or a tuple of names) paired with the image
    of the same subject in condition ``target``; subjects without a ``target`` image (Yale
    subject01 has no centerlight) contribute no pair. E.g. side-lit -> evenly lit:
    ``condition_pairs(ds, ("leftlight", "rightlight"), "centerlight")``."""
    source = (source,) if isinstance(source, str) else tuple(source)
    unknown = [c for c in (*source, target) if c not in YALE_CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; valid: {', '.join(YALE_CONDITIONS)}")
    cond, subj = ds.meta["condition"], ds.meta["subject"]
    dst_of = {s: i for i, (s, c) in enumerate(zip(subj.tolist(), cond.tolist())) if c == target}
    src = [i for i, (s, c) in enumerate(zip(subj.tolist(), cond.tolist())) if c in source and s in dst_of]
    return np.array(src, np.int64), np.array([dst_of[subj[i]] for i in src], np.int64)


# ----------------------------------------------------------------------------- sets
# name -> (folder, under, n images, shape, subject split sizes or None)
_LAYOUT = {
    "yale": ("yalefaces", "", 164, (1, 243, 320), (9, 3, 3)),
    "ckplus48": ("ckplus48", "", 981, (1, 48, 48), "stratified"),
    "jaffe": ("jaffe", "", 213, (1, 256, 256), (6, 2, 2)),
    "celeba": ("celeba", "img_89x109/", 500, (3, 109, 89), None),
}


def _read(spec, directory, hashes) -> tuple:
    files = [f.filename for f in spec.files]
    images = read_folder(spec.name, directory, files, hashes)
    n, shape = _LAYOUT[spec.name][2], _LAYOUT[spec.name][3]
    if len(images) != n:
        raise DataError(f"Data set {spec.name!r}: {len(images)} images in {directory}, expected {n}")
    for fn, a in zip(files, images):
        if a.shape != shape:
            raise DataError(f"Data set {spec.name!r}: {directory / fn} is {a.shape} (C, H, W), expected {shape}")
    return files, np.stack(images), content_key(files, hashes)


def _loader(spec, split, directory, source, hashes) -> ImageSet:
    files, images, content = _read(spec, directory, hashes)
    meta = {"file": np.array(files)}
    if spec.name == "celeba":
        idx = np.arange(len(files))[CELEBA_SPLITS[split]]
        labels = np.zeros(len(files), np.int64)
        rule = "file order 350/50/100"
    else:
        parsed = {"yale": parse_yale, "ckplus48": parse_ckplus, "jaffe": parse_jaffe}[spec.name](files)
        if spec.name == "yale":
            labels = np.searchsorted(np.array(spec.classes), parsed["subject"]).astype(np.int64)
        else:
            labels = parsed.pop("label")
        meta.update(parsed)
        sizes = _LAYOUT[spec.name][4]
        if sizes == "stratified":
            keep = stratified_subject_split(parsed["subject"], labels, split)
        else:
            keep = subject_split(parsed["subject"], split, sizes)
        idx = np.flatnonzero(np.isin(parsed["subject"], keep))
        rule = f"subjects RandomState({SEED}) {sizes}"
    fp = make_fingerprint(spec.name, split, [content], extra=rule)
    return ImageSet(spec.name, split, images[idx], labels[idx], list(spec.classes), fp, {k: v[idx] for k, v in meta.items()})


def _spec(name, description, classes, source, licence, split_sizes) -> DatasetSpec:
    folder, under, n, shape, _ = _LAYOUT[name]
    files = tuple(FileSpec(fn, ()) for fn in _manifests.files(folder, under))
    return DatasetSpec(name=name, description=description, splits=SPLITS, shape=shape, classes=tuple(classes),
                       files=files, loader=_loader, source=source, licence=licence, split_sizes=split_sizes,
                       subdir=folder, manifest=_manifests.manifest(folder, under))


_NONCOMMERCIAL = "non-commercial research only; redistribution not permitted"
SPECS = {
    "yale": _spec(
        "yale", "Yale Face Database: 164 gray 243x320 faces, 15 subjects x 11 conditions (lighting, expression, "
                "glasses; subject01.centerlight missing); label = subject, meta: condition; subject-disjoint 9/3/3",
        [f"subject{i:02d}" for i in range(1, 16)],
        "Belhumeur, Hespanha, Kriegman, Eigenfaces vs. Fisherfaces, TPAMI 1997; Yale University (original yalefaces/ files)",
        "free for research with acknowledgement and citation; not to be included in a publicly distributed database",
        {"train": 99, "valid": 33, "test": 32, "train-full": 132}),
    "ckplus48": _spec(
        "ckplus48", "CK+ 48x48 gray face crops, 981 images (last 3 frames of 327 sequences, 118 subjects), 7 emotions "
                    "incl. contempt, no neutral; subject-disjoint, class-stratified 80/19/19 subjects",
        CK_CLASSES,
        "Lucey et al., The Extended Cohn-Kanade Dataset (CK+), CVPR-W 2010; 48x48 crops as in the CK+48 folder of "
        "WuJie1010/Facial-Expression-Recognition.Pytorch",
        "CK+ user agreement: " + _NONCOMMERCIAL,
        {"train": 681, "valid": 153, "test": 147, "train-full": 834}),
    "jaffe": _spec(
        "jaffe", "JAFFE: 213 gray 256x256 faces of 10 Japanese female subjects, 7 expressions (incl. neutral); "
                 "subject-disjoint 6/2/2 subjects",
        JAFFE_CLASSES,
        "Lyons, Kamachi, Gyoba, Coding Facial Expressions with Gabor Wavelets, FG 1998 (original file names, "
        "sorted into expression folders)",
        "JAFFE agreement: " + _NONCOMMERCIAL + "; cite Lyons et al. 1998",
        {"train": 128, "valid": 41, "test": 44, "train-full": 169}),
    "celeba": _spec(
        "celeba", "CelebA sample: the first 500 aligned faces (000001-000500.jpg) at half size, 109x89 RGB; "
                  "unlabelled; train/valid/test by file order 350/50/100",
        ("face",),
        "Liu, Luo, Wang, Tang, Deep Learning Face Attributes in the Wild, ICCV 2015 (MMLAB, CUHK); 89x109 copies "
        "as in karthikSingireddy/cs389-hw4 celebA/",
        "CelebA agreement: " + _NONCOMMERCIAL + " (commercial use not allowed)",
        {"train": 350, "valid": 50, "test": 100, "train-full": 400}),
}
