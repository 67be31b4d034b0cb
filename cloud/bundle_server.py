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
    """`tls=(certfile, keyfile)` serves HTTPS."""

    def __init__(self, directory: str, host: str = "127.0.0.1", port: int = 0, tls: tuple[str, str] | None = None):
        if not os.path.isdir(directory):
            raise OSError(f"{directory}: no such directory")
        self.directory = os.path.abspath(directory)
        self.httpd = ThreadingHTTPServer((host, port), partial(_Handler, directory=self.directory))
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="bundle server", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

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


class BundleRefused(ValueError):
    """An upload that is not a bundle a CCM would take; the message says why."""


class BundleStore:
    """The bundles the dashboard can push: a directory of NAME.zip, each checked in full on upload
    (manifest, every part's size and SHA-256: `ccm bundle-info`'s checks) so a bad one is refused with
    the reason before any device sees it."""

    MAX_SIZE = 32 * 1024 * 1024

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.directory = os.path.abspath(directory)

    @staticmethod
    def safe_name(name: str) -> str:
        base = os.path.basename((name or "").replace("\\", "/")).strip()
        base = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in base).lstrip(".")
        if not base:
            raise BundleRefused("the bundle needs a file name")
        return base if base.endswith(".zip") else base + ".zip"

    def path(self, name: str) -> str:
        safe = self.safe_name(name)
        path = os.path.join(self.directory, safe)
        if safe != name or not os.path.isfile(path):
            raise FileNotFoundError(name)
        return path

    def entry(self, name: str) -> dict:
        from pc.fwbundle import inspect

        path = self.path(name)
        m = inspect(path, check=False).manifest
        return {
            "name": name,
            "version": m.get("version"),
            "platform": m.get("platform"),
            "build_id": m.get("build_id"),
            "parts": sorted((m.get("parts") or {}).keys()),
            "size": os.path.getsize(path),
            "uploaded": os.path.getmtime(path),
        }

    def list(self) -> list[dict]:
        from ccm.ota.bundle import BundleError

        out = []
        for n in sorted(os.listdir(self.directory)):
            if n.endswith(".zip"):
                try:
                    out.append(self.entry(n))
                except (BundleError, OSError):
                    continue
        return out

    def save(self, name: str, chunks) -> dict:
        """Store an upload (an iterable of byte chunks) as NAME.zip once it checks out; BundleRefused
        with the reason otherwise (nothing is kept)."""
        from ccm.ota.bundle import BundleError
        from pc.fwbundle import inspect

        safe = self.safe_name(name)
        tmp = os.path.join(self.directory, f".upload-{os.getpid()}-{threading.get_ident()}")
        try:
            size = 0
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.MAX_SIZE:
                        raise BundleRefused(f"larger than {self.MAX_SIZE // (1024 * 1024)} MiB: not a CCM bundle")
                    f.write(chunk)
            if size == 0:
                raise BundleRefused("the upload is empty")
            try:
                inspect(tmp)
            except BundleError as e:
                raise BundleRefused(f"not a valid bundle: {e}") from None
            os.replace(tmp, os.path.join(self.directory, safe))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.entry(safe)

    def delete(self, name: str) -> None:
        os.unlink(self.path(name))
