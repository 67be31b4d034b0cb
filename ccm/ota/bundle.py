"""Firmware bundles (docs/protocol.md, OTA): a zip compatible with `mos create-fw-bundle`, checked as a stream.

    manifest.json        first entry, stored: name, platform, version, build_id, build_timestamp,
                         parts{name: {type, src, addr, size, cs_sha1, cs_sha256, ...}}
    <src of each part>   the part's bytes, stored or deflated

A signature, when present, is mos's: ECDSA P-256 over SHA-256 of the manifest's bytes, DER, base64, as
`{"sig0": …}` JSON in the manifest's local extra field (header id 0x293a). The same code checks a
bundle on the CCM (from its staging file) and on the PC (`ccm bundle verify`).
"""

import binascii
import hashlib
import json

from ccm.ota import zipread
from ccm.ota.steps import drain

MANIFEST = "manifest.json"
SIG_EXTRA_ID = 0x293A  # mos: "looks like a smiley face when written in LE"
MAX_MANIFEST = 8192
CHUNK = 512


class BundleError(ValueError):
    """What is wrong with a bundle. A ValueError: the CCM catches it without loading this module."""


def _hex(b):
    return binascii.hexlify(b).decode()


class Bundle:
    """An opened bundle file: its manifest and where each part's bytes are."""

    def __init__(self, f, size):
        self.f = f
        self.size = size
        try:
            self.entries = zipread.entries(f, size)
        except zipread.ZipError as e:
            raise BundleError("not a firmware bundle: %s" % e) from None
        except (ValueError, UnicodeError):
            raise BundleError("not a firmware bundle: the zip directory is corrupt") from None
        if not self.entries or self.entries[0].name.split("/")[-1] != MANIFEST:
            if any(e.name.split("/")[-1] == MANIFEST for e in self.entries):
                raise BundleError("manifest.json is not the first entry: the CCM reads bundles as a stream")
            raise BundleError("no manifest.json in the bundle")
        m = self.entries[0]
        if m.method != zipread.STORED:
            raise BundleError("manifest.json must be stored, not compressed")
        if m.usize > MAX_MANIFEST:
            raise BundleError("manifest.json is %d bytes (at most %d)" % (m.usize, MAX_MANIFEST))
        try:
            self.manifest_bytes = _read_all(zipread.EntryReader(f, m))
            manifest = json.loads(self.manifest_bytes)
        except zipread.ZipError as e:
            raise BundleError(str(e)) from None
        except ValueError:
            raise BundleError("manifest.json is not JSON") from None
        if type(manifest) is not dict or type(manifest.get("parts")) is not dict or not manifest["parts"]:
            raise BundleError("manifest.json has no parts")
        self.manifest = manifest
        self.by_name = {}
        for e in self.entries[1:]:
            self.by_name[e.name.split("/")[-1]] = e

    @property
    def parts(self):
        return self.manifest["parts"]

    def signatures(self):
        """The base64 signatures (sig0, sig1, …) from the manifest's extra field."""
        data = zipread.extra_field(self.entries[0].extra, SIG_EXTRA_ID)
        if data is None:
            return []
        try:
            attrs = json.loads(data)
        except ValueError:
            raise BundleError("the signature field is not JSON") from None
        return [v for k, v in sorted(attrs.items()) if k.startswith("sig") and type(v) is str]

    def entry(self, name):
        """The zip entry holding part `name`."""
        part = self.parts[name]
        src = part.get("src")
        if type(src) is not str or not src:
            raise BundleError("part %s: no src" % name)
        e = self.by_name.get(src.split("/")[-1])
        if e is None:
            raise BundleError("part %s: %s is missing from the bundle" % (name, src))
        return e

    def reader(self, name):
        part = self.parts[name]
        return zipread.EntryReader(self.f, self.entry(name), part.get("zwbits", 15))

    def check_signature(self, pubkey, required=False):
        """None when a signature by `pubkey` ((x, y), see p256) verifies; BundleError otherwise.
        Without a pubkey, only `required` matters: a required signature needs a key to check it."""
        if pubkey is None and not required:
            return
        from ccm.ota import p256

        try:
            p256.check_signed(self.manifest_bytes, self.signatures(), pubkey, required)
        except p256.SignatureError as e:
            raise BundleError(str(e)) from None

    def check_platform(self, platforms):
        platform = self.manifest.get("platform")
        if platforms is not None and platform not in platforms:
            raise BundleError("the bundle is for platform %r; this CCM takes %s" % (platform, " or ".join(platforms)))

    def check(self, platforms=None, pubkey=None, require_signature=False):
        """Everything but applying: platform, signature, and every part's size and SHA-256 (streamed)."""
        drain(self.check_steps(platforms, pubkey, require_signature))

    def check_steps(self, platforms=None, pubkey=None, require_signature=False):
        """check() a chunk at a time: a generator (the CCM runs it with compat.paced)."""
        self.check_platform(platforms)
        self.check_signature(pubkey, require_signature)
        yield from self.parts_steps()

    def parts_steps(self):
        """Every part's size and SHA-256, a chunk at a time (the CCM checks the signature on its own)."""
        for name, part in self.parts.items():
            if type(part) is not dict:
                raise BundleError("part %s is not an object" % name)
            yield from self.copy_steps(name, None)

    def copy_part(self, name, out, progress=None):
        """Stream part `name` into `out` (a file, or None to only check it); its size and SHA-256 must
        match the manifest. Returns the size."""
        return drain(self.copy_steps(name, out, progress))

    def copy_steps(self, name, out, progress=None):
        """copy_part() a chunk at a time: a generator that returns the size."""
        part = self.parts[name]
        want_sha = part.get("cs_sha256")
        if type(want_sha) is not str or len(want_sha) != 64:
            raise BundleError("part %s: no cs_sha256 in the manifest" % name)
        size = part.get("size")
        e = self.entry(name)
        if type(size) is not int or size != e.usize:
            raise BundleError("part %s: the manifest says %s bytes, the bundle holds %d" % (name, size, e.usize))
        r = self.reader(name)
        h = hashlib.sha256()
        done = 0
        buf = bytearray(CHUNK)  # one piece for the whole part: on a small heap each chunk's own was one too many
        mv = memoryview(buf)
        try:
            while True:
                n = r.readinto(buf)
                if not n:
                    break
                chunk = mv[:n]
                h.update(chunk)
                if out is not None:
                    out.write(chunk)
                done += n
                if progress:
                    progress(done, size)
                yield
        except zipread.ZipError as e:
            raise BundleError("part %s: %s" % (name, e)) from None
        if _hex(h.digest()) != want_sha.lower():
            raise BundleError("part %s: SHA-256 mismatch: the bundle is corrupt or was altered" % name)
        return done


def _read_all(r):
    out = b""
    while True:
        chunk = r.read(CHUNK)
        if not chunk:
            return out
        out += chunk
