"""Natural-image restoration test sets (as used by DnCNN / IRCNN / SRGAN papers) and the
leakage-free ``natural`` split for training restoration models.

Each set is one folder under the data root with the original file names; evalkit cannot
download them (there is no canonical URL), the user copies them in. Images differ in size,
so ``load(name, "test")`` returns an :class:`~evalkit.data.imagelist.ImageList` (uint8
``[C, H, W]`` per image, file order = sorted names). Every set is a test set: its only split
is ``test`` (the whole set).

=========  ==========  =====  =========================================================
name       folder      n      images
=========  ==========  =====  =========================================================
bsd68      BSD68/      68     gray 481x321 / 321x481 PNG (``test001..068``)
cbsd68     CBSD68/     68     the same 68 photos in colour (BSDS ids; sorted order = BSD68 order)
set5       Set5/       5      RGB BMP, 256..512 px (``*_GT.bmp``)
set12      Set12/      12     gray PNG 256x256 (7) / 512x512 (5)
set14      Set14/      14     BMP: 12 RGB, ``man.bmp`` RGB with equal channels, ``bridge.bmp`` gray
kodak24    Kodak24/    24     RGB PNG 768x512 / 512x768
mcmaster   McMaster/   18     RGB TIFF 500x500
=========  ==========  =====  =========================================================

Relations between the sets (checked on the pixels, see tests/test_data_images.py):

* BSD68 = luma(CBSD68): ``testNNN.png`` is the NNN-th CBSD68 file in sorted order.
* Set5 ``butterfly_GT`` is an exact 256x256 crop of Set14 ``monarch``; Set14 ``face`` is Set5
  ``head_GT`` without a 2-pixel border.
* Set12 shares photographs with Set14 (lena, barbara, peppers, man, monarch), as other
  crops / gray conversions / resizes.
* Kodak24 and McMaster share no photograph with any of the others: no near-identical 16x16
  thumbnail, and no crop (normalised cross-correlation of the central 32x32 block at 1/4
  scale stays below 0.95, while the Set5/Set14 crops above score above it).

``restoration_split("natural")``: train = Kodak24 + McMaster (42 colour photographs), test =
Set14 + the three Set5 images not contained in Set14 (baby, bird, woman): 17 images, gray
ones repeated to RGB. BSD68 / CBSD68 and Set12 are further clean test sets for a model
trained on it.
"""
from __future__ import annotations

from . import manifests as _manifests
from .core import DataError, make_fingerprint
from .imagefiles import content_key, read_folder
from .imagelist import ImageList
from .specs import DatasetSpec, FileSpec

_BSDS_SOURCE = ("68 test images of the Berkeley Segmentation Dataset (Martin et al., ICCV 2001) selected by Roth & "
                "Black (Fields of Experts); files as in cszn/DnCNN testsets/BSD68 and cszn/IRCNN testsets/CBSD68")
_BSDS_LICENCE = "BSDS: free for non-commercial research and education"
_TEST_PHOTOS_LICENCE = "research benchmarking only (third-party photographs, some of unclear copyright{})"

# name -> (folder, n images, channels, description, source, licence)
SETS = {
    "bsd68": ("BSD68", 68, 1, "BSD68: 68 gray 481x321 natural photographs (Berkeley test images), gray denoising test set",
              _BSDS_SOURCE, _BSDS_LICENCE),
    "cbsd68": ("CBSD68", 68, 3, "CBSD68: the same 68 Berkeley photographs as bsd68, in colour (481x321), colour denoising test set",
               _BSDS_SOURCE, _BSDS_LICENCE),
    "set5": ("Set5", 5, 3, "Set5: 5 RGB images (baby, bird, butterfly, head, woman), super-resolution test set",
             "Bevilacqua et al., BMVC 2012; files as in cszn/DnCNN testsets/Set5", _TEST_PHOTOS_LICENCE.format("")),
    "set12": ("Set12", 12, 1, "Set12: 12 classic gray test images 256x256 / 512x512 (cameraman, house, lena, barbara, ...), DnCNN's denoising test set",
              "Zhang et al., DnCNN (TIP 2017); files as in cszn/DnCNN testsets/Set12", _TEST_PHOTOS_LICENCE.format(", e.g. Lena")),
    "set14": ("Set14", 14, None, "Set14: 14 images (13 RGB, bridge gray), super-resolution test set",
              "Zeyde et al., Curves and Surfaces 2010; files as in cszn/DnCNN testsets/Set14", _TEST_PHOTOS_LICENCE.format(", e.g. Lena")),
    "kodak24": ("Kodak24", 24, 3, "Kodak24: Kodak Lossless True Color Image Suite, 24 RGB photographs 768x512",
                "Eastman Kodak; files as in cszn/IRCNN testsets/Set24", "commonly stated: released by Kodak for unrestricted use"),
    "mcmaster": ("McMaster", 18, 3, "McMaster: 18 RGB crops 500x500 (demosaicking / colour denoising test set)",
                 "Zhang, Wu, Buades, Li, J. Electronic Imaging 2011; files as in cszn/IRCNN testsets/Set18",
                 "research use (as distributed with the IRCNN test sets)"),
}

NATURAL_TRAIN = ("kodak24", "mcmaster")
NATURAL_TEST = ("set14", "set5")
# Kodak24 photographs held out of training and tested first: Kodak24 is released for
# unrestricted use, so the report's example figures (which show the first test image) can be
# committed, unlike Set14 / Set5 images.
KODAK_HELD_OUT = ("kodim23.png", "kodim19.png", "kodim08.png")
# Set5 images that are (parts of) Set14 images: left out of the natural test split
SET5_IN_SET14 = {"butterfly_GT.bmp": "an exact 256x256 crop of Set14 monarch.bmp",
                 "head_GT.bmp": "Set14 face.bmp plus a 2-pixel border"}


def _loader(spec, split, directory, source, hashes) -> ImageList:
    files = [f.filename for f in spec.files]
    images = read_folder(spec.name, directory, files, hashes)
    folder, n, channels = SETS[spec.name][:3]
    if len(images) != n:  # cannot happen with the registered file list; guards edits to it
        raise DataError(f"Data set {spec.name!r}: {len(images)} images in {directory}, expected {n}")
    if channels is not None:
        bad = [fn for fn, a in zip(files, images) if a.shape[0] != channels]
        if bad:
            raise DataError(f"Data set {spec.name!r}: {directory / bad[0]} has {images[files.index(bad[0])].shape[0]} "
                            f"channel(s), expected {channels}")
    fp = make_fingerprint(spec.name, split, [content_key(files, hashes)])
    return ImageList(spec.name, split, images, tuple(files), fp)


def _spec(name: str) -> DatasetSpec:
    folder, n, channels, description, source, licence = SETS[name]
    files = tuple(FileSpec(fn, ()) for fn in _manifests.files(folder))
    return DatasetSpec(
        name=name, description=description + " (sizes vary: ImageList)", splits=("test",), shape=(channels, None, None),
        classes=(), files=files, loader=_loader, source=source, licence=licence, split_sizes={"test": n}, subdir=folder,
        manifest=_manifests.manifest(folder),
    )


SPECS = {name: _spec(name) for name in SETS}
