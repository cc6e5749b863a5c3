"""The input guard in front of every route: bodies over 64 KiB are refused with 413 whether they
declare their length or stream it in chunks, NUL characters in the path, the query or a JSON body
are refused with 422 naming where, and everything else reaches the route unchanged."""
from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from gateway.guard import MAX_BODY_BYTES, InputGuard


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()

    @app.api_route("/echo/{anything:path}", methods=["GET", "POST"])
    async def echo(anything: str, request: Request) -> dict:
        return {"path": anything, "query": dict(request.query_params), "body": (await request.body()).decode()}

    app.add_middleware(InputGuard)
    return TestClient(app)


def test_a_body_at_the_limit_reaches_the_route_unchanged(client):
    body = json.dumps({"labels": {"k": "v" * (MAX_BODY_BYTES - 20)}})[:MAX_BODY_BYTES]
    answer = client.post("/echo/x", content=body)
    assert answer.status_code == 200 and answer.json()["body"] == body


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(client):
    answer = client.post("/echo/x", content=b"x" * (MAX_BODY_BYTES + 1))
    assert answer.status_code == 413
    assert "64 KiB" in answer.json()["detail"] and str(MAX_BODY_BYTES + 1) in answer.json()["detail"]


def test_a_chunked_body_is_counted_as_it_streams(client):
    def chunks():
        for _ in range(100):
            yield b"y" * 1024  # 100 KiB without a Content-Length

    answer = client.post("/echo/x", content=chunks())
    assert answer.status_code == 413

    def small():
        yield b'{"a": '
        yield b'"b"}'

    assert client.post("/echo/x", content=small()).json()["body"] == '{"a": "b"}'


@pytest.mark.parametrize(("url", "where"), [
    ("/echo/ab%00cd", ["path"]),
    ("/echo/x?name=or%00ders", ["query", "name"]),
    ("/echo/x?na%00me=orders", ["query"]),
])
def test_a_nul_in_the_path_or_the_query_is_422(client, url, where):
    answer = client.get(url)
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == where and "NUL" in problem["msg"]


def test_a_nul_anywhere_in_a_json_body_is_422_naming_the_field(client):
    answer = client.post("/echo/x", json={"org": "acme", "labels": {"team": "a\x00b"}})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "labels", "team"]
    assert client.post("/echo/x", json={"items": ["ok", "\x00"]}).json()["detail"][0]["loc"] == ["body", "items", 1]
    assert client.post("/echo/x", json={"la\x00bel": 1}).status_code == 422


def test_an_escaped_backslash_is_not_a_nul(client):
    body = json.dumps({"name": "\\u0000"})  # the six characters \u0000, not a NUL
    assert client.post("/echo/x", content=body).status_code == 200


def test_a_body_that_is_not_json_is_left_to_the_route(client):
    assert client.post("/echo/x", content=b"\\u0000 not json").status_code == 200
