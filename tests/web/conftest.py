"""The web client in a real browser: a real `hanul-local` host on a free
loopback port (its own data directory), and Debian's Chromium driven by
Playwright (no browser download: `executable_path`).

Screenshots of each page at phone and desktop widths go to
`$WEB_ARTIFACTS` (default `.build/web-artifacts`).
"""

import http.server
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = pathlib.Path(os.environ.get("WEB_ARTIFACTS", ROOT / ".build" / "web-artifacts"))
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _binary() -> str:
    if os.environ.get("HANUL_LOCAL_BIN"):
        return os.environ["HANUL_LOCAL_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", ROOT / "target")
    return str(pathlib.Path(target) / "debug" / "hanul-local")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Host:
    """One running hanul-local; `api` calls it as a client would."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="hanul-web-")
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log = open(pathlib.Path(self.dir.name) / "host.log", "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HANUL_", "AWS_"))}
        env.update(
            RUST_LOG="warn",
            # Quick presence and sweeps, so offline shows within the test.
            CHAT_HEARTBEAT_SECONDS=os.environ.get("CHAT_HEARTBEAT_SECONDS", "5"),
        )
        self.proc = subprocess.Popen(
            [_binary(), "--addr", f"127.0.0.1:{port}", "--data-dir", str(pathlib.Path(self.dir.name) / "data")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hanul-local exited: {self.read_log()}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"hanul-local did not answer: {self.read_log()}")

    def read_log(self) -> str:
        return (pathlib.Path(self.dir.name) / "host.log").read_text(errors="replace")[-4000:]

    def api(self, method, path, body=None, token=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, (json.loads(text) if text else None)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.dir.cleanup()


@pytest.fixture(scope="session")
def host():
    h = Host()
    yield h
    h.stop()


class Landing(http.server.BaseHTTPRequestHandler):
    """Where short links lead: a page that says where it is."""

    def do_GET(self):
        body = f"landed on {self.path}".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def landing():
    """`http://landing.example` in the browser (its DNS rule points here)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Landing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="session")
def browser(landing):
    executable = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    rules = f"--host-resolver-rules=MAP landing.example:80 127.0.0.1:{landing}"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=[*CHROMIUM_ARGS, rules])
        yield b
        b.close()


class Person:
    """A browser context of one's own (cookies, storage, tab)."""

    def __init__(self, browser, host, name, **context):
        self.name = name
        self.host = host
        self.context = browser.new_context(viewport=DESKTOP, **context)
        self.problems = []
        self.page = self.open_page()

    def open_page(self):
        page = self.context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda e: self.problems.append(f"{self.name}: page error: {e}"))
        # A refused load (CSP), a script error: anything the console calls an error.
        page.on(
            "console",
            lambda m: m.type == "error"
            and "status of 4" not in m.text  # an API refusal the page shows in words
            and self.problems.append(f"{self.name}: console: {m.text}"),
        )
        return page

    def token(self):
        session = self.page.evaluate("() => JSON.parse(localStorage.getItem('hanul.session'))")
        return session["accessToken"]

    def shoot(self, name):
        """The current page at phone and desktop widths."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
            self.page.set_viewport_size(size)
            self.page.wait_for_timeout(150)
            self.page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
        self.page.set_viewport_size(DESKTOP)

    def close(self):
        self.context.close()


@pytest.fixture
def people(browser, host):
    made = []

    def make(name, **context):
        person = Person(browser, host, name, **context)
        made.append(person)
        return person

    yield make
    problems = [p for person in made for p in person.problems]
    for person in made:
        person.close()
    assert not problems, "\n".join(problems)
