"""The provisioning wizard (``kiosk provision`` on a terminal): a Textual app, one screen per step.

1. **Identity**: device id, name, role, the platform's broker.
2. **Region**: the five codes, each shown with its name from the region table and checked to be a
   child of the one before; the known choices of the next level are listed.
3. **Device key and CSR**: made on the device (the key never leaves it); the QR code of the device id
   and the CSR's SHA-256 is shown for the platform's registry and saved as PNG and SVG.
4. **Certificate**: the CA and the signed certificate the platform sent back, checked against the key,
   then the config is validated by the appliance's own loader and written.
5. **Self-test**: the hardware checked with a progress bar; the report is saved and shown.

The steps are ``provisioning.steps``'s, exactly as ``--non-interactive`` runs them; the screens only
collect fields and show results. A refused step shows why and writes nothing. The app returns 0 once
the config is written (whatever the self-test found: its report says what to fix), 1 if the
technician leaves before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, ProgressBar, Select, Static

from kiosk_core.config import DEVICE_ID, REGION_LEVELS, read_toml
from kiosk_core.errors import ConfigError
from provisioning import steps
from provisioning.errors import ProvisioningError
from provisioning.identity import Identity, RegionTable, check_identity, parse_broker

LEVEL_LABELS = {
    "province": "省 province",
    "city": "市 city",
    "county": "区县 county",
    "township": "乡镇 township",
    "village": "村 village",
}


@dataclass(slots=True)
class Prefill:
    """Values given as flags, shown in the fields (the technician may change them)."""

    device_id: str = ""
    name: str = ""
    region: str = ""
    role: str = "main"
    broker: str = ""
    ca: str = ""
    cert: str = ""


def _problems(exc: ProvisioningError) -> str:
    return "\n".join(f"• {p}" for p in exc.problems)


class Step(Screen[None]):
    """A wizard step: a title, a scrolling form, a line for errors and a fixed row of buttons."""

    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+n", "next", "Next")]
    TITLE_TEXT = ""
    NEXT_LABEL = "Next 下一步"

    @property
    def wizard(self) -> ProvisionWizard:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self.TITLE_TEXT, classes="title")
        with VerticalScroll(id="form"):
            yield from self.form()
        yield Static("", id="errors", markup=False)
        with Horizontal(id="buttons"):
            yield Button("Back 返回", id="back")
            yield Button(self.NEXT_LABEL, id="next", variant="primary")
        yield Footer()

    def form(self) -> ComposeResult:
        yield from ()

    def show_error(self, text: str) -> None:
        self.query_one("#errors", Static).update(text)
        self.query_one("#errors").set_class(bool(text), "shown")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            self.action_next()
        elif event.button.id == "back":
            self.action_back()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def action_next(self) -> None:
        raise NotImplementedError


def _row(label: str, widget: Any) -> Horizontal:
    return Horizontal(Label(label, classes="label"), widget, classes="row")


class IdentityScreen(Step):
    TITLE_TEXT = "1/5  Identity 设备身份"

    def form(self) -> ComposeResult:
        p = self.wizard.prefill
        yield _row("Device id 设备编号", Input(p.device_id, placeholder="kiosk-0001", id="device-id"))
        yield _row("Name 站点名称", Input(p.name, placeholder="赤柯山村便民服务站", id="name"))
        yield _row(
            "Role 角色",
            Select(
                [("main 主终端", "main"), ("backup 备用终端", "backup")],
                value=p.role,
                allow_blank=False,
                id="role",
            ),
        )
        yield _row("Broker 平台", Input(p.broker, placeholder="mqtt.county.example:8883", id="broker"))

    def action_next(self) -> None:
        device_id = self.query_one("#device-id", Input).value.strip()
        name = self.query_one("#name", Input).value.strip()
        broker = self.query_one("#broker", Input).value
        problems = []
        if not DEVICE_ID.match(device_id):
            problems.append(f"device id {device_id[:40]!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
        if not 1 <= len(name) <= 128:
            problems.append("name must be 1-128 characters")
        try:
            parse_broker(broker)
        except ProvisioningError as exc:
            problems.extend(exc.problems)
        if problems:
            self.show_error("\n".join(f"• {p}" for p in problems))
            return
        self.show_error("")
        w = self.wizard
        w.fields.update(
            device_id=device_id, name=name, broker=broker, role=str(self.query_one("#role", Select).value)
        )
        self.app.push_screen(RegionScreen())


class RegionScreen(Step):
    TITLE_TEXT = "2/5  Region 行政区划"

    def form(self) -> ComposeResult:
        codes = (self.wizard.prefill.region.split(",") + [""] * 5)[:5]
        for index, level in enumerate(REGION_LEVELS):
            yield Horizontal(
                Label(LEVEL_LABELS[level], classes="label"),
                Input(codes[index].strip(), id=f"region-{index}", restrict=r"[0-9]*", max_length=12),
                Label("", id=f"region-name-{index}", classes="region-name"),
                classes="row",
            )
        yield Static("", id="choices", markup=False)

    def on_mount(self) -> None:
        self._refresh_names()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._refresh_names()

    def _codes(self) -> list[str]:
        return [self.query_one(f"#region-{i}", Input).value.strip() for i in range(len(REGION_LEVELS))]

    def _refresh_names(self) -> None:
        table = self.wizard.regions
        parent = ""
        next_level: str | None = ""
        for index, code in enumerate(self._codes()):
            name = table.name(code) if code and code.startswith(parent) else None
            self.query_one(f"#region-name-{index}", Label).update(name or ("?" if code else ""))
            if name is not None and next_level is not None:
                parent = code
            elif next_level is not None:
                next_level = None
        choices = table.children(parent)
        text = ", ".join(f"{c} {n}" for c, n in choices[:8]) + (" ..." if len(choices) > 8 else "")
        self.query_one("#choices", Static).update(
            f"choices under {parent or 'China'}: {text}" if choices else ""
        )

    def action_next(self) -> None:
        w = self.wizard
        try:
            w.identity = check_identity(regions=w.regions, region=self._codes(), **w.fields)
        except ProvisioningError as exc:
            self.show_error(_problems(exc))
            return
        self.show_error("")
        self.app.push_screen(KeysScreen())


class KeysScreen(Step):
    TITLE_TEXT = "3/5  Device key and CSR 设备密钥与证书请求"
    NEXT_LABEL = "I have the certificate 已获证书"

    def form(self) -> ComposeResult:
        yield Static("", id="csr-info", markup=False)
        yield Static("", id="qr")

    def on_mount(self) -> None:
        w = self.wizard
        assert w.identity is not None
        try:
            w.csr = steps.write_csr(w.identity, w.paths, w.regions)
        except ProvisioningError as exc:
            self.show_error(_problems(exc))
            self.query_one("#next", Button).disabled = True
            return
        csr = w.csr
        self.query_one("#csr-info", Static).update(
            f"CSR SHA-256: {csr.fingerprint}\n"
            f"CSR {csr.csr_path}  key {csr.key_path} ({'new' if csr.key_created else 'kept'})\n"
            f"QR {csr.qr_png}\n"
            "Scan the code into the platform's registry (or send the CSR); have it signed.\n"
            "扫描二维码登记设备，平台签发证书后点击下一步。"
        )
        self.query_one("#qr", Static).update(csr.qr_blocks())

    def action_next(self) -> None:
        if self.wizard.csr is not None:
            self.app.push_screen(CertificateScreen())


class CertificateScreen(Step):
    TITLE_TEXT = "4/5  Certificate 安装证书"
    NEXT_LABEL = "Install and write config 安装并写入配置"

    def form(self) -> ComposeResult:
        p = self.wizard.prefill
        yield _row("CA file 根证书", Input(p.ca, placeholder="/media/usb/ca.pem", id="ca"))
        yield _row("Certificate 设备证书", Input(p.cert, placeholder="/media/usb/kiosk-0001.pem", id="cert"))
        yield Static(f"config: {self.wizard.paths.config}", id="target")

    def action_next(self) -> None:
        w = self.wizard
        assert w.identity is not None
        ca, cert = (self.query_one(f"#{i}", Input).value.strip() for i in ("ca", "cert"))
        if not ca or not cert:
            self.show_error("• give both the CA file and the device certificate file")
            return
        try:
            w.installed = steps.install(
                w.identity,
                w.paths,
                cert_file=Path(cert),
                ca_file=Path(ca),
                base=w.base,
                hardware=w.hardware,
                data_dir=w.data_dir,
            )
        except ProvisioningError as exc:
            self.show_error("Refused, nothing written 未写入:\n" + _problems(exc))
            return
        self.show_error("")
        self.app.push_screen(SelfTestScreen())


class SelfTestScreen(Step):
    TITLE_TEXT = "5/5  Hardware self-test 硬件自检"
    NEXT_LABEL = "Run self-test 开始自检"

    def form(self) -> ComposeResult:
        installed = self.wizard.installed
        yield Static(f"config written: {installed.config if installed else '?'}", id="written")
        yield ProgressBar(total=1, show_eta=False, id="progress")
        yield Static("", id="step", markup=False)
        yield Static("", id="report", markup=False)

    def action_back(self) -> None:
        self.app.exit(0)  # the config is written; leaving here is finishing

    def action_next(self) -> None:
        button = self.query_one("#next", Button)
        if str(button.label).startswith("Finish"):
            self.app.exit(0)
            return
        button.disabled = True
        self.run_worker(self._run(), exclusive=True, name="selftest")

    def _progress(self, done: int, total: int, what: str) -> None:
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=total, progress=done)
        self.query_one("#step", Static).update(what)

    async def _run(self) -> None:
        from appliance import config as appliance_config
        from provisioning.selftest import run_selftest

        w = self.wizard
        try:
            cfg = appliance_config.load(w.paths.config)
        except ConfigError as exc:  # cannot happen after install() validated it; say so if it does
            self.show_error(str(exc))
            return
        report = await run_selftest(cfg, progress=self._progress)
        w.report = report
        try:
            report.save(cfg.storage.data_dir)
            saved = f"saved under {cfg.storage.data_dir}/selftest/"
        except OSError as exc:
            saved = f"not saved: {exc.strerror or exc}"
        self.query_one("#report", Static).update(report.text() + saved)
        button = self.query_one("#next", Button)
        button.label = "Finish 完成"
        button.disabled = False


class ProvisionWizard(App[int]):
    """``kiosk provision``'s wizard. ``run()`` returns 0 once the config is written, else 1."""

    TITLE = "Kiosk provisioning 终端开通"
    CSS = """
    .title { text-style: bold; padding: 0 1; }
    #form { height: 1fr; padding: 0 1; }
    .row { height: auto; }
    .label { width: 22; padding: 1 1 0 0; }
    .row Input { width: 1fr; }
    .row Select { width: 1fr; }
    .region-name { width: 18; padding: 1 0 0 1; }
    #errors { display: none; color: $error; padding: 0 1; height: auto; max-height: 8; }
    #errors.shown { display: block; }
    #buttons { height: 3; dock: bottom; align: right middle; }
    #qr { width: auto; }
    """

    def __init__(
        self,
        *,
        config_path: Path,
        regions: RegionTable,
        prefill: Prefill | None = None,
        hardware: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.regions = regions
        self.prefill = prefill or Prefill()
        self.fields: dict[str, str] = {}
        self.identity: Identity | None = None
        self.csr: steps.CsrResult | None = None
        self.installed: steps.InstallResult | None = None
        self.report: Any = None
        self.data_dir = data_dir
        self.startup_error = ""
        self.base: dict[str, Any] = {}
        self.hardware: dict[str, Any] | None = None
        try:
            self.base = steps.existing_config(config_path)
            self.hardware = read_toml(hardware) if hardware else None
        except (ProvisioningError, ConfigError) as exc:
            self.startup_error = str(exc)
        self.paths = steps.Paths.for_config(config_path, self.base)

    def on_mount(self) -> None:
        self.push_screen(IdentityScreen())
        if self.startup_error:
            self.screen.show_error(self.startup_error)  # type: ignore[attr-defined]

    async def action_quit(self) -> None:
        self.exit(0 if self.installed is not None else 1)
