"""Config files: typed, strict, and every error names the file, the key, the value and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import config
from kiosk_core.config import MAX_CONFIG_BYTES
from kiosk_core.errors import ConfigError

SAMPLE = Path(__file__).parent.parent / "docs" / "kiosk.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "kiosk.toml"
    p.write_text(text, encoding="utf-8")
    return p


MINIMAL = """
[device]
id = "kiosk-0001"
name = "赤柯山村便民服务站"
role = "main"
region = ["33", "3308", "330803", "330803100", "330803100201"]
"""


def test_the_documented_example_is_valid():
    cfg = config.load(SAMPLE)
    assert cfg.device.id == "kiosk-0001" and cfg.fleet.telemetry_interval_s == 30
    assert cfg.topic_root == "kiosk/v1/33/3308/330803/330803100/330803100201/kiosk-0001"


def test_defaults_fill_everything_but_the_device(tmp_path: Path):
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.bus.port == 1883 and str(cfg.storage.data_dir) == "/var/lib/kiosk"


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (
            ('role = "main"', 'role = "primary"'),
            "device.role = 'primary': Input should be 'main' or 'backup'",
        ),
        (('id = "kiosk-0001"', 'id = "kiosk 0001/#"'), "device.id = 'kiosk 0001/#'"),
        (('"330803100201"', '"330803100"'), "village code '330803100' must be 12 digits"),
        (('"330803100201"', '"110803100201"'), "must start with its parent's code"),
        (('role = "main"', 'role = "main"\nrol = "x"'), "device.rol: unknown key"),
    ],
)
def test_errors_name_file_key_value_and_what_is_allowed(tmp_path: Path, edit, fragment):
    path = write(tmp_path, MINIMAL.replace(*edit))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(path) in str(err.value)
    assert fragment in str(err.value)


def test_unknown_key_lists_allowed_keys(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, MINIMAL + "[fleet]\nhots = 'x'\n"))
    assert "fleet.hots: unknown key" in str(err.value) and "host" in str(err.value)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"[device\nid=1", "TOML syntax"),
        (b"\xff\xfe[device]", "not UTF-8"),
        (b"x" * (MAX_CONFIG_BYTES + 1), "at most"),
        (b"", "device: required key is missing"),
    ],
)
def test_broken_files(tmp_path: Path, raw: bytes, fragment: str):
    p = tmp_path / "k.toml"
    p.write_bytes(raw)
    with pytest.raises(ConfigError) as err:
        config.load(p)
    assert fragment in str(err.value)


def test_missing_file_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml")
    monkeypatch.setenv("KIOSK_CONFIG", str(write(tmp_path, MINIMAL)))
    assert config.resolve_path(None) == tmp_path / "kiosk.toml"
    assert config.load().device.role == "main"


def test_kiosk_config_check_prints_redacted_config_or_errors(tmp_path: Path):
    good = write(tmp_path, MINIMAL + '[fleet]\nusername = "k1"\npassword = "s3cret"\n')
    out = subprocess.run(
        [sys.executable, "-m", "kiosk_cli.main", "config", "check", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"password": "***"' in out.stdout and "s3cret" not in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace('"main"', '"boss"'))
    out = subprocess.run(
        [sys.executable, "-m", "kiosk_cli.main", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "device.role = 'boss'" in out.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_may_be_named_before_or_after_the_subcommand(tmp_path: Path, where: str):
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace('"main"', '"boss"'))
    args = ["--config", str(bad), "run"] if where == "before" else ["run", "--config", str(bad)]
    out = subprocess.run(
        [sys.executable, "-m", "kiosk_cli.main", *args], capture_output=True, text=True, timeout=60
    )
    # 78 = EX_CONFIG: the file named was read (and refused), whichever side of `run` it stood
    assert out.returncode == 78 and "device.role = 'boss'" in out.stdout + out.stderr, out


toml_values = st.recursive(
    st.one_of(st.integers(), st.text(max_size=20), st.booleans(), st.floats(allow_nan=False)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            ["device", "fleet", "bus", "storage", "logging", "drivers", "media", "session", "junk"]
        ),
        toml_values,
        max_size=6,
    )
)
def test_any_document_gives_a_config_or_a_config_error(doc):
    try:
        config.parse(doc, "fuzz.toml")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)
