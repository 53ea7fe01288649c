"""Renders an evaluation report in headless Chromium (Debian's `chromium` package) and fails on what a reader
would meet: a console error, a page error, or an image that did not load. Writes screenshots to look at.

`make report-check` runs it on the last run's report. Chromium is driven over the DevTools protocol on a
loopback port it picks itself, with a fresh profile, no network services and no sandbox (we run as root).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
WIDTH = 1200
SHOT_HEIGHT = 1600  # one screenshot per this many CSS pixels of the page
TIMEOUT_S = 60.0
# Every <img> must have loaded with a size; the report's figure data must parse as JSON.
PAGE_CHECKS = """(() => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 40));
  const badData = [...document.querySelectorAll('script.figure-data')].filter(s => {
    try { JSON.parse(s.textContent); return false; } catch (e) { return true; } }).map(s => s.dataset.figure);
  return JSON.stringify({images: document.images.length, broken, badData,
                         height: document.documentElement.scrollHeight, title: document.title});
})()"""


def find_chromium() -> str | None:
    """The headless browser the check drives (Debian's chromium or chromium-browser), None when none is installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _DevTools:
    """The few DevTools calls the check needs, over one page's websocket."""

    def __init__(self, url: str):
        import websocket  # websocket-client

        self.socket = websocket.create_connection(url, timeout=TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Chromium sent no {method} within {timeout:.0f} s")
            self.events.append(json.loads(self.socket.recv()))

    def close(self) -> None:
        self.socket.close()


def _start(chromium: str, profile: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--window-size={WIDTH},{SHOT_HEIGHT}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + TIMEOUT_S
    while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{chromium} did not start its DevTools endpoint (exit code {process.poll()})")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT_S) as answer:
        pages = [t for t in json.loads(answer.read()) if t.get("type") == "page"]
    if not pages:
        process.kill()
        raise RuntimeError("Chromium opened no page")
    return process, pages[0]["webSocketDebuggerUrl"]


def check_report(report: str | Path, screenshots: str | Path | None = None, chromium: str | None = None) -> dict:
    """{"problems": [...], "images": n, "screenshots": [paths], "title": ...} for the report at `report`."""
    report = Path(report).resolve()
    if not report.is_file():
        raise FileNotFoundError(f"no report at {report}")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH: apt-get install chromium (Debian's package)")
    with tempfile.TemporaryDirectory(prefix="report-check-") as profile:
        process, url = _start(chromium, Path(profile))
        try:
            tools = _DevTools(url)
            for domain in ("Page", "Runtime", "Log"):
                tools.call(f"{domain}.enable")
            tools.call(
                "Emulation.setDeviceMetricsOverride", width=WIDTH, height=SHOT_HEIGHT, deviceScaleFactor=1, mobile=False
            )
            tools.call("Page.navigate", url=report.as_uri())
            tools.wait_for("Page.loadEventFired")
            page = json.loads(
                tools.call("Runtime.evaluate", expression=PAGE_CHECKS, returnByValue=True)["result"]["value"]
            )
            paths = _screenshots(tools, page["height"], Path(screenshots)) if screenshots else []
            problems = _problems(tools.events, page)
            tools.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    return {"problems": problems, "images": page["images"], "screenshots": paths, "title": page["title"]}


def _problems(events: list[dict], page: dict) -> list[str]:
    problems = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append(
                "console error: "
                + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            )
        elif method == "Runtime.exceptionThrown":
            problems.append("page error: " + params.get("exceptionDetails", {}).get("text", ""))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            problems.append("console error: " + params["entry"].get("text", ""))
    problems += [f"image did not load: {name}" for name in page["broken"]]
    problems += [f"figure data is not JSON: {name}" for name in page["badData"]]
    if page["images"] == 0:
        problems.append("the page has no images")
    return problems


def _screenshots(tools: _DevTools, height: int, directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, top in enumerate(range(0, max(height, 1), SHOT_HEIGHT)):
        clip = {"x": 0, "y": top, "width": WIDTH, "height": min(SHOT_HEIGHT, height - top), "scale": 1}
        shot = tools.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path = directory / f"report-{index + 1:02d}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        paths.append(str(path))
    return paths


def latest_report(output: str | Path) -> Path:
    """report.html of the newest run under a `make pipeline-run` OUTPUT folder."""
    reports = sorted(Path(output, "pipeline_root").glob("*/evaluation/report.html"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise FileNotFoundError(f"no evaluation/report.html under {output}/pipeline_root: run make pipeline-run first")
    return reports[-1]


def main() -> None:
    """`make report-check`: opens the newest (or the given) report in a browser and saves its screenshots."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", nargs="?", help="report.html; default: the newest under --output")
    parser.add_argument("--output", default="runs/local", help="a make pipeline-run OUTPUT folder")
    parser.add_argument("--screenshots", default="runs/report-check", help="folder for the PNG screenshots")
    args = parser.parse_args()
    report = Path(args.report) if args.report else latest_report(args.output)
    result = check_report(report, args.screenshots)
    print(
        f"report-check: {report}: {result['images']} images, {len(result['screenshots'])} screenshots in "
        f"{args.screenshots}"
    )
    for problem in result["problems"]:
        print(f"  {problem}")
    if result["problems"]:
        sys.exit(f"report-check: {len(result['problems'])} problem(s)")
    print("report-check: no console error, every image loaded")


if __name__ == "__main__":
    main()
