"""Every operation of the JSON API carries an example in its OpenAPI schema,
and each example is valid against the operation's own schemas (the answer's
and the request's fields), so the examples cannot drift from the API."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from generation.examples import EXAMPLES

FILE_FIELDS = {"image", "mask", "control_image"}


@pytest.fixture(scope="module")
def schema():
    from portal.api import api

    return api.get_openapi_schema()


def valid(schema: dict, part: dict, value) -> list[str]:
    validator = Draft202012Validator({**part, "components": schema["components"]})
    return [error.message for error in validator.iter_errors(value)]


def test_every_operation_has_an_example(schema):
    operations = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert operations == set(EXAMPLES)
    for method, path in operations:
        operation = schema["paths"][path][method]
        examples = [p.get("example") for p in operation.get("parameters", [])]
        examples += [c.get("example") for c in operation.get("requestBody", {}).get("content", {}).values()]
        examples += [c.get("example") for r in operation["responses"].values() for c in r.get("content", {}).values()]
        assert any(example is not None for example in examples), (method, path)


@pytest.mark.parametrize(("method", "path"), list(EXAMPLES), ids=[f"{m} {p}" for m, p in EXAMPLES])
def test_each_example_fits_its_operation(schema, method, path):
    operation = schema["paths"][path][method]
    example = EXAMPLES[method, path]
    if "response" in example:
        success = next(code for code in (200, 202) if code in operation["responses"])
        answer = operation["responses"][success]["content"]["application/json"]
        assert valid(schema, answer["schema"], example["response"]) == []
    request = dict(example.get("request", {}))
    for parameter in operation.get("parameters", []):
        if parameter["name"] in request:
            assert valid(schema, parameter["schema"], request.pop(parameter["name"])) == []
    for content in operation.get("requestBody", {}).get("content", {}).values():
        properties = content["schema"]["properties"]
        assert set(request) <= set(properties), set(request) - set(properties)
        fields = {name: value for name, value in request.items() if name not in FILE_FIELDS}
        assert valid(schema, {**content["schema"], "required": []}, fields) == []
        request = {}
    assert request == {}, f"fields the operation does not take: {request}"
