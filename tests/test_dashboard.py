"""The dashboard in a real browser: Playwright driving Debian's chromium against `ccm cloud`'s web server,
with virtual CCMs (and the lamp product: a virtual STM32 running real firmware) on real mosquitto."""

import re
import shutil

import pytest
from conftest import cloud_config, unique_device, wait_until
from playwright.sync_api import expect
from test_api import TOKEN

from pc import fwbundle
from sim.ccm import VirtualCcm

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30000  # how long the browser waits for a change before the test fails (not a speed limit)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not shutil.which(exe):
        pytest.fail("Debian's chromium is needed (apt-get install chromium; scripts/test installs it as root)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def dash(mosquitto, shadow_service, tmp_path):
    from cloud.api import Dashboard

    with Dashboard(mosquitto.url, shadow_service, str(tmp_path / "bundles"), token=TOKEN) as d:
        d.broker = mosquitto
        yield d


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert errors == [], errors  # no script error on any page


def test_login_then_a_device_goes_offline_and_online_without_reload(dash, page, tmp_path):
    page.goto(dash.url)
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error:has-text('wrong token')")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#devices")

    dev = unique_device()
    fs = tmp_path / "fs"
    fs.mkdir()
    v = VirtualCcm(cloud_config(dash.broker.port, dev), fs_dir=str(fs)).start()
    row = f"tr[data-device='{dev}']"
    try:
        page.wait_for_selector(f"{row} .state:has-text('online')")
        page.wait_for_selector(f"{row} .fw:has-text('0.1')")  # Sys.GetInfo's fw_version
        v.stop()
        page.wait_for_selector(f"{row} .state:has-text('offline')")
        v = VirtualCcm(cloud_config(dash.broker.port, dev), fs_dir=str(fs)).start()
        page.wait_for_selector(f"{row} .state:has-text('online')")
        assert page.url.rstrip("/").endswith(dash.url.split("//")[1]) or page.url.startswith(dash.url)
    finally:
        v.stop()


def test_the_lamp_from_the_browser_shadow_rpc_config_and_ota(dash, page, tmp_path):
    """A new user's path: open the link, switch the lamp, call Sum, upload v2, watch it install."""
    from sim.lamp_fw import lamp_image
    from sim.product import LampProduct

    (tmp_path / "lamp.bin").write_bytes(lamp_image("2.0")[0])
    bundle = tmp_path / "lamp-2.0.zip"
    fwbundle.create(
        str(bundle),
        "lamp",
        "ccm_host",
        ["host_fw:type=STM32,src=lamp.bin,addr=0x8000000"],
        "2.0",
        src_dir=str(tmp_path),
    )
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    dev = unique_device()
    with LampProduct(dev, dash.broker.url, str(tmp_path / "fs")) as product:
        page.goto(dash.login_url)  # the link `ccm cloud` prints
        page.click(f"a[href='#/device/{dev}']")
        page.wait_for_selector("#host-version:has-text('1.0')")

        # the shadow: desired from the editor, the host's report comes back, the delta goes away
        page.fill("#desired-editor", '{"on": true, "brightness": 60}')
        page.click("#desired-save")
        page.wait_for_selector("#shadow-reported .delta", state="detached")
        page.wait_for_selector("#shadow-reported:has-text('\"brightness\": 60')")
        wait_until(lambda: product.mcu.led, what="the LED on")
        # ...and a toggle
        page.uncheck("#toggles input[data-key='on']")
        page.wait_for_selector("#shadow-reported:has-text('\"on\": false')")
        wait_until(lambda: not product.mcu.led, what="the LED off")
        page.wait_for_selector(".plot[data-series='reported.brightness']")

        # the RPC console: the host's Sum through the cloud, and an error passed through
        page.fill("#rpc-method", "Sum")
        page.fill("#rpc-params", "[2, 3]")
        page.click("#rpc-call")
        page.wait_for_selector(".rpc-result:has-text('← 5')")
        page.fill("#rpc-method", "No.Such.Method")
        page.fill("#rpc-params", "")
        page.click("#rpc-call")
        page.wait_for_selector(".rpc-result.error:has-text('-32601')")

        # config: load it (secrets redacted by the CCM)
        page.click("#config-load")
        expect(page.locator("#config-editor")).to_have_value(re.compile('"mqtt"'))  # no eval: the CSP forbids it

        # OTA: a bad upload is refused with the reason, the good one installs with a progress bar
        page.set_input_files("#ota-file", str(junk))
        page.wait_for_selector("#ota-msg.error:has-text('not a valid bundle')")
        page.set_input_files("#ota-file", str(bundle))
        page.wait_for_selector("#ota-msg.ok:has-text('lamp-2.0.zip')")
        assert page.input_value("#ota-bundle") == "lamp-2.0.zip"
        page.evaluate(
            """() => { window.otaStates = [];
            new MutationObserver(() => window.otaStates.push(document.getElementById('ota-progress').dataset.state))
              .observe(document.getElementById('ota-progress'), {attributes: true}); }"""
        )
        page.click("#ota-start")
        page.wait_for_selector("#host-version:has-text('2.0')", timeout=120000)
        page.wait_for_selector("#ota-status:has-text('installed 2.0')")
        assert "1" in page.evaluate("window.otaStates"), "the progress bar never showed the update running"
        assert "2.0" in page.text_content("#host-version")
    assert product.ccm.host_call is not None


def test_fleet_ota_page_lists_bundles_and_rollouts(dash, page, tmp_path):
    (tmp_path / "fw.bin").write_bytes(b"\x00" * 1024)
    fwbundle.create(
        str(tmp_path / "fw-3.1.zip"),
        "fw",
        "ccm_host",
        ["host_fw:type=STM32,src=fw.bin,addr=0x8000000"],
        "3.1",
        src_dir=str(tmp_path),
    )
    page.goto(dash.login_url)
    page.click("a[data-nav=ota]")
    page.set_input_files("#fleet-file", str(tmp_path / "fw-3.1.zip"))
    page.wait_for_selector("#bundles td:has-text('fw-3.1.zip')")
    page.wait_for_selector("#bundles td:has-text('3.1')")


def test_the_dashboard_runs_no_injected_script_and_takes_no_change_without_its_csrf_token(dash, page):
    """A browser attacker (issue 22, item 5): the login link's token leaves the address bar for an
    HttpOnly SameSite=Strict cookie; a script injected into the page does not run (Content-Security-
    Policy: script-src 'self'); a change made with the cookie but without the X-CSRF-Token the dashboard's
    own script sends is refused (403), and the dashboard itself still changes things (its logout)."""
    page.goto(f"{dash.url}/?token={TOKEN}")
    page.wait_for_selector("#logout:not([hidden])")
    assert "token" not in page.url  # out of the address bar (and of the history)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["ccm_token"]["httpOnly"] and cookies["ccm_token"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find(TOKEN) < 0  # the page's script cannot read the token
    page.evaluate(
        """() => { const s = document.createElement('script'); s.textContent = 'window.pwned = 1';
                   document.body.append(s); }"""
    )
    assert page.evaluate("window.pwned") is None  # blocked by the CSP
    status = page.evaluate(
        """async () => (await fetch('/api/logout', {method: 'POST', credentials: 'same-origin'})).status"""
    )
    assert status == 200  # logout needs no token; a change that does:
    page.goto(f"{dash.url}/?token={TOKEN}")
    page.wait_for_selector("#logout:not([hidden])")
    forged = page.evaluate(
        """async () => (await fetch('/api/devices/x/rpc/Sys.Reboot', {method: 'POST',
                        credentials: 'same-origin', headers: {'Content-Type': 'application/json'}, body: '{}'})).status"""
    )
    assert forged == 403
    page.click("#logout")
    page.wait_for_selector("#token")
