"""Central evaluation: the coordinator scores the global model on a labelled set it holds.

``central-eval-path`` names a MedMNIST-style ``.npz`` or an image folder, read and
validated by the same loaders as a hospital's data; its ``test`` split is used (the
``train`` split when there is no ``test``). Every round the global model's loss,
accuracy, AUC, sensitivity, specificity and confusion matrix on it go into the round
record.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.config import AppConfig
from common.data.schema import Split
from common.data.site import load_splits
from common.errors import ConfigError, DataError, invalid_value
from common.metrics import classification_metrics, confusion_matrix, cross_entropy

if TYPE_CHECKING:
    import keras

PREDICT_BATCH = 256


def central_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Cross-entropy, classification metrics and confusion matrix; NaN becomes None."""
    num_classes = probabilities.shape[1]
    scores = {
        "loss": cross_entropy(labels, probabilities),
        **classification_metrics(labels, probabilities),
    }
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), num_classes)
    return {
        **{key: (value if math.isfinite(value) else None) for key, value in scores.items()},
        "num-examples": int(labels.shape[0]),
        "confusion-matrix": matrix.astype(int).tolist(),
    }


def load_central_split(config: AppConfig) -> Split | None:
    """The coordinator's labelled set, or None when ``central-eval-path`` is empty."""
    location = config.federation.central_eval_path
    if not location:
        return None
    path = Path(location).expanduser()
    if not path.exists():
        raise ConfigError(
            invalid_value("central-eval-path", "an existing .npz file or image folder", location)
        )
    splits = load_splits(path, config.data.spec(), "central evaluation set")
    split = splits.get("test") or splits.get("train")
    if split is None or len(split) == 0:
        raise DataError(str(path), ["no labelled `test` or `train` images found"])
    return split


class CentralEvaluator:
    """Scores weights on one split with one Keras model, reused every round."""

    def __init__(self, model: keras.Model, split: Split) -> None:
        self.model = model
        self.split = split

    def __call__(self, weights: list[np.ndarray]) -> dict[str, Any]:
        self.model.set_weights(weights)
        probabilities = self.model.predict(self.split.images, batch_size=PREDICT_BATCH, verbose=0)
        return central_metrics(self.split.labels, np.asarray(probabilities, dtype=np.float64))
