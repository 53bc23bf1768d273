"""Reference PyTorch implementations of the model family evalkit benchmarks.

Models are looked up by registry name (``gan``, ``aae``, ...). Each module reads top to
bottom as one model family; all share :mod:`reference_models.training`.
"""
from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "gan": "reference_models.gan:GAN",
    "aae": "reference_models.aae:AAE",
    "aae_semi": "reference_models.aae_semi:SemiSupervisedAAE",
    "aae_cluster": "reference_models.aae_semi:ClusteringAAE",
    "aae_dimred": "reference_models.aae_semi:DimRedAAE",
    "aae_supervised": "reference_models.aae_supervised:SupervisedAAE",
    "sgan": "reference_models.sgan:SGAN",
    "improved_gan": "reference_models.improved_gan:ImprovedGAN",
    "mlp_classifier": "reference_models.classifier:MLPClassifier",
    "vae": "reference_models.vae:VAE",
    "restoration_gan": "reference_models.restoration_gan:RestorationGAN",
    "sparse_ae": "reference_models.autoencoders:SparseAE",
    "denoising_ae": "reference_models.autoencoders:DenoisingAE",
    "contractive_ae": "reference_models.autoencoders:ContractiveAE",
    "gsn": "reference_models.gsn:GSN",
    "dbn": "reference_models.dbn:DBN",
    "dcgan": "reference_models.dcgan:DCGAN",
    "vaegan": "reference_models.vaegan:VAEGAN",
    "lpaae": "reference_models.lpaae:LearnedPriorAAE",
    "gmmn_ae": "reference_models.gmmn_ae:GMMNAE",
    "gasa": "reference_models.gasa:GASA",
    "gan_ae": "reference_models.gasa:GANAutoencoder",
    "conv_ae": "reference_models.gasa:ConvAutoencoder",
    "emotion_cnn": "reference_models.emotion:EmotionCNN",
    "resnet34": "reference_models.emotion:ResNet34Classifier",
}


def model_class(name: str):
    """The class registered under ``name``; ``KeyError`` listing the known names otherwise."""
    if name not in REGISTRY:
        raise KeyError(f"unknown reference model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build(name: str, **kwargs):
    """Instantiate the reference model ``name`` with constructor ``kwargs``."""
    return model_class(name)(**kwargs)


def describe() -> list[dict]:
    out = []
    for name in sorted(REGISTRY):
        try:
            cls = model_class(name)
        except (ImportError, AttributeError) as e:  # a broken optional module must not hide the others
            out.append({"name": name, "class": REGISTRY[name], "description": f"unavailable: {e}", "capabilities": []})
            continue
        caps = [m for m in ("sample", "encode", "decode", "predict_logits", "cluster_probs", "restore") if hasattr(cls, m)]
        out.append({"name": name, "class": REGISTRY[name], "description": getattr(cls, "description", ""), "capabilities": caps})
    return out
