"""Over-the-air updates: the STM32 host flasher (AN3155), and later bundles and the CCM's own update."""
