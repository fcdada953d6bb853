"""Swagger UI in a real browser: on a served iris model, "Try it out" then "Execute" on POST /api/v1/predict sends
the documented example and shows 200 (and with API keys, after Authorize). Headless chromium driven over the
DevTools protocol (a websocket); Swagger UI's assets come from the server itself (no CDN). Skipped where no
chromium is installed (.ci/run installs it)."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tabserve.api.auth import hash_key
from tests.servers import running_server

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt package 'chromium') on this machine")
websockets = pytest.importorskip("websockets.sync.client")

# Runs in the page: open the operation, Try it out, (Authorize), Execute, and read the status Swagger UI shows.
TRY_IT_OUT = """
async (path, key) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const until = async (find, what) => {
    for (let i = 0; i < 600; i++) { const el = find(); if (el) return el; await sleep(50); }
    throw new Error('not found: ' + what);
  };
  const ui = () => document.querySelector('.swagger-ui');
  await until(() => ui() && ui().querySelector('.opblock'), 'operations');
  if (key) {
    (await until(() => ui().querySelector('.btn.authorize'), 'Authorize')).click();
    const input = await until(() => ui().querySelector('.modal-ux input[type=text], .modal-ux input'), 'key');
    const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    setter.call(input, key);
    input.dispatchEvent(new Event('input', {bubbles: true}));
    (await until(() => ui().querySelector('.modal-ux .auth-btn-wrapper .authorize'), 'Authorize in dialog')).click();
    (await until(() => ui().querySelector('.modal-ux .btn-done, .modal-ux .close-modal'), 'Close')).click();
  }
  const block = await until(() => [...ui().querySelectorAll('.opblock-post')].find(
      b => b.querySelector('.opblock-summary-path')?.getAttribute('data-path') === path), path);
  (block.querySelector('.opblock-summary-control') || block.querySelector('.opblock-summary')).click();
  (await until(() => block.querySelector('.try-out__btn'), 'Try it out')).click();
  const body = (await until(() => block.querySelector('textarea.body-param__text'), 'body')).value;
  (await until(() => block.querySelector('.btn.execute'), 'Execute')).click();
  const status = await until(() => block.querySelector('.live-responses-table .response .response-col_status'),
                             'response');
  const shown = block.querySelector('.live-responses-table .response-col_description pre')?.innerText || '';
  return {status: status.innerText.trim(), body, shown};
}
"""


class Page:
    """One chromium tab over the DevTools protocol."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))  # watchdog only
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    def run(self, function: str, *args: Any) -> Any:
        result = self.call("Runtime.evaluate", expression=f"({function})(...{json.dumps(list(args))})",
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(result["exceptionDetails"].get("exception", {}).get("description", result))
        return result["result"]["value"]


@contextlib.contextmanager
def chromium() -> Iterator[Page]:
    profile = Path(tempfile.mkdtemp(prefix="tabserve-chromium-"))
    proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*",
                             f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60  # watchdog only
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        tab = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
        with websockets.connect(tab["webSocketDebuggerUrl"], max_size=None) as ws:
            yield Page(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def try_it_out(base: str, path: str, key: str | None = None) -> dict[str, Any]:
    with chromium() as page:
        page.call("Page.navigate", url=f"{base}/docs")
        return page.run(TRY_IT_OUT, path, key)


def test_try_it_out_on_the_iris_predict_answers_200(iris_bundle):
    with running_server(str(iris_bundle)) as base:
        shown = try_it_out(base, "/api/v1/predict")
    assert shown["status"] == "200", shown
    assert json.loads(shown["body"]) == {"data": [5.75, 3.0, 4.25, 1.3]}  # iris's training medians
    assert json.loads(shown["shown"])["prediction"] == "versicolor"


def test_with_api_keys_authorize_then_try_it_out_answers_200(iris_bundle):
    keys = json.dumps([{"name": "ui", "sha256": hash_key("tsk_ui"), "scopes": ["predict"]}])
    with running_server(str(iris_bundle), env={"TABSERVE_API_KEYS": keys}) as base:
        shown = try_it_out(base, "/api/v1/predict", "tsk_ui")
    assert shown["status"] == "200", shown
