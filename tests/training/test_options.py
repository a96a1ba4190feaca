"""Option combinations that make no sense are refused before anything heavy loads."""

from __future__ import annotations

import pytest

from service.training.cli import main
from service.training.options import OptionError, apply_preset, check_combination


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"backbone": "small_cnn", "image_weights": "imagenet"}, "small_cnn has no pretrained"),
        ({"backbone": "vgg16", "freeze_backbone": True}, "would freeze random weights"),
        (
            {"backbone": "vgg16", "image_weights": "imagenet", "fine_tune_epochs": 2},
            "needs a frozen backbone first",
        ),
        (
            {"backbone": "vgg16", "image_weights": "w.h5", "freeze_backbone": True},
            None,
        ),
        (
            {
                "backbone": "vgg16",
                "image_weights": "imagenet",
                "freeze_backbone": True,
                "fine_tune_layers": 3,
            },
            "only with --fine-tune-epochs",
        ),
    ],
)
def test_combinations(kw: dict[str, object], message: str | None) -> None:
    args: dict[str, object] = {"image_weights": "none", "freeze_backbone": False, **kw}
    if message is None:
        check_combination(**args)  # type: ignore[arg-type]
        return
    with pytest.raises(OptionError, match=message):
        check_combination(**args)  # type: ignore[arg-type]


def test_seed_preset_is_the_original_design() -> None:
    out = apply_preset("seed", {"backbone": None, "image_weights": None})
    assert out["backbone"] == "vgg16" and out["image_size"] == (224, 224)
    assert out["image_weights"] == "imagenet" and out["freeze_backbone"] is True
    assert (out["text_encoder"], out["text_units"], out["fusion"], out["hidden_units"]) == (
        "lstm",
        128,
        "concat",
        256,
    )
    local = apply_preset("seed", {"image_weights": "/w/vgg16_notop.h5"})
    assert local["image_weights"] == "/w/vgg16_notop.h5"


def test_preset_refuses_a_conflicting_option() -> None:
    with pytest.raises(OptionError, match="--preset seed fixes --backbone to 'vgg16'"):
        apply_preset("seed", {"backbone": "small_cnn"})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backbone", "small_cnn", "--image-weights", "imagenet"], "small_cnn has no"),
        (["--preset", "seed", "--fusion", "bilinear"], "fixes --fusion"),
        (["--fine-tune-epochs", "3"], "needs a frozen backbone"),
    ],
)
def test_cli_refuses_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data", "unused.csv", *argv]) == 2
    assert message in capsys.readouterr().err
