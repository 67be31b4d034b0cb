"""ccm-bridge firmware: the Cloud Communication Module (runs on MicroPython and CPython)."""

FW_VERSION = "0.1.0"
