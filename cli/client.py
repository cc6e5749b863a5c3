"""HTTP client of the control plane API for the CLI: finds the API, sends the caller's token
(`dbaas auth login`), and turns error answers into messages a person can act on."""
from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from cli.tokens import stored_token
from deploy.stack import config as stack_config


class ApiError(Exception):
    """The API refused or failed a request; the message is for people."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def api_url(explicit: str | None = None, home: str | None = None) -> str:
    """``explicit``, else $DBAAS_API_URL, else the API of the local platform at ``home`` (default:
    $DBAAS_STACK_HOME or .data/stack)."""
    if explicit or os.environ.get("DBAAS_API_URL"):
        return (explicit or os.environ["DBAAS_API_URL"]).rstrip("/")
    state = (Path(home).resolve() if home else stack_config.default_home()) / "stack.json"
    if state.exists():
        port = json.loads(state.read_text())["ports"]["api"]
    else:
        port = stack_config.DEFAULT_PORTS["api"]
    return f"http://{stack_config.HOST}:{port}"


class Client:
    def __init__(self, url: str | None = None):
        self.url = api_url(url)
        token = stored_token(self.url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=30)

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.ConnectError:
            raise ApiError(f"the control plane API at {self.url} is not answering: start it with `make up` "
                           "(or set DBAAS_API_URL)") from None
        if resp.status_code == 401:
            raise ApiError(f"{_explain(resp)} — sign in with `dbaas auth login` (locally: "
                           "`dbaas auth login --dev --user <you>`)", 401)
        if resp.status_code >= 400:
            raise ApiError(_explain(resp), resp.status_code)
        return resp

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: dict | None = None, headers: dict | None = None) -> dict:
        return self.request("POST", path, json=body or {}, headers=headers or {}).json()

    def put(self, path: str, body: dict) -> dict:
        return self.request("PUT", path, json=body).json()

    def delete(self, path: str) -> dict:
        return self.request("DELETE", path).json()


def _explain(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:500]}"
    if isinstance(detail, list):
        lines = []
        for d in detail:
            loc = ".".join(str(p) for p in d.get("loc", []) if p not in ("body",))
            lines.append(f"{loc}: {d.get('msg')}" if loc else d.get("msg", ""))
        return "; ".join(lines)
    return str(detail)
