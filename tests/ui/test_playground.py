"""The page in a real browser, against the service serving a really trained model: the
bars equal ``/v1/predict``, the card equals the artifact's files, errors come from the
service, every control is reachable by keyboard, nothing leaves the origin, and it loads
fast. Screenshots land in ``tests/artifacts/ui/``."""

from __future__ import annotations

import csv
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.browser import opened, screenshot
from tests.support.live import free_port, serving
from tests.support.servers import post_predict

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

LOAD_BUDGET_S = 1.0
"""The page, its card and both pictures drawn, from a cold browser context on localhost."""


@pytest.fixture(scope="module")
def served(trained_store: Path) -> Iterator[str]:
    """The tiny model, loaded and verified like at start-up, behind a real server."""
    settings = Settings(
        model_store=trained_store,
        model_name="tiny",
        port=free_port(),
        decode_threads=1,
        reload_poll_s=0,
        log_level="warning",
        access_log=False,
    )
    # The model loads, warms up and passes its golden check before the server starts.
    with serving(create_app(settings), settings) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def artifact(trained_store: Path) -> Path:
    return trained_store / "tiny" / "1"


@pytest.fixture(scope="module")
def example(demo_manifest: Path) -> tuple[Path, str]:
    """A demo image and its caption (the first row of the demo manifest)."""
    with demo_manifest.open(newline="") as file:
        row = next(csv.DictReader(file))
    return demo_manifest.parent / row["image"], row["text"]


def open_page(page: Page, url: str) -> float:
    """Open the page; seconds from navigation until the card (pictures included) is drawn,
    by the browser's clock."""
    start = time.perf_counter()
    page.goto(f"{url}/")
    page.wait_for_selector("#card[data-state=ready]")
    wall = time.perf_counter() - start
    assert page.get_attribute("body", "data-state") == "ready"
    ready_ms: float = page.evaluate(
        "performance.getEntriesByName('mmserve:card-ready')[0].startTime"
    )
    timing = page.evaluate(
        """(() => { const n = performance.getEntriesByType('navigation')[0];
        return [n.responseStart, n.responseEnd, n.domContentLoadedEventEnd, n.loadEventEnd]
          .map(Math.round).join('/') +
          ' ' + performance.getEntriesByType('resource')
          .map(e => `${e.name.split('/').pop()}:${Math.round(e.startTime)}`
                  + `+${Math.round(e.duration)}`).join(' ')})()"""
    )
    print(
        f"\npage {url}: card drawn {ready_ms:.0f} ms after navigation (test's clock: "
        f"{wall * 1000:.0f} ms); {timing}"
    )
    return ready_ms / 1000


def classify(page: Page, image: Path, text: str) -> None:
    page.set_input_files("#image", str(image))
    page.fill("#text", text)
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])")


def bars(page: Page) -> list[dict[str, Any]]:
    """What the bars show: label, exact and displayed value, and the fill's share."""
    rows: list[dict[str, Any]] = page.eval_on_selector_all(
        "#bars .bar",
        """rows => rows.map(row => ({
            label: row.dataset.label,
            exact: row.dataset.probability,
            shown: row.querySelector('.bar-value').textContent,
            share: row.querySelector('.bar-fill').getBoundingClientRect().width
                 / row.querySelector('.bar-track').getBoundingClientRect().width,
        }))""",
    )
    return rows


def test_the_bars_equal_the_api_and_nothing_leaves_the_origin(
    browser: Browser, served: str, example: tuple[Path, str]
) -> None:
    image, text = example
    # The browser's first navigation also starts its own network and page processes, which
    # a person's browser has running already: not the page's load time.
    with opened(browser) as (page, _traffic):
        open_page(page, served)
    with opened(browser, (1280, 800)) as (page, traffic):
        load_s = open_page(page, served)  # a fresh context: nothing cached
        classify(page, image, text)
        shown = bars(page)
        page.focus("#bars .bar")  # the exact value, as a keyboard user sees it
        screenshot(page, "playground-1280x800")
        answer_line = page.text_content("#answer") or ""

    body = post_predict(served, image, text).json()
    expected = body["predictions"]  # most probable first
    assert [b["label"] for b in shown] == [p["label"] for p in expected]
    for bar, prediction in zip(shown, expected, strict=True):
        assert float(bar["exact"]) == prediction["probability"]
        assert bar["shown"] == f"{prediction['probability']:.4f}"
        assert bar["share"] == pytest.approx(prediction["probability"], abs=0.01)
    top = expected[0]
    assert f"{top['label']} · probability {top['probability']:.4f}" in answer_line

    print(f"\npage load {load_s * 1000:.0f} ms; {len(traffic.requests)} requests recorded")
    assert load_s < LOAD_BUDGET_S
    assert traffic.foreign(served) == [], "third-party requests"
    assert any(url.endswith("/v1/predict") for url in traffic.requests)
    assert traffic.console_errors == []  # CSP violations and failed loads are errors


def test_a_file_that_is_no_image_shows_the_service_error(
    browser: Browser, served: str, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"these are notes, not a picture")
    refusal = post_predict(served, notes, "a caption")
    assert refusal.status_code == 400
    error = refusal.json()["error"]

    with opened(browser) as (page, _traffic):
        open_page(page, served)
        with page.expect_response(lambda r: r.url.endswith("/v1/predict")) as answer:
            classify(page, notes, "a caption")
        received = answer.value.json()["error"]  # what the service told the page
        assert answer.value.status == 400
        assert page.is_hidden("#result")
        assert page.get_attribute("#error", "data-code") == error["code"] == "invalid_image"
        assert received["code"] == error["code"]
        assert page.get_attribute("#error", "data-status") == "400"
        assert received["message"] in (page.text_content("#error-text") or "")
        screenshot(page, "error-1280x800")


def test_the_card_shows_the_artifact(browser: Browser, served: str, artifact: Path) -> None:
    meta = json.loads((artifact / "metadata.json").read_text())
    evaluation = json.loads((artifact / "evaluation.json").read_text())
    with opened(browser) as (page, _traffic):
        open_page(page, served)

        def fact(key: str) -> str | None:
            return page.text_content(f'#facts dd[data-fact="{key}"]')

        assert fact("name") == meta["name"]
        assert fact("version") == str(meta["version"])
        labels = page.eval_on_selector_all(
            '#facts dd[data-fact="labels"] li', "items => items.map(i => i.textContent)"
        )
        assert labels == meta["labels"]
        assert page.get_attribute("#facts time", "datetime") == meta["created_at"]
        total = sum(sum(per_label.values()) for per_label in meta["dataset"]["counts"].values())
        assert page.get_attribute("#facts [data-total]", "data-total") == str(total)

        cells = page.eval_on_selector_all(
            "#metrics td[data-metric]",
            "cells => cells.map(c => [c.dataset.metric, c.dataset.value, c.textContent])",
        )
        expected = {}
        for group in ("ablation", "baselines"):
            for name, values in meta["metrics"][group].items():
                for metric in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
                    expected[f"{group}.{name}.{metric}"] = values[metric]
        for metric, value in meta["metrics"]["test"].items():
            expected[f"test.{metric}"] = value
        assert {key for key, _, _ in cells} == set(expected)
        for key, exact, text in cells:
            assert float(exact) == expected[key], key
            assert text == f"{expected[key]:.4f}", key

        per_class = page.eval_on_selector_all(
            "#per-class tbody tr",
            "rows => rows.map(r => [r.dataset.row,"
            " [...r.querySelectorAll('td')].map(c => [c.dataset.metric, c.dataset.value])])",
        )
        assert [label for label, _ in per_class] == list(evaluation["per_class"])
        for label, values in per_class:
            for metric, exact in values:
                assert float(exact) == evaluation["per_class"][label][metric], (label, metric)

        training = meta["training"]
        for key in ("epochs", "batch_size", "learning_rate", "seed"):
            shown = page.text_content(f'#training dd[data-fact="training.{key}"]')
            assert shown == str(training[key]), key
        assert (
            page.text_content('#training dd[data-fact="training.model.fusion"]')
            == (training["model"]["fusion"])
        )

        for picture, file in (
            ("confusion", "confusion_matrix.png"),
            ("curves", "training_curves.png"),
        ):
            width = page.eval_on_selector(f"#{picture}", "img => img.naturalWidth")
            assert width == png_width(artifact / file), picture


def png_width(path: Path) -> int:
    width: int = struct.unpack(">I", path.read_bytes()[16:20])[0]
    return width


def test_phone_and_dark_screens(browser: Browser, served: str, example: tuple[Path, str]) -> None:
    image, text = example
    backgrounds = {}
    for name, viewport, scheme in (
        ("playground-390x844", (390, 844), "light"),
        ("playground-1280x800-dark", (1280, 800), "dark"),
    ):
        with opened(browser, viewport, color_scheme=scheme) as (page, traffic):
            open_page(page, served)
            classify(page, image, text)
            page.focus("#bars .bar")
            screenshot(page, name)
            # Nothing wider than the screen: the page scrolls down, never sideways.
            overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
            assert overflow <= 0, f"{name}: {overflow}px wider than the screen"
            backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert traffic.console_errors == []
    assert backgrounds["light"] != backgrounds["dark"]


# A radio group is one stop for Tab (arrow keys move within it), so it counts as one control.
NAME = """el => el.type === 'radio' ? 'radio group ' + el.name
  : el.id || el.dataset.label || el.getAttribute('href') || el.outerHTML"""

FOCUSABLE = f"""() => [...document.querySelectorAll(
    'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])')]
  .filter(el => !el.disabled && el.getClientRects().length > 0
                && getComputedStyle(el).visibility !== 'hidden')
  .map({NAME})"""

ACTIVE = f"""() => ({NAME})(document.activeElement)"""


def test_keyboard_alone_reaches_every_control(
    browser: Browser, served: str, example: tuple[Path, str]
) -> None:
    image, text = example
    with opened(browser) as (page, _traffic):
        open_page(page, served)
        # Choosing the file is the operating system's dialog; everything else is keys.
        page.set_input_files("#image", str(image))
        page.focus("body")
        tab_to(page, "text")
        page.keyboard.type(text)
        tab_to(page, "submit")
        page.keyboard.press("Enter")
        page.wait_for_selector("#result:not([hidden])")

        controls = page.evaluate(FOCUSABLE)
        labels = [bar["label"] for bar in bars(page)]
        assert {
            "image",
            "text",
            "radio group modality",
            "explain",
            "submit",
            "clear",
            *labels,
        } <= set(controls)
        reached = []
        page.focus("body")
        for _ in range(3 * len(controls)):
            page.keyboard.press("Tab")
            reached.append(page.evaluate(ACTIVE))
            if set(controls) <= set(reached):
                break
        assert set(controls) - set(reached) == set()
        # A bar shows its exact value when it has the keyboard's focus.
        page.focus("#bars .bar")
        assert page.is_visible("#bars .bar:focus .bar-exact")


def tab_to(page: Page, element_id: str, limit: int = 40) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == element_id:
            return
    raise AssertionError(f"Tab never reached #{element_id}")


def test_drop_and_paste_take_an_image(
    browser: Browser, served: str, example: tuple[Path, str]
) -> None:
    image, text = example
    data = list(image.read_bytes())
    with opened(browser) as (page, _traffic):
        open_page(page, served)
        for how in ("drop", "paste"):
            page.click("#clear")
            page.evaluate(
                """([how, bytes, name]) => {
                    const file = new File([new Uint8Array(bytes)], name, {type: 'image/jpeg'});
                    const data = new DataTransfer();
                    data.items.add(file);
                    const init = {dataTransfer: data, clipboardData: data, bubbles: true};
                    if (how === 'drop') {
                        document.getElementById('drop').dispatchEvent(new DragEvent('drop', init));
                    } else {
                        document.dispatchEvent(new ClipboardEvent('paste', init));
                    }
                }""",
                [how, data, image.name],
            )
            # The preview has no size until the browser has decoded the image, so wait
            # for it to show rather than looking once (a check that raced the decode).
            page.wait_for_selector("#preview", state="visible", timeout=10_000)
            assert page.get_attribute("#preview", "src").startswith("blob:"), how
            page.fill("#text", text)
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])")
            assert bars(page)[0]["label"] == post_predict(served, image, text).json()["label"]
