"""The Open Inference Protocol (v2) API on the fake classifier: JSON and binary tensor data
(built by hand and by tritonclient's own encoder), classification, errors, versions."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import BLUE, GREEN, LABELS, RED, FakeClassifier, expected, image_bytes

httpclient = pytest.importorskip("tritonclient.http")

INFER = "/v2/models/fake/infer"
HEADER = "Inference-Header-Content-Length"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def json_request(images: list[bytes], texts: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "image",
                "shape": [len(images)],
                "datatype": "BYTES",
                "data": images_b64(images),
            },
            {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts},
        ],
        **extra,
    }


def images_b64(images: list[bytes]) -> list[str]:
    return [b64(image) for image in images]


def serialized(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def binary_body(head: dict[str, Any], *sections: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(head).encode()
    return header + b"".join(sections), {HEADER: str(len(header))}


def triton_request(
    images: list[bytes], texts: list[str], outputs: list[Any] | None, binary: bool = True
) -> tuple[bytes, dict[str, str]]:
    image = httpclient.InferInput("image", [len(images)], "BYTES")
    image.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    text = httpclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [image, text], outputs=outputs, request_id="req-7"
    )
    return body, ({} if json_size is None else {HEADER: str(json_size)})


def triton_result(response: Any) -> Any:
    length = response.headers.get(HEADER)
    return httpclient.InferenceServerClient.parse_response_body(
        response.content, header_length=None if length is None else int(length)
    )


PAIRS = [(RED, "a red thing"), (GREEN, ""), (BLUE, "blue or green")]


def expected_rows() -> np.ndarray:
    return np.array([expected(image_bytes(c), t) for c, t in PAIRS], dtype=np.float32)


# --- metadata and health --------------------------------------------------------------


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "mmserve"
    assert meta["extensions"] == ["binary_tensor_data", "classification"]
    assert isinstance(meta["version"], str)
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_shape(client: TestClient) -> None:
    want = {
        "name": "fake",
        "versions": ["3"],
        "platform": "tensorflow_keras",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
        # The fake's metadata records no modality dropout and no ablation.
        "parameters": {
            "trained_with_modality_dropout": False,
            "accuracy": 0.9,
            "optional_inputs": "image,text",
            "explain": "modality",
        },
    }
    assert client.get("/v2/models/fake").json() == want
    assert client.get("/v2/models/fake/versions/3").json() == want
    assert client.get("/v2/models/fake/ready").json() == {"name": "fake", "ready": True}
    assert client.get("/v2/models/fake/versions/3/ready").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/other"),
        ("GET", "/v2/models/other/ready"),
        ("GET", "/v2/models/fake/versions/2"),
        ("GET", "/v2/models/fake/versions/2/ready"),
        ("POST", "/v2/models/other/infer"),
        ("POST", "/v2/models/fake/versions/4/infer"),
    ],
)
def test_unknown_models_and_versions_are_404_in_the_protocol_shape(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path, json=json_request([image_bytes()], ["x"]))
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]


def test_native_errors_keep_their_shape(client: TestClient) -> None:
    assert client.get("/v1/models/other").json()["error"]["code"] == "not_found"
    assert client.get("/v2/nothing/here").json() == {"error": "Not Found"}


# --- infer: JSON ------------------------------------------------------------------------


def test_json_infer_matches_the_native_api(client: TestClient, fake: FakeClassifier) -> None:
    images = [image_bytes(c) for c, _ in PAIRS]
    texts = [t for _, t in PAIRS]
    response = client.post(INFER, json=json_request(images, texts, id="abc"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == "abc" and body["model_name"] == "fake" and body["model_version"] == "3"
    [output] = body["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32"
    assert output["shape"] == [3, 3]
    got = np.array(output["data"], dtype=np.float32).reshape(3, 3)
    np.testing.assert_allclose(got, expected_rows(), atol=1e-6)
    assert fake.calls == [3]  # one model call through the shared batcher


def test_json_accepts_b64_objects_and_nested_data(client: TestClient) -> None:
    request = json_request([image_bytes(RED)], ["red"])
    request["inputs"][0]["data"] = [{"b64": b64(image_bytes(RED))}]
    request["inputs"][0]["shape"] = [1, 1]
    request["inputs"][1]["data"] = [["red"]]
    request["inputs"][1]["shape"] = [1, 1]
    response = client.post("/v2/models/fake/versions/3/infer", json=request)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], expected(image_bytes(RED), "red"), atol=1e-6
    )


def test_classification_extension_in_json(client: TestClient) -> None:
    images = [image_bytes(c) for c, _ in PAIRS]
    request = json_request(
        images,
        [t for _, t in PAIRS],
        outputs=[{"name": "probabilities", "parameters": {"classification": 2}}],
    )
    output = client.post(INFER, json=request).json()["outputs"][0]
    assert output["datatype"] == "BYTES" and output["shape"] == [3, 2]
    rows = expected_rows()
    for i, entry in enumerate(output["data"]):
        score, index, label = entry.split(":")
        item, rank = divmod(i, 2)
        order = np.argsort(-rows[item])
        assert int(index) == order[rank] and label == LABELS[order[rank]]
        assert float(score) == pytest.approx(rows[item][order[rank]], abs=1e-6)


# --- infer: binary tensor data ------------------------------------------------------------


def test_binary_request_and_response_by_hand(client: TestClient) -> None:
    images = [image_bytes(c) for c, _ in PAIRS]
    texts = [t.encode() for _, t in PAIRS]
    image_data, text_data = serialized(images), serialized(texts)
    head = {
        "id": "bin",
        "inputs": [
            {"name": "text", "shape": [3], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(text_data)}},
            {"name": "image", "shape": [3], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(image_data)}},
        ],
        "parameters": {"binary_data_output": True},
    }  # fmt: skip
    body, headers = binary_body(head, text_data, image_data)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = int(response.headers[HEADER])
    meta = json.loads(response.content[:length])
    [output] = meta["outputs"]
    assert meta["id"] == "bin" and "data" not in output
    assert output["parameters"]["binary_data_size"] == 3 * 3 * 4
    got = np.frombuffer(response.content[length:], dtype="<f4").reshape(output["shape"])
    np.testing.assert_allclose(got, expected_rows(), atol=1e-6)


@pytest.mark.parametrize("binary_output", [True, False])
def test_tritonclient_encoding(client: TestClient, binary_output: bool) -> None:
    images = [image_bytes(c) for c, _ in PAIRS]
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary_output)]
    body, headers = triton_request(images, [t for _, t in PAIRS], outputs, binary=False)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert (HEADER in response.headers) is binary_output
    result = triton_result(response)
    assert result.get_response()["id"] == "req-7"
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected_rows(), atol=1e-6)


@pytest.mark.parametrize("binary_output", [True, False])
def test_tritonclient_classification(client: TestClient, binary_output: bool) -> None:
    images = [image_bytes(c) for c, _ in PAIRS]
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_output, class_count=5)]
    body, headers = triton_request(images, [t for _, t in PAIRS], outputs)
    result = triton_result(client.post(INFER, content=body, headers=headers))
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 3)  # k beyond the class count gives every class
    rows = expected_rows()
    for item, row in enumerate(top):
        labels = [_text(entry).split(":")[2] for entry in row]
        assert labels == [LABELS[i] for i in np.argsort(-rows[item], kind="stable")]


def _text(entry: bytes | str) -> str:
    return entry.decode() if isinstance(entry, bytes) else entry


def test_tritonclient_without_outputs_gets_binary(client: TestClient) -> None:
    body, headers = triton_request([image_bytes(RED)], ["red"], outputs=None)
    response = client.post(INFER, content=body, headers=headers)
    assert HEADER in response.headers
    np.testing.assert_allclose(
        triton_result(response).as_numpy("probabilities")[0],
        expected(image_bytes(RED), "red"),
        atol=1e-6,
    )


# --- infer: errors ---------------------------------------------------------------------------


def _bad_requests() -> list[tuple[str, Any, dict[str, str]]]:
    good = json_request([image_bytes()], ["x"])
    image_data = serialized([image_bytes()])

    def edit(change: Any) -> dict[str, Any]:
        request = json.loads(json.dumps(good))
        change(request)
        return request

    head = {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(image_data) + 10}},
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]},
        ]
    }  # fmt: skip
    overrun, overrun_headers = binary_body(head, image_data)

    def zero_k(request: dict[str, Any]) -> None:
        request["outputs"] = [{"name": "probabilities", "parameters": {"classification": 0}}]

    return [
        ("not json", b"{", {}),
        ("unknown explain", edit(lambda r: r.update(parameters={"explain": "shap"})), {}),
        (
            "explain output unasked",
            edit(lambda r: r.update(outputs=[{"name": "probabilities_image_only"}])),
            {},
        ),
        ("unequal counts", json_request([image_bytes()] * 2, ["x"]), {}),
        ("shape mismatch", edit(lambda r: r["inputs"][1].update(shape=[2])), {}),
        ("wrong datatype", edit(lambda r: r["inputs"][1].update(datatype="FP32")), {}),
        ("unknown input", edit(lambda r: r["inputs"][1].update(name="caption")), {}),
        ("bad base64", edit(lambda r: r["inputs"][0].update(data=["***"])), {}),
        ("number element", edit(lambda r: r["inputs"][1].update(data=[1])), {}),
        ("unknown output", edit(lambda r: r.update(outputs=[{"name": "logits"}])), {}),
        ("bad classification", edit(zero_k), {}),
        ("binary overrun", overrun, overrun_headers),
        ("bad header length", json.dumps(good).encode(), {HEADER: "99999"}),
        ("undecodable image", json_request([b"junk"], ["x"]), {}),
    ]


@pytest.mark.parametrize(("case", "body", "headers"), _bad_requests(), ids=lambda v: str(v)[:20])
def test_bad_requests_are_400_in_the_protocol_shape(
    client: TestClient, case: str, body: Any, headers: dict[str, str]
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post(INFER, content=content, headers=headers)
    assert response.status_code == 400, (case, response.text)
    assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)
    ok = client.post(INFER, json=json_request([image_bytes()], ["x"]))
    assert ok.status_code == 200


def test_invalid_utf8_text_in_binary_is_400(client: TestClient) -> None:
    image_data, text_data = serialized([image_bytes()]), serialized([b"\xff\xfe"])
    head = {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(image_data)}},
            {"name": "text", "shape": [1], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(text_data)}},
        ]
    }  # fmt: skip
    body, headers = binary_body(head, image_data, text_data)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 400 and "UTF-8" in response.json()["error"]


def test_limits_apply(client: TestClient) -> None:
    too_many = client.post(INFER, json=json_request([image_bytes()] * 5, ["x"] * 5))
    assert too_many.status_code == 413 and isinstance(too_many.json()["error"], str)
    too_long = client.post(INFER, json=json_request([image_bytes()], ["x" * 51]))
    assert too_long.status_code == 422 and isinstance(too_long.json()["error"], str)


def test_body_size_limit_answers_in_the_protocol_shape(tmp_path: Any) -> None:
    settings = Settings(model_store=tmp_path, model_name="fake", max_request_bytes=1024)
    with TestClient(create_app(settings, classifier=FakeClassifier())) as small:
        response = small.post(INFER, content=b"x" * 2048)
    assert response.status_code == 413 and isinstance(response.json()["error"], str)


def test_api_keys_guard_v2_but_not_its_probes(tmp_path: Any) -> None:
    settings = Settings(model_store=tmp_path, model_name="fake", api_keys="k-123456789")
    with TestClient(create_app(settings, classifier=FakeClassifier())) as keyed:
        refused = keyed.post(INFER, json=json_request([image_bytes()], ["x"]))
        assert refused.status_code == 401 and isinstance(refused.json()["error"], str)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert keyed.get("/v2/models/fake").status_code == 401
        assert keyed.get("/v2/health/live").status_code == 200
        assert keyed.get("/v2/health/ready").status_code == 200
        allowed = keyed.post(
            INFER,
            json=json_request([image_bytes()], ["x"]),
            headers={"Authorization": "Bearer k-123456789"},
        )
        assert allowed.status_code == 200


def test_not_ready_is_503_in_the_protocol_shape(settings: Settings) -> None:
    client = TestClient(create_app(settings, classifier=FakeClassifier()))  # no lifespan
    assert client.get("/v2/health/live").status_code == 200
    response = client.get("/v2/health/ready")
    assert response.status_code == 503 and isinstance(response.json()["error"], str)
