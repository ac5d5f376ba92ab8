"""`python -m stack.screenshot OUT.png [URL]`: a picture of the Flink web UI, headless.

Used to keep the README's screenshot of the job graph current. Needs Debian's `chromium`
(`apt-get install chromium`); the page is rendered with background networking off, so
nothing but the local web UI is contacted.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from stack.flink import FlinkCluster


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stack.screenshot", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("url", nargs="?", help="default: the running job's overview page")
    parser.add_argument("--rest-port", type=int, default=8081)
    args = parser.parse_args(argv)
    url = args.url or job_overview_url(FlinkCluster(rest_port=args.rest_port))
    screenshot(url, args.out)
    print(f"wrote {args.out} from {url}")


if __name__ == "__main__":
    main()
