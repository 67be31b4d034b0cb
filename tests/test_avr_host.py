"""The Arduino host (issue 24, item 5): host_lib/c as the CcmBridge Arduino library, its Lamp example built
with the Arduino AVR core by arduino-builder (as the IDE builds it) for an Uno, and run on simavr's
ATmega328P with its UART wired to a virtual CCM on real mosquitto: the manual's flows from the cloud to
the AVR and back — Sum, the shadow, MQTT — and the library's refusals read from the AVR's flash."""

import os
import pty
import select
import time
import tty
import zipfile

import pytest
from conftest import cloud_config, lamp_follows_the_cloud, unique_device, wait_until

from pc import arduino
from sim.avr import VirtualUno
from sim.ccm import VirtualCcm

SKETCH = arduino.ARDUINO / "examples" / "Lamp" / "Lamp.ino"


@pytest.fixture(scope="module")
def lamp_elf(tmp_path_factory):
    return arduino.build(SKETCH, tmp_path_factory.mktemp("uno") / "build")


def _sum(cloud, device, a, b):
    try:
        return cloud.call(device, "Sum", [a, b])
    except Exception:  # the Uno still booting: the CCM answers that the host did not
        return None


def test_the_arduino_lamp_answers_the_cloud_through_a_virtual_ccm(lamp_elf, mosquitto, shadow_service, cloud):
    device = unique_device()
    v = VirtualCcm(cloud_config(mosquitto.port, device)).start()
    try:
        with VirtualUno(lamp_elf, v.path) as uno:
            wait_until(lambda: v.ccm.mqtt.state == 2, what="the CCM to connect to mosquitto")
            # the cloud calls the AVR's Sum (the manual's host example), through the CCM
            wait_until(lambda: _sum(cloud, device, 2, 3) == 5, 30, "Sum from the cloud answered by the Uno")
            assert _sum(cloud, device, -40000, 90000) == 50000  # longs: a 16-bit int would not hold these
            assert v.host_call("Sys.Info") == {"fw_version": "1.0", "arch": "avr", "fw_id": "", "app": "lamp"}
            # the shadow and MQTT: the LED on pin 13, as simavr sees the pin
            lamp_follows_the_cloud(cloud, v, device, uno.wait)
    finally:
        v.stop()


def test_the_library_refuses_bad_frames_with_its_messages_from_flash(lamp_elf):
    """On an AVR the library's messages live in flash (PSTR): they reach the wire whole, and the link goes
    on — a malformed frame, one longer than the sketch's 160-byte buffer, a method it does not have."""
    master, slave = pty.openpty()
    tty.setraw(master)
    got = bytearray()

    def answer(timeout=10):
        end = time.monotonic() + timeout
        while b"\n" not in got:
            left = end - time.monotonic()
            assert left > 0, bytes(got)
            if select.select([master], [], [], min(left, 0.2))[0]:
                got.extend(os.read(master, 1024))
        line, _, rest = bytes(got).partition(b"\n")
        got[:] = rest
        return line

    with VirtualUno(lamp_elf, os.ttyname(slave)):
        assert b'"method":"MQTT.Sub"' in answer()  # setup(): the subscription and the first report
        assert b'"method":"Shadow.Report"' in answer()
        os.write(master, b'{"id":1,"method":"Sum","params":[1,]}\n')
        assert answer() == b'{"id":null,"error":{"code":-32700,"message":"parse error: unexpected character"}}'
        os.write(master, b'{"id":1,"method":"Sum","params":[1,}\n')  # never closes before its newline
        assert answer() == b'{"id":null,"error":{"code":-32700,"message":"parse error: incomplete frame"}}'
        os.write(master, b'{"id":2,"method":"Sum","params":["' + b"x" * 200 + b'"]}\n')
        assert answer() == (
            b'{"id":null,"error":{"code":-32600,"message":"frame too large: 161+ bytes, the frame buffer is 160"}}'
        )
        os.write(master, b'{"id":3,"method":"Lamp.Dim"}\n')
        assert answer() == b'{"id":3,"error":{"code":-32601,"message":"method not found"}}'
        os.write(master, b'{"id":4,"method":"RPC.List"}\n')
        assert answer() == b'{"id":4,"result":["Sum","Shadow.Delta","MQTT.Message","Sys.Init","RPC.List","Sys.Info"]}'
        os.write(master, b'{"id":5,"method":"Sum","params":[20,22]}\n')
        assert answer() == b'{"id":5,"result":42}'
    os.close(master)
    os.close(slave)


def test_the_arduino_library_zip_is_the_c_library_with_its_example(tmp_path):
    out = arduino.zip_library(tmp_path / "CcmBridge.zip")
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        assert {"CcmBridge/library.properties", "CcmBridge/src/ccm.c", "CcmBridge/src/ccm.h"} <= names
        assert "CcmBridge/examples/Lamp/Lamp.ino" in names
        assert z.read("CcmBridge/src/ccm.c") == (arduino.C_LIB / "ccm.c").read_bytes()  # one copy of the sources
        props = z.read("CcmBridge/library.properties").decode()
    assert "name=CcmBridge" in props and "includes=ccm.h" in props


def test_the_sketch_fits_an_uno(lamp_elf):
    """What the IDE prints after the build, within the Uno's 32 KiB of flash and 2 KiB of RAM with room for
    the stack (the figures against the goal are bench/host_c.py's)."""
    flash, ram = arduino.footprint(lamp_elf)
    assert flash < 32256 and ram < 1024, (flash, ram)
