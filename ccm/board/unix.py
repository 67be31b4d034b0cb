"""The CCM's hardware when the firmware runs on MicroPython's unix port: the same interpreter core,
asyncio and socket/ssl stack as the ESP32 port, with a heap capped by `-X heapsize`. The UART is a file
descriptor the parent hands over (a pty's master: the host opens the slave as it would a USB-UART),
the filesystem is a directory, and the network is the PC's — real sockets to a real broker. The host's
BOOT0 and NRST, when the parent wires them (`--pins FD`), are lines written to a pipe ("PIN LEVEL"): the
parent drives a virtual STM32's pins with them, so a host flash runs here as on a module. There is no
radio and no app partition, so provisioning and OTA of the module's app image are left out.

    micropython -X heapsize=192K -c "import ccm.board.unix as u; u.main()" --fd 5 --fs /tmp/fs --http 8080
"""

import asyncio
import gc
import sys

from ccm.board import Board


class UnixBoard(Board):
    arch = "unix"
    # lwIP's TCP send buffer on the ESP32 is a few KB (ESP-IDF's CONFIG_LWIP_TCP_SND_BUF_DEFAULT, 5760);
    # the PC's grows to MBs. Sockets here get a small one too, so a peer that stops reading pushes back
    # (drain() waits) after a few KB, as on a module.
    TCP_SND_BUF = 5760

    def __init__(self, fd, fs_dir, http_port=8080, mac="02:00:00:00:00:01", rtc=None, dns=None):
        self.fs_dir = fs_dir
        self.sample_ms = 0  # > 0: the live heap is sampled this often (heap_peak; for bench/memory.py)
        self.rom = 0  # bytes of a ROM image held in the heap (the unix port has no flash to map)
        self._peak = 0
        self._sampler = None
        self.dns = dns  # "ip:port" of a DNS server (ccm/dns.py resolves through it); None: getaddrinfo
        self.config_path = fs_dir + "/conf.json"
        self.mac = mac
        self.http_port = http_port
        self.rtc = rtc  # None: the PC's clock; seconds: a module's RTC (946684800 = just powered up)
        self.fw_id = "micropython-%d.%d.%d-unix" % sys.implementation.version[:3]
        # the parent made the fd non-blocking: a host that stops reading never stalls the loop
        self._stream = asyncio.StreamReader(open(fd, "r+b"))

    async def open_uart(self, config):
        if self.sample_ms and (self._sampler is None or self._sampler.done()):  # a reboot keeps the loop
            self._sampler = asyncio.create_task(self._sample())
        return self._stream

    def heap_free(self):
        return gc.mem_free()

    async def _sample(self):
        """The live heap (after a collection) every sample_ms: the high-water mark inside each step,
        not only between them."""
        while True:
            gc.collect()
            self._peak = max(self._peak, gc.mem_alloc() - self.rom)
            await asyncio.sleep_ms(self.sample_ms)

    def loaded(self):
        return sorted(m for m in sys.modules if m == "ccm" or m.startswith("ccm."))

    def heap_peak(self):
        if not self.sample_ms:
            return None
        gc.collect()
        peak, self._peak = self._peak, gc.mem_alloc() - self.rom
        return max(peak, self._peak)

    def dns_server(self):
        return self.dns

    async def open_connection(self, host, port, ssl=None, server_hostname=None):
        if ssl is not None:
            return await asyncio.open_connection(host, port, ssl=ssl, server_hostname=server_hostname)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.s.setsockopt(1, 7, self.TCP_SND_BUF)  # SOL_SOCKET, SO_SNDBUF (Linux's numbers)
        except (AttributeError, OSError):
            pass
        return reader, writer

    def clock_valid(self):
        if self.rtc is None:
            return True
        from ccm.sntp import VALID_AFTER

        return self.rtc >= VALID_AFTER

    def set_clock(self, unix_seconds):
        self.rtc = unix_seconds
        print("ccm: clock set to %d" % unix_seconds)

    def http_address(self, config):
        return "127.0.0.1", self.http_port

    def http_listening(self, server):
        """Port 0 took a free port: find which (this port's sockets have no getsockname; /proc knows),
        keep it for the next boots, and tell the parent on stdout."""
        if self.http_port == 0:
            self.http_port = _listening_port()
            print("ccm: /rpc listening on 127.0.0.1:%d" % self.http_port)

    def pin_write(self, pin, level, open_drain=False):
        self._pins.write(b"%d %d\n" % (pin, level))

    def reboot(self):
        """A reset: this process ends and its parent (sim/mpy_unix.py) starts the firmware again on the
        same pty — with a fresh heap, as a module's reset gives it, not this boot's garbage."""
        if self.sample_ms:  # this boot's most, for the parent: the next boot's heap starts afresh
            try:
                print("ccm: heap peak %d" % self.heap_peak())
            except MemoryError:  # no heap left to say it (see main._stopped): the reset still comes
                pass
        print("ccm: reset")
        return False


def _listening_port():
    """The port of this process's listening TCP socket: its inode among our fds, in /proc/net/tcp."""
    import os

    inodes = set()
    for fd in range(3, 256):
        try:
            inodes.add(os.stat("/proc/self/fd/%d" % fd)[1])
        except OSError:
            pass
    with open("/proc/self/net/tcp") as f:
        f.readline()
        for line in f:
            p = line.split()
            if p[3] == "0A" and int(p[9]) in inodes:  # 0A: LISTEN
                return int(p[1].split(":")[1], 16)
    return 0


def main(argv=None):
    """`--fd N` the UART, `--fs DIR` the filesystem (conf0.json there holds the factory settings),
    `--http PORT` the /rpc server's port on 127.0.0.1 (0: a free one, printed once bound), `--rtc SECONDS`
    a module's clock that was never set (946684800: 2000-01-01, as after power-up) instead of the PC's,
    `--dns IP:PORT` a DNS server to resolve names through without blocking (as the module does),
    `--sample-ms MS` the live heap sampled that often (Sys.GetInfo heap_peak: the most since the last read),
    `--pins FD` where the host's BOOT0/NRST levels go (a pipe; host OTA flashes the host)."""
    args = list(argv if argv is not None else sys.argv[1:])
    opts = {"--fd": None, "--fs": ".", "--http": "8080", "--mac": "02:00:00:00:00:01", "--rom-size": "0", "--rtc": ""}
    opts["--dns"] = ""
    opts["--sample-ms"] = "0"
    opts["--pins"] = ""
    while args:
        k = args.pop(0)
        opts[k] = args.pop(0)
    from ccm.main import factory_config, run_module

    rtc = int(opts["--rtc"]) if opts["--rtc"] else None
    rom = int(opts["--rom-size"])
    rom = (rom + 31) // 32 * 32 if rom else 0
    board = UnixBoard(int(opts["--fd"]), opts["--fs"], int(opts["--http"]), opts["--mac"], rtc, opts["--dns"] or None)
    board.sample_ms = int(opts["--sample-ms"])
    board.rom = rom
    if opts["--pins"]:
        board.host_pins = True
        board._pins = open(int(opts["--pins"]), "wb")
    gc.collect()
    heap = gc.mem_free() + gc.mem_alloc() - rom
    code = "ROM (romfs)" if rom else "files" if __file__.startswith("/") else "the image (frozen)"
    print("ccm: booting on MicroPython %s (unix), heap %d, code in %s" % (sys.version, heap, code))
    run_module(board, factory_config(opts["--fs"] + "/conf0.json"), board.reboot)
