"""Headless Chromium driven over its DevTools protocol, for checking report.html in a real browser
(tests/report/test_html.py) and taking screenshots of it (scripts/open_report.py --screenshots).

Standard library only: Chromium's `--remote-debugging-pipe` speaks the protocol as NUL-separated
JSON over file descriptors 3 (commands in) and 4 (replies and events out), so no websocket client
or Playwright is needed. The browser runs with a throwaway profile; every request the page makes
is recorded (`requests`), and so is every console error, uncaught exception and error log entry
(`errors`).

    with Browser() as b:
        b.open(Path("run/report.html"))
        b.evaluate("document.title")
        b.hover(x, y)
        b.screenshot(Path("shot.png"))
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The path of a Chromium-family browser on PATH ($CHROMIUM first), or None."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    return next((shutil.which(c) for c in CANDIDATES if shutil.which(c)), None)


class BrowserError(RuntimeError):
    """The browser did not start, answer or do what was asked."""


class Browser:
    """One headless Chromium with one page (see the module docstring).

    width / height: the viewport in CSS pixels; timeout: seconds to wait for any one reply."""

    def __init__(
        self,
        executable: str | None = None,
        width: int = 1280,
        height: int = 900,
        timeout: float = 30.0,
    ):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no Chromium on PATH (chromium, chromium-browser, google-chrome)")
        self.width, self.height, self.timeout = width, height, timeout
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.events: list[dict] = []
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._next = 0
        self._session = None
        self._proc = None

    # -- process and transport ------------------------------------------------------------------

    def __enter__(self) -> Browser:
        self._profile = tempfile.mkdtemp(prefix="jaxcirc-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        def child_fds():  # the protocol's fixed descriptors: 3 = commands in, 4 = replies out
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            self.executable,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            args,
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(res_w)
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, browser=True
        )
        self._session = attached["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._proc and self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        finally:
            os.close(self._cmd_w)
            shutil.rmtree(self._profile, ignore_errors=True)

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._res_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self._dispatch(json.loads(raw))
        os.close(self._res_r)
        with self._cond:
            self._cond.notify_all()

    def _dispatch(self, msg: dict) -> None:
        with self._cond:
            if "id" in msg:
                self._replies[msg["id"]] = msg
            else:
                self.events.append(msg)
                self._note(msg)
            self._cond.notify_all()

    def _note(self, msg: dict) -> None:
        """Record requests and errors from protocol events."""
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(p["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
            )
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append(
                "exception: " + (d.get("exception", {}).get("description") or d.get("text", ""))
            )
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")

    def send(self, method: str, params: dict | None = None, browser: bool = False) -> dict:
        """One protocol command; returns its result (BrowserError on an error reply)."""
        with self._cond:
            self._next += 1
            i = self._next
        msg = {"id": i, "method": method, "params": params or {}}
        if self._session and not browser:
            msg["sessionId"] = self._session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while i not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self._proc.poll() is not None:
                    raise BrowserError(f"{method}: no reply from Chromium")
                self._cond.wait(min(left, 0.5))
            reply = self._replies.pop(i)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    # -- page actions ---------------------------------------------------------------------------

    def open(self, path: Path, ready: str = "window.__report && window.__report.ready") -> float:
        """Load the file at `path` and wait until the JS expression `ready` is true; returns the
        seconds from navigation to ready. `requests` and `errors` start afresh with each load."""
        self.requests.clear()
        self.errors.clear()
        t0 = time.monotonic()
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()})
        self.wait_for(ready)
        return time.monotonic() - t0

    def wait_for(self, expression: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.evaluate(f"!!({expression})"):
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression}; errors: {self.errors}")
            time.sleep(0.05)

    def evaluate(self, expression: str):
        """The JSON value of a JS expression in the page (BrowserError if it throws)."""
        r = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError(d.get("exception", {}).get("description") or d.get("text"))
        return r.get("result", {}).get("value")

    def centre_of(self, selector: str) -> tuple[float, float]:
        """Viewport coordinates of the centre of the first element matching `selector`, scrolled
        into view first."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        if not box:
            raise BrowserError(f"no element matches {selector}")
        return box[0], box[1]

    def hover(self, x: float, y: float) -> None:
        """Move the mouse to viewport (x, y), as a user's pointer would."""
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    def key(self, key: str, key_code: int, text: str | None = None) -> None:
        """Press and release one key in the focused element, as a keyboard would: e.g.
        ("ArrowDown", 40), or ("Enter", 13, "\r") for a key that types text."""
        base = {"key": key, "code": key, "windowsVirtualKeyCode": key_code}
        down = {"type": "keyDown", "text": text} if text else {"type": "rawKeyDown"}
        self.send("Input.dispatchKeyEvent", {**down, **base})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **base})

    def focus(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")

    def screenshot(self, path: Path, selector: str | None = None, full_page: bool = False) -> Path:
        """A PNG of the viewport, of the element matching `selector`, or of the whole page."""
        params: dict = {"format": "png"}
        if selector:
            r = self.evaluate(
                f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                " e.scrollIntoView({block: 'start'}); const r = e.getBoundingClientRect();"
                " return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()"
            )
            params["clip"] = {"x": r[0], "y": r[1], "width": r[2], "height": r[3], "scale": 1}
            params["captureBeyondViewport"] = True
        elif full_page:
            w, h = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["clip"] = {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


VIEWS = {
    "intro": "#sec-intro",
    "extraction": "#sec-extract",
    "vectors": "#fig-vectors",
    "alignment": "#fig-alignment",
    "steering": "#fig-steering",
    "patching": "#fig-patching",
    "heads": "#fig-heads",
    "head-tables": "#fig-head-tables",
}


def screenshot_views(page: Path, out_dir: Path, browser: Browser | None = None) -> list[Path]:
    """PNGs of report.html's main views (VIEWS) as the page first shows them, in `out_dir`; opens
    its own browser unless one is given."""
    if browser is None:
        with Browser(width=1300, height=1000) as b:
            return screenshot_views(page, out_dir, b)
    browser.open(page)
    out = []
    for name, selector in VIEWS.items():
        if browser.evaluate(f"!!document.querySelector({json.dumps(selector)})"):
            out.append(browser.screenshot(Path(out_dir) / f"{name}.png", selector=selector))
    return out
