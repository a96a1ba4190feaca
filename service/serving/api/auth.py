"""Optional API-key authentication, as a dependency of every route but the health probes.

Off while no key is configured (``api_keys``, ``api_keys_file``). On, a request needs
``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` matching one of the keys, and every
key it presents must match (one wrong key refuses the request, as RFC 6750 lets a server do
with credentials sent two ways; other Authorization schemes are not ours and are ignored).
Anything else is 401 with ``WWW-Authenticate: Bearer`` and a message that does not say what was
wrong. ``/docs`` and ``/openapi.json`` stay open: they describe the API, hold no data, and
tell a client how to authenticate. Keys and headers are never logged.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Unauthorized
from service.serving.api.deps import SettingsDep

log = logging.getLogger("mmserve.auth")

_ENFORCED = "Enforced only when the service is configured with API keys."

# auto_error=False: these only read the headers (and document them in OpenAPI); the
# decision, and its one error message, is require_api_key's.
_bearer = HTTPBearer(auto_error=False, description=f"`Authorization: Bearer <key>`. {_ENFORCED}")
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description=f"`X-API-Key: <key>`. {_ENFORCED}"
)


def key_matches(candidate: str, keys: frozenset[str]) -> bool:
    """Whether ``candidate`` is one of ``keys``, in time that does not depend on where a
    candidate differs from a key, nor on which key matched (every key is compared)."""
    # Header values arrive decoded as Latin-1: encoding back gives the octets sent.
    given = candidate.encode("latin-1", errors="replace")
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode("utf-8"))
    return found


async def require_api_key(
    request: Request,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> None:
    """Let the request through when authentication is off, or when it presents a key and
    every key it presents is valid."""
    keys = settings.api_key_set
    if not keys:
        return
    candidates = [value for value in (bearer and bearer.credentials, api_key) if value]
    # Every candidate is checked (no short cut), so timing does not tell which one was wrong.
    valid = [key_matches(candidate, keys) for candidate in candidates]
    if valid and all(valid):
        return
    # Method and path only: the headers hold the (wrong) key.
    log.info("refused %s %s: no valid API key", request.method, request.url.path)
    raise Unauthorized("a valid API key is required")


RequireApiKey = Depends(require_api_key)
"""The dependency to put on protected routers."""
