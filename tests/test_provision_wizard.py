"""The provisioning wizard, driven with Textual's Pilot at the kiosk console's sizes: a technician
types the identity and the region, scans the CSR's QR code, brings back the signed certificate, and
runs the self-test on the demo's simulated room."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, Static

from appliance import config as appliance_config
from provisioning.identity import RegionTable
from provisioning.wizard import Prefill, ProvisionWizard
from sim.demo import DEMO_HARDWARE
from tests.provision_helpers import PlatformCA


def _text(app: ProvisionWizard, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def _type(pilot, selector: str, text: str) -> None:  # noqa: ANN001
    """Focus the field, clear it and type ``text`` key by key."""
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = ""
    await pilot.press(*text)


async def _paste(pilot, selector: str, text: str) -> None:  # noqa: ANN001
    """Put ``text`` in the field at once (as a paste does): long paths typed key by key cost seconds."""
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = text
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_a_technician_provisions_a_kiosk_with_the_wizard(tmp_path: Path, size: tuple[int, int]) -> None:
    hardware = tmp_path / "room.toml"
    hardware.write_text(DEMO_HARDWARE, encoding="utf-8")
    config = tmp_path / "etc" / "kiosk.toml"
    app = ProvisionWizard(
        config_path=config,
        regions=RegionTable.load(),
        prefill=Prefill(broker="mqtt.county.example:8883"),
        hardware=hardware,
        data_dir=tmp_path / "data",
    )
    ca = PlatformCA.make()
    async with app.run_test(size=size) as pilot:
        # 1. identity: a bad broker first
        await _type(pilot, "#device-id", "kiosk-0001")
        await _paste(pilot, "#name", "赤柯山村便民服务站")
        await _type(pilot, "#broker", "host:99999")
        await pilot.press("ctrl+n")
        assert "must be a number 1-65535" in _text(app, "#errors")
        await _paste(pilot, "#broker", "mqtt.county.example:8883")
        await pilot.press("ctrl+n")
        # 2. region: names appear as codes are typed; a code of another city is refused
        assert app.screen.__class__.__name__ == "RegionScreen"
        await _type(pilot, "#region-0", "33")
        for index, code in enumerate(["3308", "330803", "330803100", "330803100209"], start=1):
            await _paste(pilot, f"#region-{index}", code)
        assert "衢江区" in _text(app, "#region-name-2") and "上方镇" in _text(app, "#region-name-3")
        assert "330803100201 赤柯山村" in _text(app, "#choices")
        await pilot.click("#next")
        assert "village code 330803100209 is not in" in _text(app, "#errors")
        await _paste(pilot, "#region-4", "330803100201")
        await pilot.press("ctrl+n")
        # 3. the key, the CSR and its QR code
        assert app.screen.__class__.__name__ == "KeysScreen"
        assert app.csr is not None and app.csr.fingerprint in _text(app, "#csr-info")
        assert "▀" in _text(app, "#qr") and app.csr.qr_png.exists()
        await pilot.press("ctrl+n")
        # 4. the certificate: one for another device's CSR is refused, the right one installed
        wrong = PlatformCA.make().sign(app.csr.csr_path, tmp_path / "wrong.pem")
        await _paste(pilot, "#ca", str(ca.write(tmp_path / "ca.pem")))
        await _paste(pilot, "#cert", str(wrong))
        await pilot.press("ctrl+n")
        assert "was not signed by the CA" in _text(app, "#errors") and not config.exists()
        await _paste(pilot, "#cert", str(ca.sign(app.csr.csr_path, tmp_path / "kiosk-0001.pem")))
        await pilot.press("ctrl+n")
        assert config.exists() and app.screen.__class__.__name__ == "SelfTestScreen"
        # 5. the self-test on the simulated room
        await pilot.press("ctrl+n")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert "all passed" in _text(app, "#report") and "[PASS] card_reader" in _text(app, "#report")
        await pilot.press("ctrl+n")
    assert app.return_value == 0
    cfg = appliance_config.load(config)
    assert cfg.device.id == "kiosk-0001" and cfg.drivers.switcher is not None
    assert (tmp_path / "data" / "selftest" / "last.json").exists()


async def test_leaving_the_wizard_before_the_config_is_written_returns_1(tmp_path: Path) -> None:
    app = ProvisionWizard(config_path=tmp_path / "kiosk.toml", regions=RegionTable.load())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+q")
    assert app.return_value == 1 and not any(tmp_path.iterdir())
