"""A real headless Chromium for tests (Debian's `chromium`, installed by tools/install_chromium.sh
when missing), driven over the DevTools protocol with the `websockets` client: load a page, collect
every console error, uncaught exception and failed load, read values from the page, and save a
full-page screenshot."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ensure_chromium() -> str:
    """The chromium binary, installed with apt first when it is missing (root, apt reachable)."""
    found = shutil.which("chromium")
    if found:
        return found
    subprocess.run(["bash", str(REPO / "tools" / "install_chromium.sh")], check=True, timeout=900)
    found = shutil.which("chromium")
    if not found:
        raise RuntimeError("tools/install_chromium.sh ran but `chromium` is still not on PATH")
    return found


@dataclass
class PageLoad:
    errors: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)


class _DevTools:
    def __init__(self, ws):
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.time() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if message.get("method") == method:
                return message
            self.events.append(message)

    def drain(self, seconds: float) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=deadline - time.time())))
            except TimeoutError:
                return


def _errors(events: list[dict]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append("console.error: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
    return found


def load_page(url: str, screenshot: Path | None = None, expressions: dict[str, str] | None = None,
              timeout: float = 60) -> PageLoad:
    """Load `url` in a fresh headless Chromium; the errors it reported, the values of
    `expressions` (JavaScript, evaluated after load), and a full-page PNG at `screenshot`."""
    from websockets.sync.client import connect

    binary = ensure_chromium()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--remote-debugging-port=0", f"--user-data-dir={profile}",
               "--window-size=1200,900", "about:blank"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": "disabled:"})
    try:
        browser_url, deadline = None, time.time() + timeout
        while browser_url is None:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                raise RuntimeError(f"chromium exited {process.returncode} before DevTools listened")
            if "DevTools listening on " in line:
                browser_url = line.split("DevTools listening on ", 1)[1].strip()
            if time.time() > deadline:
                raise TimeoutError("chromium did not start its DevTools endpoint")
        # keep reading its stderr (unread, a full pipe would block the browser)
        threading.Thread(target=process.stderr.read, daemon=True).start()
        port = browser_url.split("://", 1)[1].split("/", 1)[0]
        targets = json.loads(urllib.request.urlopen(f"http://{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t.get("type") == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            tools = _DevTools(ws)
            for domain in ("Page", "Runtime", "Log"):
                tools.call(f"{domain}.enable")
            tools.call("Page.navigate", url=url)
            tools.wait_event("Page.loadEventFired", timeout)
            tools.drain(0.5)  # late console messages and failed loads
            result = PageLoad(errors=_errors(tools.events))
            for name, expression in (expressions or {}).items():
                value = tools.call("Runtime.evaluate", expression=expression, returnByValue=True)
                result.values[name] = value.get("result", {}).get("value")
            if screenshot is not None:
                size = tools.call("Page.getLayoutMetrics")["cssContentSize"]
                shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                  clip={"x": 0, "y": 0, "width": size["width"],
                                        "height": size["height"], "scale": 1})
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            tools.call("Browser.close")
        return result
    finally:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
