"""Simple baselines fitted and scored on the same split as the fused model.

They tell a user whether the fused network earns its keep: the majority class; the text
alone as TF-IDF of character n-grams with logistic regression; the image alone as
logistic regression on a small resized copy of the pixels.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.training.evaluate import classification_metrics

# The image baseline sees this many pixels a side; enough for colour and coarse shape.
THUMBNAIL_SIDE = 16
# Larger training sets are subsampled (seeded) for the baselines: they are a yardstick.
MAX_TRAIN_EXAMPLES = 20000


def thumbnails(images: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """Box-filter uint8 ``[N, H, W, 3]`` images down to uint8 ``[N, side*side*3]``."""
    n, h, w, c = images.shape
    rows = np.linspace(0, h, side + 1).astype(int)
    cols = np.linspace(0, w, side + 1).astype(int)
    out = np.empty((n, side, side, c), dtype=np.float32)
    for i in range(side):
        for j in range(side):
            block = images[:, rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
            out[:, i, j] = block.mean(axis=(1, 2), dtype=np.float32)
    return np.rint(out.reshape(n, -1)).astype(np.uint8)


def fit_and_score(
    train_texts: np.ndarray,
    train_thumbs: np.ndarray,
    y_train: np.ndarray,
    test_texts: np.ndarray,
    test_thumbs: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Test metrics of the three baselines (keys as in ``metrics.baselines``)."""
    if len(y_train) > MAX_TRAIN_EXAMPLES:
        keep = np.random.default_rng(seed).choice(len(y_train), MAX_TRAIN_EXAMPLES, replace=False)
        train_texts, train_thumbs, y_train = train_texts[keep], train_thumbs[keep], y_train[keep]
    majority = int(np.bincount(y_train, minlength=n_classes).argmax())
    out = {"majority": classification_metrics(y_test, np.full(len(y_test), majority), n_classes)}
    text = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=10.0),
    )
    text.fit([str(t) for t in train_texts], y_train)
    out["text_tfidf_logreg"] = classification_metrics(
        y_test, text.predict([str(t) for t in test_texts]), n_classes
    )
    image = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    image.fit(np.asarray(train_thumbs, np.float32), y_train)
    out["image_pixels_logreg"] = classification_metrics(
        y_test, image.predict(np.asarray(test_thumbs, np.float32)), n_classes
    )
    return out
