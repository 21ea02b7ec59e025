"""The Nu HTML Checker (vnu, the W3C's) finds nothing to report in what people's browsers render:
the search page, a page emptied by its filters, /embed, /status and the stylesheet."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

VNU = (
    Path(__file__).resolve().parents[2]
    / ".ci"
    / "npm"
    / "node_modules"
    / "vnu-jar"
    / "build"
    / "dist"
    / "vnu.jar"
)

pytestmark = pytest.mark.skipif(
    not VNU.exists() or shutil.which("java") is None,
    reason="vnu.jar or java is missing (.ci/run: npm install --prefix .ci/npm vnu-jar; Debian: default-jre)",
)


async def test_pages_and_stylesheet_have_no_messages(client, tmp_path) -> None:
    documents = {
        "page.html": "/?q=onboarding",
        "filtered.html": "/?q=onboarding&duration=long&after=2026-01-01",
        "embed.html": "/embed?q=onboarding",
        "status.html": "/status",
        "form.html": "/",
        "search.css": "/static/search.css",
    }
    for name, path in documents.items():
        resp = await client.get(path)
        assert resp.status == 200, path
        (tmp_path / name).write_bytes(await resp.read())
    java = await asyncio.create_subprocess_exec(
        "java", "-jar", str(VNU), "--format", "json", "--also-check-css",
        *(str(tmp_path / name) for name in documents),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, report = await asyncio.wait_for(java.communicate(), 120)  # vnu writes its JSON to stderr
    messages = json.loads(report)["messages"]
    assert messages == [], [(m.get("url", "").rsplit("/", 1)[-1], m["type"], m["message"]) for m in messages]
