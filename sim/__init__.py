"""Virtual hardware, so the whole product runs without any: the CCM board (`board.py`) and a whole CCM in
a thread (`ccm.py`), the STM32 with its ROM bootloader and a Cortex-M3 that runs the flashed firmware
(`stm32.py`, `cortexm.py`), the ESP32 ROM loader esptool talks to (`esp32_rom.py`), the CCM on MicroPython
(`mpy_ccm.py`: booted from a virtual ESP32's flash; `mpy_unix.py`: the unix port at a module's heap),
hostile hosts for the link's tests (`hostile.py`), and the lamp product of `ccm demo` (`product.py`)."""
