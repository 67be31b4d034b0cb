"""Firmware ids for host images (issue 24, item 2): what a host reports as `fw_id` in Sys.Info, stamped
into its image by the build, so the CCM knows from the image it flashes what the host will say it runs —
and, when the host says it runs that, rewrites only the pages that differ next time.

The C library reserves the slot (host_lib/c/ccm.c, `ccm_fw_id_slot`): the marker `CCMFWID1` and 16 hex
digits, "0" until stamped. The id is the first 16 hex digits of the SHA-256 of the image with those digits
all "0" — so the same source always gets the same id, and any change another. The CCM reads it from the
image (ccm/ota/host.py), create-fw-bundle records it.

    python pc/fwid.py stamp build/lamp-2.0.bin [build/lamp-2.0.elf]   # the Makefile's step after objcopy
"""

from __future__ import annotations

import hashlib
import sys

MARKER = b"CCMFWID1"
DIGITS = 16
UNSTAMPED = b"0" * DIGITS


def find(data: bytes) -> int:
    """Where the slot's digits start, or -1 (an image without the library's slot)."""
    i = data.find(MARKER)
    return -1 if i < 0 else i + len(MARKER)


def fw_id(data: bytes) -> str | None:
    """The id stamped in an image, or None (no slot, or never stamped)."""
    i = find(data)
    if i < 0 or data[i : i + DIGITS] == UNSTAMPED:
        return None
    return data[i : i + DIGITS].decode()


def compute(data: bytes) -> str:
    """The id an image gets: SHA-256 of it with the slot's digits "0", first 16 hex digits."""
    i = find(data)
    if i < 0:
        raise ValueError("no CCMFWID1 slot in the image: is it linked with host_lib/c/ccm.c?")
    blank = data[:i] + UNSTAMPED + data[i + DIGITS :]
    return hashlib.sha256(blank).hexdigest()[:DIGITS]


def stamp(path: str, *also: str) -> str:
    """Stamp the image at `path` with its id, and the same id into `also` (the ELF it came from, so a HEX
    made from it carries it too). Returns the id."""
    with open(path, "rb") as f:
        data = f.read()
    new = compute(data)
    for p in (path, *also):
        with open(p, "rb") as f:
            blob = bytearray(f.read())
        i = find(blob)
        if i < 0:
            raise ValueError(f"{p}: no CCMFWID1 slot")
        blob[i : i + DIGITS] = new.encode()
        with open(p, "wb") as f:
            f.write(blob)
    return new


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "stamp":
        raise SystemExit("usage: fwid.py stamp IMAGE.bin [IMAGE.elf]")
    try:
        print(f"{sys.argv[2]}: fw_id {stamp(sys.argv[2], *sys.argv[3:])}")
    except (OSError, ValueError) as e:
        raise SystemExit(f"fwid.py: {e}") from None
