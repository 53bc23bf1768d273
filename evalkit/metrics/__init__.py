"""evalkit.metrics: evaluation metrics (depends only on torch/numpy/scipy/sklearn/skimage).

* Parzen-window log-likelihood (Goodfellow et al. 2014 protocol):
  :func:`parzen_log_likelihood`, :class:`ParzenWindow`, :class:`ParzenResult`.
* Classification: :func:`error_rate`, :func:`confusion_matrix`,
  :func:`per_class_accuracy`.
* Clustering (Makhzani et al. AAE §6): :func:`cluster_assignment_error`,
  :func:`hungarian_accuracy`, :func:`nmi`.
* Image quality: :func:`psnr`, :func:`ssim`, :func:`rgb_to_y`.
* Sample quality on feature vectors: :func:`frechet_distance` (two feature
  matrices, or four moments), :func:`frechet_distance_from_features`, :func:`kernel_inception_distance`
  (:class:`KIDResult`), :func:`precision_recall` (:class:`PrecisionRecall`),
  :func:`mode_coverage` (:class:`ModeCoverage`).
"""

from .classification import PerClassAccuracy, confusion_matrix, error_rate, per_class_accuracy
from .clustering import ClusterResult, cluster_assignment_error, hungarian_accuracy, nmi
from .image_quality import psnr, rgb_to_y, ssim
from .parzen import DEFAULT_SIGMAS, ParzenResult, ParzenWindow, parzen_log_likelihood
from .sample_quality import (
    KIDResult,
    KIDSubsetSizeWarning,
    ModeCoverage,
    PrecisionRecall,
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
    mode_coverage,
    precision_recall,
)

__all__ = [
    "DEFAULT_SIGMAS",
    "ClusterResult",
    "KIDResult",
    "KIDSubsetSizeWarning",
    "ModeCoverage",
    "ParzenResult",
    "ParzenWindow",
    "PerClassAccuracy",
    "PrecisionRecall",
    "cluster_assignment_error",
    "confusion_matrix",
    "error_rate",
    "frechet_distance",
    "frechet_distance_from_features",
    "hungarian_accuracy",
    "kernel_inception_distance",
    "mode_coverage",
    "nmi",
    "parzen_log_likelihood",
    "per_class_accuracy",
    "precision_recall",
    "psnr",
    "rgb_to_y",
    "ssim",
]
