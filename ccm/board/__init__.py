"""The hardware seam: esp32.py on the module, virtual.py under CPython."""
