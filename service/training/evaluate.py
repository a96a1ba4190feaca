"""Test-split evaluation: metrics, per-class report, ablation, baselines, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1."""
    labels = list(range(n))
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f),
    }


def report(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    ablation_probs: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The full evaluation report stored as ``evaluation.json``."""
    n = len(labels)
    y_pred = probs.argmax(axis=1)
    per_class = classification_report(
        y_true,
        y_pred,
        labels=list(range(n)),
        target_names=labels,
        output_dict=True,
        zero_division=0,
    )
    return {
        "test": classification_metrics(y_true, y_pred, n),
        "per_class": {k: per_class[k] for k in labels},
        "confusion_matrix": {
            "labels": labels,
            "rows_are": "true label",
            "matrix": confusion_matrix(y_true, y_pred, labels=list(range(n))).tolist(),
        },
        "ablation": {
            name: classification_metrics(y_true, p.argmax(axis=1), n)
            for name, p in ablation_probs.items()
        },
        "examples": len(y_true),
    }


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path) -> None:
    """Save the confusion matrix as a PNG heat map with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix)
    side = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    if len(labels) <= 30:
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                colour = "white" if cm[i, j] > threshold else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour)
    fig.colorbar(im, ax=ax)
    ax.set_title("confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(
    history: dict[str, list[float]],
    best_epoch: int,
    path: Path,
    fine_tune_from: int | None = None,
) -> None:
    """Save loss and accuracy per epoch (train and validation) as a PNG.

    ``best_epoch`` (0-based) is the epoch whose weights early stopping kept; it is marked on
    both panels, as is the first epoch of the fine-tune phase when there was one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                label = ("validation " if prefix else "train ") + metric
                ax.plot(epochs[: len(values)], values, style, marker=".", label=label)
        ax.axvline(best_epoch + 1, color="tab:red", linestyle=":", label="kept (early stopping)")
        if fine_tune_from is not None:
            ax.axvline(fine_tune_from + 0.5, color="grey", linestyle="-.", label="fine-tune starts")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_table(report_: dict[str, Any], baselines: dict[str, dict[str, float]]) -> str:
    """A short text table for the end of training: the model, its ablation, the baselines."""
    rows = [("fused", report_["test"])]
    rows += [(name.replace("_", " "), m) for name, m in report_["ablation"].items()]
    rows += [(f"baseline: {name}", m) for name, m in baselines.items()]
    head = f"{'model':<32}{'accuracy':>10}{'precision':>11}{'recall':>9}{'f1':>8}"
    lines = [head, "-" * len(head)]
    for name, m in rows:
        lines.append(
            f"{name:<32}{m['accuracy']:>10.4f}{m['precision_macro']:>11.4f}"
            f"{m['recall_macro']:>9.4f}{m['f1_macro']:>8.4f}"
        )
    return "\n".join(lines)
