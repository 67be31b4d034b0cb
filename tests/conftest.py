import asyncio
import inspect
import os
import threading
import time
import weakref

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests (the firmware's portable tests are written once for both runtimes)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {k: pyfuncitem.funcargs[k] for k in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), 30))
        return True
    return None


# -- the leak guard: a thread or a child process a test started must be gone when the test has ended --

_wide_threads: weakref.WeakSet = weakref.WeakSet()  # started by fixtures wider than one test
_wide_procs: set[int] = set()
_before: dict[str, tuple] = {}


def _children() -> set[int]:
    """This process's live children (zombies are not running anything)."""
    me, pids = os.getpid(), set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if int(ppid) == me and state != "Z":
                pids.add(int(d))
    return pids


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive() and t is not threading.main_thread()}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """What a module- or session-wide fixture starts lives on past the test that first asked for it."""
    if fixturedef.scope == "function":
        return (yield)
    threads, procs = _threads(), _children()
    try:
        return (yield)
    finally:
        _wide_threads.update(_threads() - threads)
        _wide_procs.update(_children() - procs)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    _before["threads"], _before["procs"] = tuple(_threads()), tuple(_children())
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Fail the test that leaves a virtual device, broker, browser or thread running after its end."""
    result = yield
    old_threads, old_procs = set(_before.get("threads", ())), set(_before.get("procs", ()))
    deadline = time.monotonic() + 5  # what was told to stop may take a moment to go
    while True:
        threads = {t for t in _threads() - old_threads if t not in _wide_threads}
        procs = _children() - old_procs - _wide_procs
        if not (threads or procs) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if threads or procs:
        what = [f"thread {t.name!r}" for t in threads] + [f"process {p} ({_cmdline(p)})" for p in procs]
        raise AssertionError(f"{item.nodeid} left running after its end: " + ", ".join(sorted(what)))
    return result


# -- the cloud: a real mosquitto, the shadow service, paho-mqtt as the cloud application ------------

import itertools  # noqa: E402

_ids = itertools.count(1)


@pytest.fixture
def mosquitto():
    from cloud.broker import Mosquitto

    with Mosquitto() as broker:
        yield broker


@pytest.fixture
def shadow_service(mosquitto, tmp_path):
    from cloud.shadow_service import ShadowService

    with ShadowService(mosquitto.url, str(tmp_path / "shadows.sqlite")) as s:
        yield s


@pytest.fixture
def cloud(mosquitto):
    from cloud.client import CloudClient

    with CloudClient(mosquitto.url, client_id=f"app{next(_ids)}") as c:
        yield c


def wait_until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def lamp_follows_the_cloud(cloud, v, device, wait_line, led_on="LED on", led_off="LED off"):
    """The lamp example (C on the STM32, Linux or an Arduino) as the cloud sees it through the virtual CCM
    `v`: the shadow's desired → Shadow.Delta → the LED → Shadow.Report clears the delta; a command on
    lamp/cmd toggles it and its status comes on lamp/status. `wait_line(text)` waits for the host's own
    account of its LED."""
    cloud.shadow_update(device, {"desired": {"on": True, "brightness": 40}})
    wait_line(led_on)
    doc = wait_until(
        lambda: (d := cloud.shadow_get(device))["state"].get("reported", {}).get("brightness") == 40 and d,
        what="the lamp's report",
    )
    assert doc["state"]["reported"] == {"on": True, "brightness": 40} and "delta" not in doc["state"]
    cloud.subscribe("lamp/status")
    wait_until(lambda: "lamp/cmd" in str(v.ccm.mqtt.subs), what="the lamp's MQTT.Sub")
    cloud.publish("lamp/cmd", "toggle")
    assert cloud.wait_message("lamp/status")[2] == b"off"
    wait_line(led_off)


def cloud_config(port, device_id, **mqtt):
    return {
        "device": {"id": device_id},
        "mqtt": {
            "enable": True,
            "server": f"127.0.0.1:{port}",
            "keep_alive": 10,
            "reconnect_timeout_min_ms": 100,
            "reconnect_timeout_max_ms": 800,
            **mqtt,
        },
    }


def unique_device():
    return f"ccm-{os.getpid()}-{next(_ids)}"
