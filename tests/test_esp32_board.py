"""ccm/board/esp32.py on CPython, against doubles of MicroPython's `machine` and `network` with the ESP32
port's API (ports/esp32/machine_uart.c: UART(id, baudrate, **kw), init(**kw), flow RTS|CTS): what the
host UART is opened with, and how it changes for the STM32 bootloader (issue 26, item 6)."""

import asyncio
import sys
import types

import pytest

from ccm.config import Config


class Uart:
    RTS = 2
    CTS = 1

    def __init__(self, num, baudrate, **kw):
        self.num = num
        self.kw = dict(kw, baudrate=baudrate)
        self.calls = [("UART", dict(self.kw))]

    def init(self, **kw):
        self.kw.update(kw)
        self.calls.append(("init", kw))


class Wlan:
    def __init__(self, iface):
        pass

    def active(self, on=None):
        return True

    def config(self, key):
        return b"\x24\x0a\xc4\x12\x34\x56"


@pytest.fixture
def esp32(monkeypatch):
    machine = types.ModuleType("machine")
    machine.UART = Uart
    network = types.ModuleType("network")
    network.WLAN = Wlan
    network.STA_IF = 0
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.setitem(sys.modules, "network", network)
    monkeypatch.delitem(sys.modules, "ccm.board.esp32", raising=False)
    from ccm.board import esp32

    monkeypatch.setattr(esp32, "asyncio", types.SimpleNamespace(StreamReader=lambda uart: uart))
    yield esp32
    sys.modules.pop("ccm.board.esp32", None)


def open_uart(esp32, **uart):
    board = esp32.Esp32Board()
    return board, asyncio.run(board.open_uart(Config({"host": {"rpc": {"uart": uart}}})))


def test_rts_cts_only_with_both_pins_and_off_while_the_bootloader_runs(esp32):
    board, uart = open_uart(esp32, fc_enable=True, rts_pin=18, cts_pin=19)
    assert uart.kw["flow"] == Uart.RTS | Uart.CTS and (uart.kw["rts"], uart.kw["cts"]) == (18, 19)
    assert board.uart_note is None
    board.uart_parity("E", 57600)  # the STM32 bootloader: 8E1, and it has no RTS/CTS
    assert uart.kw["flow"] == 0 and uart.kw["parity"] == 0 and uart.kw["baudrate"] == 57600
    board.uart_parity("N", 115200)  # JSON-RPC again
    assert uart.kw["flow"] == Uart.RTS | Uart.CTS and uart.kw["parity"] is None


def test_flow_control_without_its_pins_is_off_and_says_why(esp32):
    board, uart = open_uart(esp32, fc_enable=True)  # rts_pin/cts_pin -1: UART1 has no default pins
    assert "flow" not in uart.kw and "rts" not in uart.kw
    assert "without rts_pin and cts_pin" in board.uart_note and "UART1" in board.uart_note
    board.uart_parity("E")
    assert "flow" not in uart.calls[-1][1]


def test_no_flow_control_asked_for_none_given(esp32):
    board, uart = open_uart(esp32)
    assert "flow" not in uart.kw and board.uart_note is None
    board.uart_parity("E")
    assert uart.calls[-1] == ("init", {"parity": 0})
