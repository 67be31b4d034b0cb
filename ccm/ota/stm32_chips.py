"""One table of STM32 parts, read by the CCM's flasher and by the virtual STM32 alike.

PIDs, flash layouts and bootloader details from ST's AN2606 (bootloader per part), AN3155 (commands)
and the reference manuals' memory maps; the same facts stm32flash keeps in dev_table.c.
"""

FLASH_BASE = 0x08000000


class Chip:
    """One part. `pages` is the flash layout as [(count, size), …] in address order: uniform pages
    (F1: 1 KiB) or sectors (F4: 16/64/128 KiB) — both are what the bootloader erases by number."""

    def __init__(self, pid, name, family, pages, ram, erase, bl_version, sysmem, size_reg, uid, read_max=256):
        self.pid = pid
        self.name = name
        self.family = family
        self.pages = pages
        self.ram = ram  # (start, end)
        self.erase = erase  # 0x43 Erase or 0x44 Extended Erase, as the bootloader's Get lists it
        self.bl_version = bl_version
        self.sysmem = sysmem  # (start, end) of the system memory holding the bootloader
        self.size_reg = size_reg  # flash size in KiB, 16 bits (RM "Flash size data register")
        self.uid = uid  # 96-bit unique ID
        self.read_max = read_max
        self.flash_size = sum(n * s for n, s in pages)
        self.flash_end = FLASH_BASE + self.flash_size

    def page_count(self):
        return sum(n for n, _ in self.pages)

    def page_bounds(self, page):
        """(start address, size) of page number `page`."""
        addr = FLASH_BASE
        for n, size in self.pages:
            if page < n:
                return addr + page * size, size
            page -= n
            addr += n * size
        raise ValueError("no page %d" % page)

    def pages_covering(self, start, end):
        """The page numbers an image at [start, end) touches."""
        out = []
        addr = FLASH_BASE
        page = 0
        for n, size in self.pages:
            for _ in range(n):
                if addr < end and addr + size > start:
                    out.append(page)
                addr += size
                page += 1
        return out

    def fits(self, start, size):
        return FLASH_BASE <= start and start + size <= self.flash_end


def _k(n):
    return n * 1024


CHIPS = {}


def _add(chip):
    CHIPS[chip.pid] = chip


_add(
    Chip(
        0x440,
        "STM32F030x8/F05x",
        "F0",
        [(64, _k(1))],
        (0x20000800, 0x20002000),
        0x43,
        0x21,
        (0x1FFFEC00, 0x1FFFF800),
        0x1FFFF7CC,
        0x1FFFF7AC,
    )
)
_add(
    Chip(
        0x410,
        "STM32F10xxx medium-density",
        "F1",
        [(128, _k(1))],
        (0x20000200, 0x20005000),
        0x43,
        0x22,
        (0x1FFFF000, 0x1FFFF800),
        0x1FFFF7E0,
        0x1FFFF7E8,
    )
)
_add(
    Chip(
        0x414,
        "STM32F10xxx high-density",
        "F1",
        [(256, _k(2))],
        (0x20000200, 0x20010000),
        0x43,
        0x22,
        (0x1FFFF000, 0x1FFFF800),
        0x1FFFF7E0,
        0x1FFFF7E8,
    )
)
_add(
    Chip(
        0x413,
        "STM32F405/407/415/417",
        "F4",
        [(4, _k(16)), (1, _k(64)), (7, _k(128))],
        (0x20002000, 0x20020000),
        0x44,
        0x31,
        (0x1FFF0000, 0x1FFF7800),
        0x1FFF7A22,
        0x1FFF7A10,
    )
)
_add(
    Chip(
        0x431,
        "STM32F411xx",
        "F4",
        [(4, _k(16)), (1, _k(64)), (3, _k(128))],
        (0x20003000, 0x20020000),
        0x44,
        0x31,
        (0x1FFF0000, 0x1FFF7800),
        0x1FFF7A22,
        0x1FFF7A10,
    )
)
_add(
    Chip(
        0x417,
        "STM32L05xxx/06xxx",
        "L0",
        [(512, 128)],
        (0x20001000, 0x20002000),
        0x44,
        0x30,
        (0x1FF00000, 0x1FF01000),
        0x1FF8007C,
        0x1FF80050,
        128,
    )
)
_add(
    Chip(
        0x460,
        "STM32G07xxx/08xxx",
        "G0",
        [(64, _k(2))],
        (0x20002000, 0x20009000),
        0x44,
        0xB3,
        (0x1FFF0000, 0x1FFF7000),
        0x1FFF75E0,
        0x1FFF7590,
    )
)


def chip(pid):
    c = CHIPS.get(pid)
    if c is None:
        raise KeyError("unknown STM32 product ID 0x%03X: not in ccm/ota/stm32_chips.py" % pid)
    return c
