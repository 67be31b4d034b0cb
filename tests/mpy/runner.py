# The portable test suite on the WebAssembly port (run.mjs runs this file with top-level await; the
# test modules are copied to /fw and this directory to /mpy).
import sys

sys.path.insert(0, "/fw")
sys.path.insert(0, "/mpy")
from suite import run  # noqa: E402

await run(sys.argv[1:])  # noqa: F704
