"""Virtual hardware: the CCM board, and later the STM32 bootloader and the ESP32 ROM loader."""
