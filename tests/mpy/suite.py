# The firmware's portable test suite on MicroPython: every test_* function of the named modules (from
# tests/firmware), async ones awaited, one line per test and a closing "N passed, N failed" line.
# The WebAssembly runner awaits run() at top level (runner.py); the unix port under asyncio.run().
import asyncio
import sys


async def run(modules):
    passed = 0
    failed = 0
    for modname in modules:
        mod = __import__(modname)
        for name in sorted(dir(mod)):
            if not name.startswith("test_"):
                continue
            try:
                r = getattr(mod, name)()
                if hasattr(r, "send"):
                    # in a task of its own: the WebAssembly port's top-level coroutine cannot be
                    # cancelled, which asyncio.wait_for needs
                    await asyncio.create_task(r)
                print("PASS", modname, name)
                passed += 1
            except Exception as e:
                print("FAIL", modname, name)
                sys.print_exception(e)
                failed += 1
    print("mpy: %d passed, %d failed" % (passed, failed))
    if failed or not passed:
        raise SystemExit(1)
