"""ESP-IDF's otadata partition, which the bootloader reads to choose the app slot: two 4 KiB sectors, each
starting with one select entry — ota_seq (u32), seq_label (20 bytes), ota_state (u32), crc (u32: CRC-32 of
ota_seq, as esp_rom_crc32_le(UINT32_MAX, …) and ESP-IDF's otatool.py compute it). The entry with the highest
valid seq wins; it selects slot (seq - 1) % number of OTA slots. With app rollback on (ESP32_GENERIC-OTA),
esp_ota_set_boot_partition() writes state NEW; the bootloader boots a NEW slot as PENDING_VERIFY, and a slot
still PENDING_VERIFY at the next boot (never marked valid) as ABORTED — it boots the previous one.

Portable (MicroPython and CPython): the virtual module's board writes it (ccm/board/wasm.py), the virtual
ESP32's bootloader reads it (sim/mpy_ccm.py). A real module has ESP-IDF for both."""

import binascii
import struct

SECTOR = 0x1000
NEW, PENDING_VERIFY, VALID, INVALID, ABORTED, UNDEFINED = 0, 1, 2, 3, 4, 0xFFFFFFFF
_ENTRY = "<I20sII"  # 32 bytes


def _crc(seq):
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


def pack(seq, state):
    return struct.pack(_ENTRY, seq, b"\xff" * 20, state, _crc(seq))


def entries(blob):
    """[(seq, state) or None, …] for the two sectors: None where the entry is erased or its CRC is wrong."""
    out = []
    for i in (0, 1):
        seq, _label, state, crc = struct.unpack(_ENTRY, bytes(blob[i * SECTOR : i * SECTOR + 32]))
        out.append(None if seq == 0xFFFFFFFF or crc != _crc(seq) else (seq, state))
    return out


def _usable(e):
    return e is not None and e[1] not in (INVALID, ABORTED)


def current(blob):
    """(sector index, seq, state) of the entry the bootloader goes by, or None (erased: the first slot)."""
    best = None
    for i, e in enumerate(entries(blob)):
        if _usable(e) and (best is None or e[0] > best[1]):
            best = (i, e[0], e[1])
    return best


def _write(blob, sector, seq, state):
    at = sector * SECTOR
    blob[at : at + 32] = pack(seq, state)


def set_boot(blob, slot, slots, rollback=True):
    """esp_ota_set_boot_partition(ota_`slot`) into `blob` (a bytearray of the partition): the next seq that
    selects it, in the sector the current entry is not in."""
    cur = current(blob)
    seq = cur[1] if cur else 0
    seq += 1
    while (seq - 1) % slots != slot:
        seq += 1
    _write(blob, (cur[0] + 1) % 2 if cur else 0, seq, NEW if rollback else UNDEFINED)


def mark_valid(blob):
    """esp_ota_mark_app_valid_cancel_rollback(): the running entry, if pending, is VALID."""
    cur = current(blob)
    if cur and cur[2] in (NEW, PENDING_VERIFY):
        _write(blob, cur[0], cur[1], VALID)


def boot(blob, slots):
    """The bootloader, with app rollback on: the OTA slot to run (0-based), or None for the factory app
    (no usable entry). Updates `blob` as ESP-IDF's bootloader does (NEW -> PENDING_VERIFY; PENDING_VERIFY
    found again -> ABORTED, and the next best entry is taken)."""
    while True:
        cur = current(blob)
        if cur is None or not slots:
            return None
        sector, seq, state = cur
        if state == NEW:
            _write(blob, sector, seq, PENDING_VERIFY)
        elif state == PENDING_VERIFY:  # it ran and was never marked valid: roll back
            _write(blob, sector, seq, ABORTED)
            continue
        return (seq - 1) % slots
