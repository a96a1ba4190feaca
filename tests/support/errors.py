"""Assertions about the service's error answers."""

from __future__ import annotations

import httpx


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """The response is ``status`` with the error body ``code``; returns its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    message: str = body["error"]["message"]
    assert message
    return message
