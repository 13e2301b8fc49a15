"""Headless Chromium for the tests of the HTML export, driven over the Chrome DevTools protocol
(``websocket-client``): pages opened from file:// with the network off, JavaScript evaluated,
real mouse and keyboard input, screenshots. Debian's ``chromium`` (scripts/test.sh installs it)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.request
from typing import Any, Optional

import pytest
import websocket

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Nothing may go out: every connection would go to a proxy on a closed port, and DevTools also
# switches the page's network off (Network.emulateNetworkConditions) before it opens.
NO_NETWORK = ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


def chromium_path() -> str:
    """The chromium command; skipped when it is missing, failed under CI=true (scripts/test.sh installs it).
    ``MLMD_TEST_BROWSER=0`` skips even under CI: where the suite runs without a browser on purpose
    (scripts/trixie.sh's Debian 13 root; the host's run covers these tests)."""
    if os.environ.get("MLMD_TEST_BROWSER") == "0":
        pytest.skip("MLMD_TEST_BROWSER=0: the headless Chromium tests are switched off (run on the host)")
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing under CI=true (Debian: apt-get install chromium)")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)")


def require_dot() -> None:
    if shutil.which("dot") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Graphviz's dot is missing under CI=true (Debian: apt-get install graphviz)")
        pytest.skip("Graphviz's dot is not installed")


def screenshot(url: str, path: str, width: int = 1200, height: int = 800) -> None:
    """Chromium's own ``--screenshot`` mode: the page at ``url`` drawn into the PNG ``path``."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        subprocess.run([chromium_path(), *FLAGS, *NO_NETWORK, f"--user-data-dir={profile}",
                        f"--window-size={width},{height}", f"--screenshot={path}", url],
                       check=True, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Browser:
    """One headless Chromium with one page."""

    def __init__(self, width: int = 1200, height: int = 800) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.process = subprocess.Popen(
            [chromium_path(), *FLAGS, *NO_NETWORK, "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        endpoint = None
        for line in self.process.stderr:  # Chromium names its DevTools endpoint on stderr once it is up
            if line.startswith("DevTools listening on "):
                endpoint = line.split()[-1]
                break
        if endpoint is None:
            self.close()
            raise RuntimeError("chromium exited before it opened its DevTools endpoint")
        # what Chromium writes afterwards is read and dropped, lest a full pipe stop it
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        port = endpoint.split("/")[2]
        with urllib.request.urlopen(f"http://{port}/json/list") as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        # a generous limit on each read, so that a browser that stops answering fails the test instead of hanging it
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], suppress_origin=True, timeout=300)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []  # not yet waited for
        self.log: list[dict[str, Any]] = []  # every event
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Network.enable")
        self.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
                  uploadThroughput=-1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        self.events.append(message)
        self.log.append(message)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The first event named ``event`` since the last wait (read as it comes)."""
        while True:
            for index, message in enumerate(self.events):
                if message.get("method") == event:
                    del self.events[:index + 1]
                    return message
            self._event(json.loads(self.socket.recv()))

    def open(self, url: str) -> list[str]:
        """Open ``url`` and wait until it has loaded; the URLs the page requested."""
        self.events.clear()
        start = len(self.log)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        return [m["params"]["request"]["url"] for m in self.log[start:] if m.get("method") == "Network.requestWillBeSent"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def mouse(self, kind: str, x: float, y: float, **options: Any) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **options)

    def click(self, x: float, y: float) -> None:
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, button="left", buttons=1, clickCount=1)
        self.mouse("mouseReleased", x, y, button="left", buttons=0, clickCount=1)

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 5) -> None:
        self.mouse("mouseMoved", *start)
        self.mouse("mousePressed", *start, button="left", buttons=1, clickCount=1)
        for step in range(1, steps + 1):
            self.mouse("mouseMoved", start[0] + (end[0] - start[0]) * step / steps,
                       start[1] + (end[1] - start[1]) * step / steps, button="left", buttons=1)
        self.mouse("mouseReleased", *end, button="left", buttons=0, clickCount=1)

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", text=text)

    def press(self, key: str) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                      windowsVirtualKeyCode={"Enter": 13}.get(key, 0))

    def centre_of(self, selector_js: str) -> Optional[tuple[float, float]]:
        box = self.evaluate(f"(function () {{ var e = {selector_js}; if (!e) return null; "
                            "var r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        return None if box is None else (box[0], box[1])

    def capture(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            if getattr(self, "socket", None) is not None:
                self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Any:
    """One headless Chromium (1200x800) for a test module's pages (a pytest plugin: tests/conftest.py)."""
    chromium_path()
    opened = Browser(1200, 800)
    yield opened
    opened.close()
