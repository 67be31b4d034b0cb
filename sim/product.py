"""A whole virtual product: a virtual STM32 running the lamp firmware (C on host_lib/c, on an emulated
Cortex-M3) wired to a virtual CCM — UART, IO14 → BOOT0, IO27 → NRST — so host OTA works end to end.

    with LampProduct("ccm-lamp01", mqtt="127.0.0.1:1883", fs_dir=tmp) as p:
        p.ccm.call("Sys.GetInfo"); p.mcu.led

Used by `ccm demo`, `ccm sim ccm --host lamp` and the dashboard's browser tests.
"""

from __future__ import annotations

import os
import tempfile

from sim.ccm import VirtualCcm
from sim.lamp_fw import lamp_image
from sim.stm32 import VirtualStm32

BOOT0_PIN = 14
NRST_PIN = 27


class LampProduct:
    def __init__(
        self,
        device_id: str,
        mqtt: str | None = None,
        fs_dir: str | None = None,
        trace=None,
        version: str = "1.0",
        config: dict | None = None,
    ):
        """mqtt: HOST:PORT of the broker (None: no cloud). Raises sim.lamp_fw.FirmwareUnavailable when
        the firmware can be neither built nor found prebuilt."""
        self.image, self.how = lamp_image(version)
        self._own_fs = fs_dir is None  # a directory made here goes at stop()
        self.fs_dir = fs_dir or tempfile.mkdtemp(prefix="ccm-product-")
        os.makedirs(self.fs_dir, exist_ok=True)
        cfg: dict = {
            "device": {"id": device_id},
            "wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}},
        }
        if mqtt:
            from pc.net import mqtt_settings

            cfg["mqtt"] = mqtt_settings(mqtt)
        for k, v in (config or {}).items():
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
        self.device_id = device_id
        self.config = cfg
        self.trace = trace
        self.mcu: VirtualStm32 | None = None
        self.ccm: VirtualCcm | None = None

    def start(self) -> LampProduct:
        self.mcu = VirtualStm32("f103").start()
        self.mcu.core.flash[: len(self.image)] = self.image
        self.mcu.reset(boot0=False)
        self.ccm = VirtualCcm(self.config, trace=self.trace, uart=self.mcu.path, fs_dir=self.fs_dir)
        self.ccm.board.wires[BOOT0_PIN] = self.mcu.set_boot0
        self.ccm.board.wires[NRST_PIN] = lambda level: self.mcu.set_reset(not level)  # NRST is active low
        self.ccm.start()
        return self

    def stop(self) -> None:
        if self.ccm:
            self.ccm.stop()
        if self.mcu:
            self.mcu.stop()
        if self._own_fs:
            import shutil

            shutil.rmtree(self.fs_dir, ignore_errors=True)

    def __enter__(self) -> LampProduct:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
