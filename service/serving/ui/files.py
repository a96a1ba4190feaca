"""``GET /v1/models/{name}/versions/{version}/files/{file}``: the files of a model version
that a model card shows, straight from the model store, read-only.

Only the file names below are ever served (the artifact contract's card files, see
:mod:`service.model_store`); the model name must be a valid store name and the version an
integer, so no request can name a path outside ``<store>/<name>/<version>/``. The model
itself, its golden examples and its SavedModel are not served.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service import model_store
from service.errors import NotFound
from service.serving.api.deps import SettingsDep
from service.serving.api.errors import error_responses

CARD_FILES = {
    model_store.METADATA_FILE: "application/json",
    model_store.EVALUATION_FILE: "application/json",
    model_store.CONFUSION_PLOT: "image/png",
    model_store.CURVES_PLOT: "image/png",
}
"""The files this route serves, with their content types."""

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get(
    "/{name}/versions/{version}/files/{file}",
    summary="A model card file of a model version",
    response_class=Response,
    responses={
        200: {
            "description": "The file.",
            "content": {"application/json": {}, "image/png": {}},
        },
        **error_responses(404),
    },
)
async def card_file(name: str, version: int, file: str, settings: SettingsDep) -> Response:
    """``metadata.json``, ``evaluation.json``, ``confusion_matrix.png`` or
    ``training_curves.png`` of a version in the model store (what the page's model card
    shows). Any other name, an unknown model or version, or a file the version lacks
    (older artifacts have no training curves): 404."""
    media_type = CARD_FILES.get(file)
    if media_type is None:
        raise NotFound(f"{file!r} is not a card file (one of: {', '.join(CARD_FILES)})")
    try:
        model_store.validate_name(name)
    except ValueError:
        raise NotFound(f"no model {name!r}") from None
    # The store's own lookup, with a message that does not name the server's folders.
    if version not in model_store.list_versions(settings.model_store, name):
        raise NotFound(f"model {name!r} has no version {version}")
    path = settings.model_store / name / str(version) / file
    if not path.is_file():
        raise NotFound(f"model {name!r} version {version} has no {file}")
    # Small files (a few KiB to a few MiB), read at once: no thread hand-off per request.
    return Response(
        path.read_bytes(),
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )
