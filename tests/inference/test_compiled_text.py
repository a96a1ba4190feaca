"""The text encoder compiled with XLA: the same probabilities as the ordinary graph at
every batch size, only the shapes compiled at warm-up used, and the golden check replaying
each compiled program."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import model_store
from service.errors import ArtifactError
from service.serving.inference.classifier import CompiledText, TFClassifier, token_rows
from service.serving.inference.golden import verify_golden
from service.serving.inference.loading import load_verified


def _small(encoder: str, size: tuple[int, int]) -> Any:
    """A small model configuration with the recurrent text ``encoder``."""
    from service.training.modeling import ModelConfig

    return ModelConfig(
        image_size=size,
        text_encoder=encoder,
        vocab_size=60,
        sequence_length=10,
        embedding_dim=8,
        text_units=8,
        fusion="bilinear",
        fusion_dim=8,
        hidden_units=16,
    )


@pytest.fixture(scope="module")
def lstm_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with ``lstm/1``: a small model with an LSTM text encoder, trained briefly
    (the suite's shared model uses the default n-gram encoder, which has nothing to
    compile)."""
    from service.training.demo_data import generate
    from tests.support.training import quick_train

    data = generate(tmp_path_factory.mktemp("lstm-data"), count=120, seed=4, side=32)
    store = tmp_path_factory.mktemp("lstm-store")
    quick_train(data, store, "lstm", _small("lstm", (24, 24)), epochs=2)
    return store


TEXTS = ["a red circle", "", "square", "green triangle on a blue ground, far too long a caption"]


def _inputs(n: int, size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, *size, 3)).astype(np.float32)
    texts = [TEXTS[i % len(TEXTS)] + (" unseen{i}" if i % 3 == 0 else "") for i in range(n)]
    return images, texts


def test_token_rows_are_the_next_power_of_two() -> None:
    assert [token_rows(n) for n in (1, 2, 3, 4, 5, 8, 9, 17, 32, 33)] == [
        1,
        2,
        4,
        4,
        8,
        8,
        16,
        32,
        32,
        64,
    ]


def test_every_batch_size_matches_the_ordinary_graph(
    lstm_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = model_store.resolve(lstm_store, "lstm")
    plain = TFClassifier(version)
    compiled = TFClassifier(version, compile_text=True)
    assert compiled._compiled is not None
    assert compiled.compiled_batch_sizes == ()  # nothing compiled before warm-up
    compiled.warm_up(range(1, 7))
    assert compiled.compiled_batch_sizes == (1, 2, 3, 5)  # programs of 1, 2, 4 and 8 rows

    calls: list[int] = []
    forward = compiled._compiled.forward

    def spy(image: Any, text: Any, rows: Any) -> Any:
        calls.append(int(rows))
        return forward(image, text, rows)

    monkeypatch.setattr(compiled._compiled, "forward", spy)
    for n in range(1, 12):
        images, texts = _inputs(n, compiled.image_size, seed=n)
        expected = plain.predict(images, texts)
        np.testing.assert_allclose(compiled.predict(images, texts), expected, atol=1e-5)
    # 1-8 ran a compiled program (padded to 1, 2, 4 or 8 rows); 9-11 the ordinary graph,
    # since no 16-row program was compiled at warm-up.
    assert calls == [1, 2, 4, 4, 8, 8, 8, 8]


@pytest.mark.parametrize("encoder", ["gru", "bilstm"])
def test_other_recurrent_encoders_split_and_match(encoder: str) -> None:
    import tensorflow as tf

    from service.training.modeling import build_model

    size = (16, 16)
    model = build_model(_small(encoder, size), 3, np.array(TEXTS * 5))
    split = CompiledText.of(model, size)
    assert split is not None
    for n in (1, 3, 8):
        images, texts = _inputs(n, size, seed=n)
        text_t = tf.constant(np.array(texts, dtype=object).reshape(-1, 1))
        expected = model({"image": tf.constant(images), "text": text_t}, training=False)
        got = split.forward(tf.constant(images), text_t, tf.constant(token_rows(n), tf.int32))
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)


def test_a_model_without_a_recurrent_encoder_is_left_alone(trained_store: Path) -> None:
    # The suite's shared model: the default n-gram text encoder.
    classifier = TFClassifier(model_store.resolve(trained_store, "tiny"), compile_text=True)
    assert classifier._compiled is None
    classifier.warm_up(range(1, 3))
    assert classifier.compiled_batch_sizes == ()


def test_loading_proves_every_compiled_program_with_the_golden_examples(
    lstm_store: Path,
) -> None:
    version = model_store.resolve(lstm_store, "lstm")
    classifier = load_verified(
        version, "/CPU:0", warm_up_batch=8, golden_tolerance=1e-4, compile_text=True
    )
    assert classifier.compiled_batch_sizes == (1, 2, 3, 5)
    report = verify_golden(classifier, version, 1e-4)
    assert report.batch_sizes == (1, 2, 3, 5)
    assert report.max_abs_diff <= 1e-4
    # Off: nothing compiled, the examples replayed one by one only.
    plain = load_verified(version, "/CPU:0", warm_up_batch=8, golden_tolerance=1e-4)
    assert plain.compiled_batch_sizes == ()
    assert verify_golden(plain, version, 1e-4).batch_sizes == ()


def test_a_compiled_program_that_drifts_fails_the_golden_check(
    lstm_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = model_store.resolve(lstm_store, "lstm")
    classifier = TFClassifier(version, compile_text=True)
    classifier.warm_up(range(1, 5))
    assert classifier._compiled is not None
    forward = classifier._compiled.forward

    def drifting(image: Any, text: Any, rows: Any) -> Any:
        out = forward(image, text, rows)
        return out if int(rows) < 4 else out * 0.9 + 0.1 / out.shape[-1]

    monkeypatch.setattr(classifier._compiled, "forward", drifting)
    with pytest.raises(ArtifactError, match="in a batch of 3 differs from training"):
        verify_golden(classifier, version, 1e-4)
