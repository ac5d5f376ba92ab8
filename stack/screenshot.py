"""`python -m stack.screenshot OUT.png [URL]`: a picture of the Flink web UI, headless;
`--status`: a picture of what `python -m stack status` prints.

Used to keep the README's screenshots current. Needs Debian's `chromium` (`apt-get install
chromium`); the page is rendered with background networking off, so nothing but the local
web UI (or a local file) is contacted.
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
import tempfile
from pathlib import Path

from job.config import parse_args
from stack import status
from stack.flink import FlinkCluster
from stack.postgres import PostgresServer

_TERMINAL = """<!doctype html><meta charset="utf-8"><title>stack status</title>
<body style="margin:0;background:#1e1f22"><pre style="margin:0;padding:18px 22px;
color:#e6e6e6;font:15px/1.45 'DejaVu Sans Mono',monospace"><span style="color:#7fb7ff"
>$ python -m stack status</span>
{text}</pre></body>"""


def job_overview_url(cluster: FlinkCluster, name: str = "txn-correlator") -> str:
    running = [j for j in cluster.api.jobs() if j["name"] == name and j["state"] == "RUNNING"]
    if not running:
        raise SystemExit(f"no RUNNING job named {name} at {cluster.url}")
    return f"{cluster.url}/#/job/running/{running[0]['jid']}/overview"


def screenshot(url: str, out: Path, size: str = "1600,1000", wait_ms: int = 6000) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--window-size={size}",
                # Virtual time lets the single-page app fetch its data before the picture.
                f"--virtual-time-budget={wait_ms}", f"--screenshot={out.resolve()}", url,
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


def status_text(cluster: FlinkCluster, database: PostgresServer, job_args: list[str]) -> str:
    """What `python -m stack status` prints for the correlator of these options."""
    config = parse_args(job_args)
    report = status.collect(status.Product(cluster, config, None, cluster.taskmanagers))
    if report.get("counters") is not None:
        report["open"] = status.open_transactions(database.url)
    return status.render(report)


def status_screenshot(text: str, out: Path) -> None:
    """The status screen as a terminal would show it, sized to its text."""
    lines = text.splitlines()
    width = 40 + 9 * max(len(line) for line in [*lines, "$ python -m stack status"])
    height = 40 + 22 * (len(lines) + 1)
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "status.html"
        page.write_text(_TERMINAL.format(text=html.escape(text)))
        screenshot(page.as_uri(), out, size=f"{width},{height}", wait_ms=500)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stack.screenshot", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("url", nargs="?", help="default: the running job's overview page")
    parser.add_argument("--rest-port", type=int, default=8081)
    parser.add_argument("--postgres-port", type=int, default=5432)
    parser.add_argument("--status", action="store_true", help="the status screen instead")
    args, job_args = parser.parse_known_args(argv)
    cluster = FlinkCluster(rest_port=args.rest_port)
    if args.status:
        text = status_text(cluster, PostgresServer(port=args.postgres_port), job_args)
        status_screenshot(text, args.out)
        print(f"wrote {args.out}:\n{text}")
        return
    url = args.url or job_overview_url(cluster)
    screenshot(url, args.out)
    print(f"wrote {args.out} from {url}")


if __name__ == "__main__":
    main()
