"""The page's routes without a browser: where it lives, its security headers, what the
HTML may contain under its Content-Security-Policy, and MMSERVE_UI=false."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import FakeClassifier

PAGE_FILES = ("/ui/playground.js", "/ui/style.css", "/ui/favicon.svg")


def app_client(tmp_path: Path, **settings: object) -> TestClient:
    chosen = Settings(model_store=tmp_path, model_name="fake", decode_threads=1, **settings)  # type: ignore[arg-type]
    return TestClient(create_app(chosen, classifier=FakeClassifier()))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path) as test_client:
        yield test_client


def test_the_root_leads_to_the_page(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/ui/"
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>mmserve" in page.text


def test_the_page_carries_a_strict_content_security_policy(client: TestClient) -> None:
    headers = client.get("/ui/").headers
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' blob:"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["form-action"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert "unsafe" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


class _Markup(HTMLParser):
    """Everything in the HTML that a strict policy would block or that leaves the origin."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in found:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self._in_script = True
            if not found.get("src"):
                self.problems.append("<script> without src")
            else:
                self.scripts.append(found["src"] or "")
        for name in ("src", "href"):
            link = found.get(name) or ""
            if "//" in link or link.startswith(("javascript:", "data:")):
                self.problems.append(f"<{tag} {name}={link}>: not this origin")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script")


def test_the_page_has_no_inline_script_or_style_and_no_foreign_link(client: TestClient) -> None:
    markup = _Markup()
    markup.feed(client.get("/ui/").text)
    assert markup.problems == []
    assert markup.scripts == ["playground.js"]


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ui/playground.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ],
)
def test_the_page_files_are_served_with_their_types(
    client: TestClient, path: str, content_type: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content


@pytest.mark.parametrize(
    "path", ["/ui/index.html", "/ui/page.py", "/ui/__init__.py", "/ui/..%2Fpage.py", "/ui/x.js"]
)
def test_nothing_else_is_served_from_the_page_folder(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_page_is_open_when_keys_are_required(tmp_path: Path) -> None:
    # Like /docs: the page holds no data; what it fetches needs the key.
    with app_client(tmp_path, api_keys="k-123") as client:
        assert client.get("/ui/").status_code == 200
        assert client.get("/ui/playground.js").status_code == 200
        assert client.get("/v1/models").status_code == 401


def test_ui_false_turns_the_page_off(tmp_path: Path) -> None:
    with app_client(tmp_path, ui=False) as client:
        for path in ("/", "/ui/", *PAGE_FILES):
            response = client.get(path, follow_redirects=False)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
        assert client.get("/v1/models").status_code == 200  # the API is unchanged


def test_mmserve_ui_false_in_the_environment_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMSERVE_UI", "false")
    monkeypatch.setenv("MMSERVE_MODEL_STORE", str(tmp_path))
    monkeypatch.setenv("MMSERVE_DECODE_THREADS", "1")
    # Settings read from the environment at start-up, as `uvicorn service.main:app` does.
    with TestClient(create_app(classifier=FakeClassifier())) as client:
        assert client.get("/ui/").status_code == 404
        assert client.get("/health/ready").status_code == 200
    monkeypatch.setenv("MMSERVE_UI", "true")
    with TestClient(create_app(classifier=FakeClassifier())) as client:
        assert client.get("/ui/").status_code == 200


def test_the_page_is_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]
    assert "/v1/models/{name}/versions/{version}/files/{file}" in paths
