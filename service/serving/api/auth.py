"""Optional API-key authentication, as a dependency of every route but the health probes,
and optional admin keys for the routes that change what is served.

Off while no key is configured (``api_keys``, ``api_keys_file``). On, a request needs
``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` matching one of the keys, and every
key it presents must match (one wrong key refuses the request, as RFC 6750 lets a server do
with credentials sent two ways; other Authorization schemes are not ours and are ignored).
Anything else is 401 with ``WWW-Authenticate: Bearer`` and a message that does not say what was
wrong. ``/docs`` and ``/openapi.json`` stay open: they describe the API, hold no data, and
tell a client how to authenticate. Keys and headers are never logged.

Admin keys (``admin_api_keys``, ``admin_api_keys_file``) split the keys in two: when any is
configured, the routes that change what is served (load, unload, labels, canary, promote,
rollback, reload) need an admin key, presented the same way; a valid ordinary key gets
403 there, anything else 401. An admin key is valid on every other route too. Without
admin keys those routes need what every route needs.

    keys configured        model and read routes     changing routes
    none                   open                      open
    API keys only          an API key                an API key
    admin keys only        open                      an admin key
    both                   an API or admin key       an admin key (API key: 403)
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Forbidden, Unauthorized
from service.serving.api.deps import SettingsDep

log = logging.getLogger("mmserve.auth")

_ENFORCED = "Enforced only when the service is configured with API keys."

# auto_error=False: these only read the headers (and document them in OpenAPI); the
# decision, and its one error message, is require_api_key's.
_bearer = HTTPBearer(auto_error=False, description=f"`Authorization: Bearer <key>`. {_ENFORCED}")
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description=f"`X-API-Key: <key>`. {_ENFORCED}"
)
_ADMIN = (
    "An admin key, on the routes that change what is served. Enforced only when the service "
    "is configured with admin keys."
)
_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminBearer",
    description=f"`Authorization: Bearer <admin key>`. {_ADMIN}",
)
_admin_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="AdminAPIKey",
    description=f"`X-API-Key: <admin key>`. {_ADMIN}",
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
    if not settings.api_key_set:
        return
    keys = settings.api_key_set | settings.admin_key_set
    if _all_match(_candidates(bearer, api_key), keys):
        return
    # Method and path only: the headers hold the (wrong) key.
    log.info("refused %s %s: no valid API key", request.method, request.url.path)
    raise Unauthorized("a valid API key is required")


async def require_admin_key(
    request: Request,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
    api_key: Annotated[str | None, Depends(_admin_api_key)],
) -> None:
    """Let the request through when no admin key is configured, or when every key it
    presents is an admin key; 403 when they are valid API keys but not all admin keys."""
    admin = settings.admin_key_set
    if not admin:
        return
    candidates = _candidates(bearer, api_key)
    if _all_match(candidates, admin):
        return
    if _all_match(candidates, settings.api_key_set | admin):
        log.info("refused %s %s: not an admin key", request.method, request.url.path)
        raise Forbidden("this route changes what the service serves: it needs an admin key")
    log.info("refused %s %s: no valid admin key", request.method, request.url.path)
    raise Unauthorized("a valid admin key is required")


def _candidates(bearer: HTTPAuthorizationCredentials | None, api_key: str | None) -> list[str]:
    return [value for value in (bearer and bearer.credentials, api_key) if value]


def _all_match(candidates: list[str], keys: frozenset[str]) -> bool:
    """Whether there is a candidate and every one is one of ``keys``. Every candidate is
    checked (no short cut), so timing does not tell which one was wrong."""
    valid = [key_matches(candidate, keys) for candidate in candidates]
    return bool(valid) and all(valid)


RequireApiKey = Depends(require_api_key)
"""The dependency to put on protected routers."""

RequireAdminKey = Depends(require_admin_key)
"""The dependency to put on the routes that change what is served."""
