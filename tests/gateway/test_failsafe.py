"""An error no handler claims is still a clean answer on a connection that stays open (a real
uvicorn server and one keep-alive client connection)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from gateway.app import create_app
from tests.conftest import make_settings


@pytest.fixture
def server(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    import uvicorn  # noqa: F401 (the server module needs it)

    from tests.gateway import server as server_module

    def app_with_a_bug(settings: object) -> FastAPI:
        app = create_app(make_settings(sqlite_url))

        @app.get("/bug")
        async def bug() -> None:
            raise RuntimeError("a bug")

        return app

    monkeypatch.setattr(server_module, "create_app", app_with_a_bug)
    base_url, stop = server_module.start_gateway_server(make_settings(sqlite_url))
    yield base_url
    stop()


def test_an_unexpected_error_is_a_500_and_the_connection_serves_the_next_request(
    server: str,
) -> None:
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for _ in range(3):
            connection.request("GET", "/bug")
            response = connection.getresponse()
            body = json.loads(response.read())
            assert response.status == 500
            assert body["error"]["code"] == "internal_error"
            assert "a bug" not in json.dumps(body)  # never the exception text
            connection.request("GET", "/healthz")
            health = connection.getresponse()
            health.read()
            assert health.status == 200
    finally:
        connection.close()
