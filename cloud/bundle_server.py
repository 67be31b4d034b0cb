"""Serving firmware bundles to CCMs that pull them (OTA.Update, the shadow's desired.ota, ota.poll_url).

`BundleServer(dir)` serves the files of `dir` over HTTP, and for every bundle `NAME.zip` a poll document
`NAME.json` = `{"version": <its manifest version>, "url": "NAME.zip"}` (plus `latest.json` for the newest
bundle), which is what a CCM's `ota.poll_url` reads.
"""

from __future__ import annotations

import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


def poll_document(path: str) -> dict | None:
    """{version, url, platform} of a bundle file, or None when it is not a readable bundle."""
    from ccm.ota.bundle import Bundle, BundleError

    try:
        with open(path, "rb") as f:
            b = Bundle(f, os.path.getsize(path))
    except (BundleError, OSError):
        return None
    return {"version": b.manifest.get("version"), "url": os.path.basename(path), "platform": b.manifest.get("platform")}


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        name = self.path.split("?", 1)[0].lstrip("/")
        if name.endswith(".json") and "/" not in name:
            doc = self._poll_doc(name[:-5])
            if doc is not None:
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        super().do_GET()

    def _poll_doc(self, stem: str) -> dict | None:
        root = self.directory
        if stem == "latest":
            zips = [os.path.join(root, n) for n in os.listdir(root) if n.endswith(".zip")]
            if not zips:
                return None
            return poll_document(max(zips, key=os.path.getmtime))
        path = os.path.join(root, stem + ".zip")
        return poll_document(path) if os.path.isfile(path) else None


class BundleServer:
    def __init__(self, directory: str, host: str = "127.0.0.1", port: int = 0):
        if not os.path.isdir(directory):
            raise OSError(f"{directory}: no such directory")
        self.directory = os.path.abspath(directory)
        self.httpd = ThreadingHTTPServer((host, port), partial(_Handler, directory=self.directory))
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="bundle server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BundleServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> BundleServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
