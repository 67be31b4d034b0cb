"""HTTP(S) GET into a file, as a stream: how `OTA.Update {url}`, the shadow trigger and the poll pull
a bundle (docs/protocol.md, OTA). HTTP/1.0 so the body is never chunked; redirects followed; a server that stalls
for `stall_ms` or sends more than `max_size` bytes ends the download with a FetchError that says so.
"""

import asyncio

from ccm.compat import wait_ms

MAX_LINE = 2048


class FetchError(Exception):
    pass


def split_url(url):
    """(scheme, host, port, path) of an http:// or https:// URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise FetchError("not an http:// or https:// URL: %s" % url)
    hostport, slash, path = rest.partition("/")
    host, colon, port = hostport.rpartition(":")
    if not colon or "]" in port:
        host, port = hostport, ""
    try:
        port = int(port) if port else (443 if scheme == "https" else 80)
    except ValueError:
        raise FetchError("bad port in %s" % url) from None
    if not host:
        raise FetchError("no host in %s" % url)
    return scheme, host.strip("[]"), port, "/" + path


def _ssl_context(ca_file, insecure=False):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif insecure:  # ota.ssl_insecure, set knowingly: only a signature (ota.require_signature) protects then
        if hasattr(ctx, "check_hostname"):
            ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:  # the bundle's SHA-256 is inside the bundle: whoever serves it would choose the firmware
        raise FetchError(
            "https:// without ota.ssl_ca_cert: the server's certificate cannot be checked. Set "
            "ota.ssl_ca_cert (or ota.ssl_insecure=true, knowingly)"
        )
    return ctx


async def _line(reader, stall_ms):
    line = await wait_ms(reader.readline(), stall_ms)
    if len(line) > MAX_LINE:
        raise FetchError("HTTP header line too long")
    return line


async def fetch(
    url, out, progress=None, stall_ms=10000, max_size=None, ca_file=None, redirects=3, opener=None, insecure=False
):
    """GET `url` into the file `out`; returns the number of bytes. `progress(done, total or None)`;
    `opener`: open_connection(host, port, ssl=None) (the board's connect(): names resolved without
    blocking), else asyncio's."""
    opener = opener or asyncio.open_connection
    for _ in range(redirects + 1):
        scheme, host, port, path = split_url(url)
        try:
            if scheme == "https":
                reader, writer = await wait_ms(opener(host, port, ssl=_ssl_context(ca_file, insecure)), stall_ms)
            else:
                reader, writer = await wait_ms(opener(host, port), stall_ms)
        except asyncio.TimeoutError:
            raise FetchError("%s: no connection within %d s" % (url, stall_ms // 1000)) from None
        except OSError as e:
            raise FetchError("%s: cannot connect (%s)" % (url, e)) from None
        try:
            writer.write(
                (
                    "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: ccm-bridge\r\nConnection: close\r\n\r\n" % (path, host)
                ).encode()
            )
            await writer.drain()
            status = await _line(reader, stall_ms)
            parts = status.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                raise FetchError("%s: not an HTTP answer" % url)
            code = int(parts[1])
            length = None
            location = None
            for _ in range(64):
                h = await _line(reader, stall_ms)
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode().partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v.strip())
                elif k == "location":
                    location = v.strip()
            if code in (301, 302, 303, 307, 308) and location:
                url = location if "://" in location else "%s://%s:%d%s" % (scheme, host, port, location)
                continue
            if code != 200:
                raise FetchError("%s: HTTP %d %s" % (url, code, (parts[2].decode().strip() if len(parts) > 2 else "")))
            if length is not None and max_size is not None and length > max_size:
                raise FetchError("%s: %d bytes, more than the %d bytes free" % (url, length, max_size))
            done = 0
            while length is None or done < length:
                try:
                    data = await wait_ms(reader.read(1024), stall_ms)
                except asyncio.TimeoutError:
                    raise FetchError(
                        "%s: stalled: no data for %d s at %d bytes" % (url, stall_ms // 1000, done)
                    ) from None
                if not data:
                    break
                done += len(data)
                if max_size is not None and done > max_size:
                    raise FetchError("%s: more than the %d bytes free" % (url, max_size))
                out.write(data)
                if progress:
                    progress(done, length)
            if length is not None and done < length:
                raise FetchError("%s: the connection closed at %d of %d bytes" % (url, done, length))
            return done
        except asyncio.TimeoutError:
            raise FetchError("%s: stalled: no answer for %d s" % (url, stall_ms // 1000)) from None
        except (OSError, ValueError) as e:
            raise FetchError("%s: %s" % (url, e)) from None
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass
    raise FetchError("%s: too many redirects" % url)
