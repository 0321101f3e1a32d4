"""Open a local HTML file in headless Chromium over the DevTools protocol (pipe, no port, no network).

Used by the report test: it loads the page, collects every console message, uncaught exception,
log entry (failed resource loads land there) and failed network request, evaluates a script in the
page, and takes a full-page screenshot. The network is shut off with an unroutable proxy, so a page
that tried to fetch anything from outside would show a failed request.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageVisit:
    screenshot: bytes
    evaluated: Any
    console: list[dict] = field(default_factory=list)  # console API calls: {"type", "text"}
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)  # Log.entryAdded at level error
    failed_requests: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """Everything a developer would see in red in the console."""
        return (
            [f"console.{c['type']}: {c['text']}" for c in self.console if c["type"] in ("error", "assert")]
            + self.exceptions
            + self.log_errors
            + self.failed_requests
        )


class _Pipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int, timeout: float) -> None:
        self.proc, self.write_fd, self.read_fd, self.timeout = proc, write_fd, read_fd, timeout
        self.buffer = b""
        self.events: list[dict] = []
        self.next_id = 0

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method:
                return event
            self.events.append(event)


def visit(
    path: Path, expression: str, *, width: int = 1280, max_height: int = 6000, timeout: float = 60.0
) -> PageVisit:
    """Load ``path``, evaluate ``expression`` (its JSON-able value is returned) and screenshot the page."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium is not installed (make setup installs it)")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="diffsteer-chromium-")
    args = [
        chromium,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--proxy-server=127.0.0.1:9",  # nothing outside the file can load
        "--proxy-bypass-list=<-loopback>",
        f"--user-data-dir={profile}",
        "--remote-debugging-pipe",
        "about:blank",
    ]

    def wire_fds() -> None:  # Chromium reads commands on fd 3 and writes replies on fd 4
        read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)  # never clobbered below
        os.dup2(read_end, 3)
        os.dup2(write_end, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=False,  # close_fds would also close the fds 3 and 4 that wire_fds makes
        preexec_fn=wire_fds,
    )
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(proc, to_chrome_w, from_chrome_r, timeout)
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        pipe.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        pipe.wait_for("Page.loadEventFired")
        result = pipe.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        evaluated = result.get("result", {}).get("value")
        metrics = pipe.send("Page.getLayoutMetrics", session=session)
        height = min(max_height, int(metrics["cssContentSize"]["height"]))
        shot = pipe.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
            session=session,
        )
        # Let late console messages arrive before reading the events.
        pipe.send("Runtime.evaluate", {"expression": "1"}, session=session)
        page = PageVisit(screenshot=base64.b64decode(shot["data"]), evaluated=evaluated)
        for event in pipe.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                page.console.append({"type": params.get("type"), "text": text})
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                thrown = details.get("exception", {}).get("description")
                page.exceptions.append(thrown or details.get("text", ""))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                page.log_errors.append(params["entry"].get("text", ""))
            elif method == "Network.loadingFailed":
                page.failed_requests.append(f"request failed: {params.get('errorText')}")
        try:
            pipe.send("Browser.close")
        except (RuntimeError, TimeoutError):
            pass
        return page
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        shutil.rmtree(profile, ignore_errors=True)
