"""Client tokens (contract: "With [[clients]] configured, searches need a token").

A token is accepted from `Authorization: Bearer T`, from HTTP Basic with T as
the password (SharePoint, Windows), or from `key=T` in the query (feed
readers, which cannot send headers; links in their feeds keep it). Without
`[[clients]]` the service is open and every caller sees every org.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from aggregator.caller import Caller
from aggregator.config import Client, Config

REALM = "ilos-aggregator"
CHALLENGES = (f'Basic realm="{REALM}", charset="UTF-8"', f'Bearer realm="{REALM}"')


class Authenticator:
    """Decides who is calling. Built once per app: `caller` is on every request's path."""

    def __init__(self, config: Config) -> None:
        self.clients = config.clients
        self.all_orgs = tuple(o.id for o in config.orgs)
        self.anyone = Caller(None, self.all_orgs)  # the one caller of an open service

    def caller(self, request: web.Request) -> Caller | None:
        """The caller, or None when a token is required and none valid was given."""
        if not self.clients:
            return self.anyone
        token, from_query = presented_token(request)
        if token is None:
            return None
        client = match_client(token, self.clients)
        if client is None:
            return None
        visible = (
            self.all_orgs if client.orgs is None else tuple(o for o in self.all_orgs if o in client.orgs)
        )
        return Caller(client, visible, token if from_query else None)


def presented_token(request: web.Request) -> tuple[str | None, bool]:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        _, sep, password = decoded.partition(":")
        return (password, False) if sep and password else (None, False)
    keys = request.query.getall("key", [])
    if len(keys) == 1 and keys[0]:
        return keys[0], True
    return None, False


def match_client(token: str, clients: tuple[Client, ...]) -> Client | None:
    """Compares against every token in constant time, so timing says nothing about which."""
    found = None
    encoded = token.encode("utf-8", "replace")
    for client in clients:
        if hmac.compare_digest(encoded, client.token.encode("utf-8")):
            found = client
    return found


def unauthorized(fmt: str) -> web.Response:
    """401 with a challenge for each scheme; the body in the client's format where possible."""
    message = "A valid token is needed: Authorization: Bearer <token>, Basic auth with the token as password, or key=<token>."
    headers = {"Cache-Control": "no-store"}
    if fmt in ("json", "suggest"):
        resp = web.json_response({"error": message}, status=401, headers=headers)
    else:
        resp = web.Response(status=401, text=message + "\n", headers=headers)
    for challenge in CHALLENGES:
        resp.headers.add("WWW-Authenticate", challenge)
    return resp
