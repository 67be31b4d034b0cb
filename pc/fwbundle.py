"""Making and inspecting firmware bundles on the PC: `ccm create-fw-bundle`, `ccm bundle info|verify`.

The format is mos's (see ccm/ota/bundle.py, which reads it on the CCM and here): a zip whose first entry
is a stored `manifest.json`, each part stored under its src's basename with its size, SHA-1 and
SHA-256 in the manifest. The archive is written here byte by byte (no data descriptors, sizes in every
local header) so a CCM can read it from the front. `--compress` deflates parts with a 4 KiB window
(recorded as `zwbits` in the part) so the CCM inflates them in little RAM.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from ccm.ota.bundle import MANIFEST, SIG_EXTRA_ID, Bundle, BundleError
from pc import fwid

ZWBITS = 12  # deflate window of --compress: 4 KiB on the CCM instead of 32 KiB
HEX_GAP = 512  # Intel HEX: gaps shorter than this are filled with 0xFF (as mos does), longer ones split parts
PLATFORMS = ("ccm_host", "esp32")
# mos's part fields, in the order mos writes them; other k=v attributes follow
_PART_FIELDS = ("type", "src", "addr", "size", "fill", "flash", "cs_sha1", "cs_sha256")


class SpecError(ValueError):
    """A part spec or an input file the user must fix; the message says how."""


def parse_value(v: str) -> Any:
    """A k=v value as mos reads it: true/false, a quoted string, an integer (0x… too), else the text."""
    if v == "":
        return ""
    if v in ("true", "false"):
        return v == "true"
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1].replace("\\" + v[0], v[0])
    try:
        return int(v, 0)
    except ValueError:
        return v


def parse_part_spec(spec: str) -> tuple[str, dict]:
    """`name:k=v,k=v` → (name, attributes)."""
    name, sep, props = spec.partition(":")
    if not sep or not name:
        raise SpecError(f"invalid part spec {spec!r}: must be name:prop=value,... e.g. host_fw:type=STM32,src=fw.bin")
    attrs: dict = {}
    for prop in props.split(","):
        if not prop:
            continue
        k, eq, v = prop.partition("=")
        if not eq or not k:
            raise SpecError(f"invalid property {prop!r} in {spec!r}: must be prop=value")
        attrs[k] = parse_value(v)
    if not attrs.get("src"):
        raise SpecError(f"part {name}: give its file, e.g. {name}:type=STM32,src=FIRMWARE.BIN,addr=0x8000000")
    return name, attrs


@dataclass
class Part:
    name: str
    attrs: dict
    data: bytes = b""

    def manifest_entry(self) -> dict:
        a = dict(self.attrs)
        a["src"] = os.path.basename(a["src"])
        a["size"] = len(self.data)
        a["cs_sha1"] = hashlib.sha1(self.data).hexdigest()
        a["cs_sha256"] = hashlib.sha256(self.data).hexdigest()
        ordered = {k: a[k] for k in _PART_FIELDS if k in a}
        ordered.update({k: v for k, v in a.items() if k not in ordered})
        return ordered


def hex_parts(name: str, attrs: dict, path: str) -> list[Part]:
    """An Intel HEX file as parts: one per run of data, split where a gap is HEX_GAP bytes or more."""
    from intelhex import IntelHex, IntelHexError

    try:
        ih = IntelHex(path)
    except (IntelHexError, OSError, ValueError) as e:
        raise SpecError(f"part {name}: {path} is not a readable Intel HEX file: {e}") from None
    runs: list[list[int]] = []
    for start, end in ih.segments():
        if runs and start - runs[-1][1] < HEX_GAP:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    if not runs:
        raise SpecError(f"part {name}: {path} holds no data")
    stem = os.path.splitext(os.path.basename(path))[0]
    out = []
    for i, (start, end) in enumerate(runs):
        data = ih.tobinstr(start=start, end=end - 1, pad=0xFF)
        a = dict(attrs, addr=start)
        if len(runs) == 1:
            a["src"] = stem + ".bin"
            out.append(Part(name, a, data))
        else:
            a["src"] = f"{stem}.{i}.bin"
            out.append(Part(f"{name}.{i}", a, data))
    return out


def load_parts(specs: list[str], src_dir: str | None = None) -> list[Part]:
    parts: list[Part] = []
    for spec in specs:
        name, attrs = parse_part_spec(spec)
        path = attrs["src"]
        if src_dir and not os.path.isabs(path):
            path = os.path.join(src_dir, path)
        if not os.path.isfile(path):
            raise SpecError(f"part {name}: no such file {path}")
        if path.lower().endswith(".hex"):
            parts += hex_parts(name, attrs, path)
            continue
        with open(path, "rb") as f:
            data = f.read()
        stamped = fwid.fw_id(data)  # what the host will report running this (host_lib/c's slot)
        if stamped and "fw_id" not in attrs:
            attrs["fw_id"] = stamped
        parts.append(Part(name, attrs, data))
    if not parts:
        raise SpecError("no parts: give at least one, e.g. host_fw:type=STM32,src=FIRMWARE.BIN,addr=0x8000000")
    return parts


def manifest_for(name: str, platform: str, parts: list[Part], version=None, build_id=None, description=None) -> dict:
    now = time.gmtime()
    m: dict = {"name": name, "platform": platform}
    if description:
        m["description"] = description
    m["version"] = version or time.strftime("%Y%m%d%H%M%S", now)
    m["build_id"] = build_id or f"{time.strftime('%Y%m%d-%H%M%S', now)}/{_who()}"
    m["build_timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", now)
    m["parts"] = {p.name: p.manifest_entry() for p in parts}
    return m


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 - only a label
        return "ccm"


SIGNING_KEY = "ccm-signing.pem"  # what `ccm keys new` writes and `ccm build` signs with by default


def public_path(key_path: str) -> str:
    """Where the public half of a signing key is kept: KEY.pem -> KEY.pub.pem."""
    return key_path.removesuffix(".pem") + ".pub.pem"


def new_signing_key(path: str = SIGNING_KEY) -> str:
    """An ECDSA P-256 key pair for signing bundles: the private key at `path` (PEM, readable by its owner
    only) and the public one beside it (KEY.pub.pem). Refuses to overwrite a key. Returns the public path."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pub = public_path(path)
    for p in (path, pub):
        if os.path.exists(p):
            raise SpecError(
                f"{p} exists: a signing key is not replaced (the modules that trust it would refuse updates)"
            )
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        with open(pub, "wb") as f:
            f.write(public_pem(key))
    except OSError as e:
        raise SpecError(f"cannot write {e.filename}: {e.strerror}. Pick a writable path (-o)") from None
    return pub


def public_pem(key) -> bytes:
    """The PEM public key a module checks signatures with (ota.pubkey)."""
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_signing_key(path: str):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        with open(path, "rb") as f:
            key = load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise SpecError(f"--sign-key {path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SpecError(f"--sign-key {path}: must be an ECDSA P-256 key (openssl ecparam -name prime256v1 -genkey)")
    return key


def sign_manifest(manifest_bytes: bytes, keys: list) -> dict:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return {
        f"sig{i}": base64.b64encode(k.sign(manifest_bytes, ec.ECDSA(hashes.SHA256()))).decode()
        for i, k in enumerate(keys)
    }


class ZipWriter:
    """A zip archive written front to back: local header (sizes and CRC known), data; then the
    central directory. Entries are stored or raw-deflated."""

    def __init__(self):
        self.out = bytearray()
        self.central = bytearray()
        self.count = 0
        t = time.localtime()
        self.dostime = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
        self.dosdate = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday

    def add(self, name: str, data: bytes, compress: bool = False, extra: bytes = b"", wbits: int = 15) -> None:
        crc = binascii.crc32(data) & 0xFFFFFFFF
        method = 0
        body = data
        if compress:
            c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
            body = c.compress(data) + c.flush()
            method = 8
        n = name.encode()
        fields = struct.pack(
            "<HHHHHIIIHH", 20, 0, method, self.dostime, self.dosdate, crc, len(body), len(data), len(n), len(extra)
        )
        offset = len(self.out)
        self.out += b"PK\x03\x04" + fields + n + extra + body
        self.central += (
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fields
            + struct.pack("<HHHII", 0, 0, 0, 0o100644 << 16, offset)
            + n
            + extra
        )
        self.count += 1

    def finish(self) -> bytes:
        cd_offset = len(self.out)
        self.out += self.central
        self.out += b"PK\x05\x06" + struct.pack(
            "<HHHHIIH", 0, 0, self.count, self.count, len(self.central), cd_offset, 0
        )
        return bytes(self.out)


def build_bundle(manifest: dict, parts: list[Part], compress: bool = False, sign_keys=()) -> bytes:
    if compress:  # the CCM inflates with the window the part names; without it, 32 KiB of RAM
        for entry in manifest["parts"].values():
            entry.setdefault("zwbits", ZWBITS)
    manifest_bytes = json.dumps(manifest, indent=1).encode()
    extra = b""
    if sign_keys:
        sigs = json.dumps(sign_manifest(manifest_bytes, list(sign_keys)), separators=(",", ":")).encode()
        extra = struct.pack("<HH", SIG_EXTRA_ID, len(sigs)) + sigs
    z = ZipWriter()
    z.add(MANIFEST, manifest_bytes, False, extra)  # first and stored, always: the CCM reads it first
    for p in parts:
        z.add(os.path.basename(p.attrs["src"]), p.data, compress, wbits=ZWBITS)
    return z.finish()


def create(
    output: str,
    name: str,
    platform: str,
    specs: list[str],
    version: str | None = None,
    build_id: str | None = None,
    description: str | None = None,
    compress: bool = False,
    sign_keys: list[str] = (),
    src_dir: str | None = None,
    parts: list[Part] | None = None,
) -> dict:
    """Write a bundle; returns its manifest."""
    parts = (parts or []) + (load_parts(specs, src_dir) if specs else [])
    if not parts:
        raise SpecError("no parts: give at least one, e.g. host_fw:type=STM32,src=FIRMWARE.BIN,addr=0x8000000")
    if compress:
        for p in parts:
            p.attrs["zwbits"] = ZWBITS
    manifest = manifest_for(name, platform, parts, version, build_id, description)
    data = build_bundle(manifest, parts, compress, [load_signing_key(k) for k in sign_keys])
    with open(output, "wb") as f:
        f.write(data)
    return manifest


@dataclass
class Inspection:
    manifest: dict
    size: int
    signatures: int
    entries: list = field(default_factory=list)


def inspect(path: str, pubkey_pem: str | None = None, check: bool = True) -> Inspection:
    """Open and (by default) fully check a bundle: parts' sizes and SHA-256, and the signature when a
    public key is given. Raises BundleError with the reason."""
    from ccm.ota import p256

    pub = None
    if pubkey_pem:
        try:
            with open(pubkey_pem, "rb") as f:
                pub = p256.public_key_from_pem(f.read())
        except OSError as e:
            raise BundleError(f"--pubkey {pubkey_pem}: {e.strerror}") from None
        except p256.SignatureError as e:
            raise BundleError(f"--pubkey {pubkey_pem}: {e}") from None
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as e:
        raise BundleError(f"{path}: {e.strerror}") from None
    with f:
        b = Bundle(f, size)
        if check:
            b.check(None, pub, pub is not None)
        return Inspection(b.manifest, size, len(b.signatures()), b.entries)
