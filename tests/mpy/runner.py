# The firmware's portable test runner, for MicroPython (run by run.mjs, top-level await allowed).
# Runs every test_* function of the modules named in sys.argv; awaits async ones; prints one line per
# test and a closing "N passed, N failed" line.
import asyncio
import sys

sys.path.insert(0, "/fw")
passed = 0
failed = 0
for modname in sys.argv[1:]:
    mod = __import__(modname)
    for name in sorted(dir(mod)):
        if not name.startswith("test_"):
            continue
        try:
            r = getattr(mod, name)()
            if hasattr(r, "send"):
                # in a task of its own: the WebAssembly port's top-level coroutine cannot be cancelled,
                # which asyncio.wait_for needs
                await asyncio.create_task(r)  # noqa: F704 - run.mjs runs this file with top-level await
            print("PASS", modname, name)
            passed += 1
        except Exception as e:
            print("FAIL", modname, name)
            sys.print_exception(e)
            failed += 1
print("mpy: %d passed, %d failed" % (passed, failed))
if failed or not passed:
    raise SystemExit(1)
