import asyncio
import inspect

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests (the firmware's portable tests are written once for both runtimes)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {k: pyfuncitem.funcargs[k] for k in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), 30))
        return True
    return None


# -- the cloud: a real mosquitto, the shadow service, paho-mqtt as the cloud application ------------

import itertools  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

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
