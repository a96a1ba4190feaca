"""What a model knows of missing modalities, from its metadata: the blanks it was trained
with, whether it learnt to answer without one (modality dropout), and what a one-modality
answer is worth (the test split's ablation accuracies)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from service.model_store import ModelMetadata
from service.preprocessing import Blanks, declared_blanks
from service.serving.dataplane.items import Item, modalities
from service.serving.inference.classifier import Classifier
from service.serving.metrics import SINGLE_MODALITY_WITHOUT_DROPOUT

FULL = "image+text"


@dataclass(frozen=True)
class ModalitySupport:
    """A model's answer to "what is a one-modality request worth?"."""

    modality_dropout: float | None
    """The per-example probability of blanking each modality in training (None: the
    metadata does not say)."""
    accuracy: float | None
    """Test-split accuracy with both modalities."""
    image_only_accuracy: float | None
    """Test-split accuracy with the text blanked."""
    text_only_accuracy: float | None
    """Test-split accuracy with the image blanked."""

    @property
    def trained_with_dropout(self) -> bool:
        """Whether training blanked modalities, so that a blank is an input it knows."""
        return bool(self.modality_dropout)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def modality_support(metadata: ModelMetadata) -> ModalitySupport:
    """Read :class:`ModalitySupport` from ``metadata.training`` and ``metadata.metrics``."""
    ablation = metadata.metrics.get("ablation") or {}
    return ModalitySupport(
        modality_dropout=_number(metadata.training.get("modality_dropout")),
        accuracy=_number((metadata.metrics.get("test") or {}).get("accuracy")),
        image_only_accuracy=_number((ablation.get("image_only") or {}).get("accuracy")),
        text_only_accuracy=_number((ablation.get("text_only") or {}).get("accuracy")),
    )


@dataclass(frozen=True)
class _Known:
    support: ModalitySupport
    blanks: Blanks


# Read from a version's metadata once, not on every request (a version's metadata and
# image size never change); forgotten with the classifier.
_known: weakref.WeakKeyDictionary[Classifier, _Known] = weakref.WeakKeyDictionary()


def _known_of(classifier: Classifier) -> _Known:
    known = _known.get(classifier)
    if known is None:
        blanks = declared_blanks(classifier.metadata.preprocessing, classifier.image_size)
        blanks.image.flags.writeable = False  # shared by every request of the version
        known = _Known(modality_support(classifier.metadata), blanks)
        _known[classifier] = known
    return known


def blanks_of(classifier: Classifier) -> Blanks:
    """The blanks the classifier's metadata declares, at its image size."""
    return _known_of(classifier).blanks


def unsupported(classifier: Classifier, items: Sequence[Item]) -> int:
    """How many items miss a modality the classifier never learnt to do without."""
    if _known_of(classifier).support.trained_with_dropout:
        return 0
    return sum(1 for item in items if modalities(item) != FULL)


def count_unsupported(classifier: Classifier, items: Sequence[Item]) -> None:
    """Count the one-modality items answered by a model trained without modality dropout."""
    count = unsupported(classifier, items)
    if count:
        labels = (classifier.name, str(classifier.version))
        SINGLE_MODALITY_WITHOUT_DROPOUT.labels(*labels).inc(count)


def modality_warnings(classifier: Classifier, items: Sequence[Item]) -> list[str]:
    """The warnings a response carries about its items' missing modalities (none when
    every item has both, or the model was trained with modality dropout)."""
    count = unsupported(classifier, items)
    if not count:
        return []
    support = _known_of(classifier).support
    worth = ", ".join(
        f"{name} {value:.3f}"
        for name, value in (
            ("image-only", support.image_only_accuracy),
            ("text-only", support.text_only_accuracy),
        )
        if value is not None
    )
    return [
        f"{count} item(s) miss a modality, but {classifier.name} version "
        f"{classifier.version} was trained without modality dropout: the blank stands in "
        "for the missing one, and the answer may be less accurate"
        + (f" (test accuracy {worth})" if worth else "")
    ]
