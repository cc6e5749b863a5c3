"""The gateway of the code under test, served in this process against the test platform's Kafka,
registry and PostgreSQL (or, per test, against an address where nothing listens): the platform's
own API process runs whatever code it was started with."""
from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from gateway import ratelimit
from gateway.app import GatewaySettings, create_app
from gateway.auth import Authenticator, Issuer
from runtime import devissuer, sealing
from tests.conftest import PLATFORM_ENV, wait_for


def gateway_app(stack, **changes):
    """`create_app` with the platform's endpoints, gateway key and development issuer; `changes`
    replace settings (e.g. `database_url` of a closed port)."""
    values = json.loads((stack.home / "secrets.json").read_text())
    settings = dataclasses.replace(
        GatewaySettings(stack.kafka, stack.registry, stack.postgres_dsn, signer=stack.signer("gateway"),
                        subscription_seal_key=sealing.public_key(values["subscription_seal_key"])), **changes)
    key = values[devissuer.SECRET_NAME]
    app = create_app(settings, Authenticator([Issuer.from_dict(devissuer.issuer_config(key))]))
    app.state.limiter = ratelimit.RateLimiter(ratelimit.parse(PLATFORM_ENV["DBAAS_RATE_LIMITS"]))
    return app


@contextmanager
def serving(app) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port for the duration; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="gateway-under-test", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=60, interval=0.05, what="the gateway")
        assert server.started, "the gateway under test did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port bound but never listening: every connection to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
