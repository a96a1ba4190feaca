"""The page's other states in a real browser, on a fake classifier: an API key kept in
memory only, the service's 413 and 503 answers, and the controls that light up when
``/v1/models`` describes several models, versions, labels, optional inputs and the
modality explanation (answers the registry and the explanation will give)."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.browser import opened
from tests.support.fakes import GREEN, FakeClassifier, image_bytes
from tests.support.live import free_port, serving

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FilePayload, Page, Route

KEY = "page-key-7f3a9c"
MAX_REQUEST_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fake classifier behind a real server that wants an API key."""
    settings = Settings(
        model_store=tmp_path_factory.mktemp("store"),
        model_name="fake",
        port=free_port(),
        decode_threads=1,
        api_keys=KEY,
        max_request_bytes=MAX_REQUEST_BYTES,
        log_level="warning",
        access_log=False,
    )
    with serving(create_app(settings, classifier=FakeClassifier()), settings) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def green(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "green.png"
    path.write_bytes(image_bytes(GREEN))
    return path


def enter_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")


def test_the_api_key_lives_in_memory_only(browser: Browser, served: str, green: Path) -> None:
    with opened(browser) as (page, traffic):
        sent_keys: list[str | None] = []
        page.on(
            "request",
            lambda r: sent_keys.append(r.headers.get("authorization")) if "/v1/" in r.url else None,
        )
        page.goto(f"{served}/")
        page.wait_for_selector("body[data-state=auth]")
        assert page.is_visible("#api-key")
        assert page.get_attribute("#api-key", "type") == "password"

        enter_key(page, "wrong-key")
        page.wait_for_selector("#error:not([hidden])")
        assert page.get_attribute("#error", "data-status") == "401"

        enter_key(page, KEY)
        page.wait_for_selector("#card[data-state=ready]")
        page.set_input_files("#image", str(green))
        page.fill("#text", "green")
        page.click("#submit")
        page.wait_for_selector("#result:not([hidden])")
        assert page.get_attribute("#bars .bar", "data-label") == "green"

        # Nowhere but in the script's memory: not the address, storage, cookies or the DOM.
        assert KEY not in page.url
        assert page.evaluate("localStorage.length + sessionStorage.length") == 0
        assert page.context.cookies() == []
        assert page.input_value("#api-key") == ""
        assert KEY not in page.content()
        assert f"Bearer {KEY}" in sent_keys  # and yet every call after it carried it
        assert sent_keys[-1] == f"Bearer {KEY}"
        assert traffic.foreign(served) == []


def noise_png(side: int) -> bytes:
    """A PNG that compresses badly, so it is larger than the request limit."""
    rng = random.Random(5)
    image = Image.frombytes(
        "RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side * side * 3))
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def open_with_key(page: Page, url: str) -> None:
    page.goto(f"{url}/")
    page.wait_for_selector("body[data-state=auth]")
    enter_key(page, KEY)
    page.wait_for_selector("#card[data-state=ready]")


def test_too_large_and_busy_answers_are_explained(
    browser: Browser, served: str, green: Path, tmp_path: Path
) -> None:
    large = tmp_path / "large.png"
    large.write_bytes(noise_png(200))
    assert large.stat().st_size > MAX_REQUEST_BYTES
    with opened(browser) as (page, _traffic):
        open_with_key(page, served)
        page.set_input_files("#image", str(large))
        page.click("#submit")
        page.wait_for_selector("#error:not([hidden])")
        assert page.get_attribute("#error", "data-status") == "413"
        assert (page.text_content("#error-text") or "").startswith("Too large (413)")

        # A 503 as the service sends it when its queue is full (not reproducible on demand).
        busy = {"error": {"code": "queue_full", "message": "the queue is full"}}
        page.route(
            "**/v1/predict",
            lambda route: route.fulfill(status=503, json=busy, headers={"Retry-After": "7"}),
        )
        page.set_input_files("#image", str(green))
        page.click("#submit")
        page.wait_for_selector("#error[data-status='503']")
        assert "the queue is full" in (page.text_content("#error-text") or "")
        assert "Try again in 7 s" in (page.text_content("#error-text") or "")
        page.unroute("**/v1/predict")
        page.click("#retry")
        page.wait_for_selector("#result:not([hidden])")
        assert page.is_hidden("#error")


def describe(name: str, version: int, **more: Any) -> dict[str, Any]:
    """A model description as ``/v1/models`` gives it (plus what later versions add)."""
    spec = {"dtype": "float32", "shape": [-1, 8, 8, 3], "description": ""}
    return {
        "name": name,
        "version": version,
        "labels": ["red", "green", "blue"],
        "device": "/CPU:0",
        "inputs": [{"name": "image", **spec}, {"name": "text", **spec}],
        "outputs": [],
        "metrics": {"test": {"accuracy": 0.5}},
        "created_at": "2024-05-01T12:00:00+00:00",
        "framework": {},
        **more,
    }


def test_several_models_versions_and_options_light_up(browser: Browser, served: str) -> None:
    optional = [
        {
            "name": "image",
            "dtype": "float32",
            "shape": [-1, 8, 8, 3],
            "description": "",
            "optional": True,
        },
        {"name": "text", "dtype": "string", "shape": [-1], "description": "", "optional": True},
    ]
    listing = {
        "models": [
            describe("fake", 3),
            describe("other", 1),
            describe(
                "other",
                2,
                version_labels={"stable": 1, "canary": 2},
                inputs=optional,
                explain=["modality"],
            ),
        ]
    }
    posted: list[tuple[str, str]] = []

    def answer(route: Route) -> None:
        request = route.request
        posted.append((request.url, request.post_data or ""))
        predictions = [
            {"label": "blue", "probability": 0.7},
            {"label": "red", "probability": 0.2},
            {"label": "green", "probability": 0.1},
        ]
        route.fulfill(
            json={
                "model": "other",
                "version": 2,
                "label": "blue",
                "predictions": predictions,
                "explanation": {"image_only": predictions[::-1], "text_only": predictions},
            }
        )

    with opened(browser) as (page, _traffic):
        page.route("**/v1/models", lambda route: route.fulfill(json=listing))
        page.route("**/v1/models/*/*/*/predict*", answer)
        page.route("**/v1/models/*/predict*", answer)
        open_with_key(page, served)
        # One model with one version: none of the optional controls.
        assert page.is_visible("#model")
        assert page.is_hidden("#version") and page.is_hidden("#version-label")
        assert page.is_hidden("#modality") and page.is_hidden("#explain")

        page.select_option("#model", "other")
        page.wait_for_selector("#version:visible")
        options = page.eval_on_selector_all("#version option", "o => o.map(x => x.value)")
        assert options == ["", "2", "1"]
        labels = page.eval_on_selector_all("#version-label option", "o => o.map(x => x.value)")
        assert labels == ["", "stable", "canary"]
        assert page.is_visible("#modality") and page.is_visible("#explain")

        page.select_option("#version-label", "canary")
        page.check("input[name=modality][value=text]")
        page.check("#explain")
        page.fill("#text", "a blue thing")
        page.click("#submit")
        page.wait_for_selector("#result:not([hidden])")
        url, body = posted[-1]
        assert url.endswith("/v1/models/other/labels/canary/predict?explain=modality")
        assert 'name="text"' in body and 'name="image"' not in body
        assert page.eval_on_selector_all(".explain-part h4", "h => h.map(x => x.textContent)") == [
            "image only",
            "text only",
        ]

        page.select_option("#version", "1")  # no optional inputs, no explanation there
        assert page.is_hidden("#modality") and page.is_hidden("#explain")
        red: FilePayload = {"name": "r.png", "mimeType": "image/png", "buffer": image_bytes()}
        page.set_input_files("#image", files=red)
        page.click("#submit")
        page.wait_for_selector("#result:not([hidden])")
        assert posted[-1][0].endswith("/v1/models/other/versions/1/predict")

        assert 'name="image"' in posted[-1][1] and "?explain" not in posted[-1][0]

        page.select_option("#model", "fake")
        page.fill("#text", "red")
        page.click("#submit")
        page.wait_for_selector("#result:not([hidden])")
        assert posted[-1][0].endswith("/v1/models/fake/predict")
