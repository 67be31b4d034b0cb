"""The code only a module runs, type-checked against MicroPython's own ESP32 stubs (issue 11): a call the
port does not have (esp32.Partition.mark_app_invalid_rollback_and_reboot was one) fails CI here, where no
ESP32 can run it. scripts/test installs the pinned stubs and pyright into .venv-types."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TYPES = ROOT / ".venv-types"
MODULE_ONLY = ["ccm/board/esp32.py", "ccm/provision.py", "ccm/sntp.py", "ccm/ble.py"]


def test_module_only_code_type_checks_against_the_micropython_esp32_stubs(tmp_path):
    pyright = TYPES / "bin" / "pyright"
    assert pyright.exists(), "run scripts/test: it installs micropython-esp32-stubs and pyright into .venv-types"
    site = next((TYPES / "lib").glob("python3*/site-packages"))
    assert (site / "machine.pyi").exists() and (site / "stdlib").is_dir()
    config = {
        "include": [os.path.relpath(ROOT / f, tmp_path) for f in MODULE_ONLY],
        "typeshedPath": str(site),  # MicroPython's stdlib (time.ticks_ms, asyncio.StreamReader(uart), …)
        "extraPaths": [str(ROOT)],
        "typeCheckingMode": "basic",
        "reportMissingModuleSource": False,
    }
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    out = subprocess.run(
        [str(pyright), "-p", str(tmp_path), "--pythonpath", str(TYPES / "bin" / "python"), "--outputjson"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(out.stdout)
    problems = [
        f"{os.path.relpath(d['file'], ROOT)}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    ]
    assert report["summary"]["filesAnalyzed"] == len(MODULE_ONLY), report["summary"]
    assert not problems, "\n".join(problems)
