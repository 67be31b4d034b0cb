"""The `ccm` command: run the virtual product, talk to a CCM, build, flash, bundle and OTA.

Run `ccm --help`, or `ccm COMMAND --help` for any command. Each command group lives in its own module
of this package, a thin layer over a library call:

    rpc_cmds     call, info, config-get, config-set, wifi, reboot
    stm32_cmds   stm32 info|flash|read|erase (an STM32 on this PC's USB-UART)
    build_cmds   build, flash (ESP32 module)
    check_cmds   check (a module end to end, what to fix)
    ota_cmds     create-fw-bundle, bundle info|verify, ota
    sim_cmds     sim ccm|esp32|stm32
    cloud_cmds   cloud, shadow get|desired
    demo         demo
"""

# the command groups register themselves on `main`
from bundle.cli import build_cmds, check_cmds, cloud_cmds, demo, ota_cmds, rpc_cmds, sim_cmds, stm32_cmds  # noqa: E402, F401
from bundle.cli.common import main

__all__ = ["main"]
