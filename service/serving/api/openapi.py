"""OpenAPI for request bodies the routes read by hand (multipart and JSON on one path)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def request_body(content: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """An ``openapi_extra`` entry documenting a body per media type from pydantic models."""
    schemas = {kind: {"schema": inline_schema(model)} for kind, model in content.items()}
    return {"requestBody": {"required": True, "content": schemas}}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` references resolved in place."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
