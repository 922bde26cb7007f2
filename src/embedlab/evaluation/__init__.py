"""Scoring shared by every model: Fréchet distance on evaluator features, accuracy,
class-histogram KL, mode counts, confusion matrices and sample grids."""

from embedlab.evaluation.scores import (
    class_accuracy,
    class_histogram_kl,
    confusion_matrix,
    count_modes,
    predict,
)

__all__ = ["class_accuracy", "class_histogram_kl", "confusion_matrix", "count_modes", "predict"]
