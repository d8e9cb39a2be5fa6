#!/usr/bin/env bash
# Sets up everything the kiosk needs on a fresh Debian 12 / Raspberry Pi OS machine (as root), then
#   scripts/dev.sh demo   runs the simulated kiosk
#   scripts/dev.sh test   runs the whole test suite
# Idempotent: a second run only checks what is there. "Fresh" includes a `debootstrap --variant=minbase`
# root (no python3, no ps, no git, no openssl, no CA certificates): the tests need only what a minbase
# root has and what is installed below.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
# The tests make a throwaway CA and certificates with it (TLS with a client certificate).
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# pip and apt over HTTPS trust the system's CA store.
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
# pyusb's backend for USB card readers (backend = "usb"); Raspberry Pi OS ships it, minbase does not.
compgen -G "/usr/lib/*/libusb-1.0.so.0" >/dev/null || compgen -G "/lib/*/libusb-1.0.so.0" >/dev/null || need_apt+=(libusb-1.0-0)
# The receipt printer simulator renders Chinese text with a CJK font (drivers/printer/simulator.py).
compgen -G "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc" >/dev/null || compgen -G "/usr/share/fonts/opentype/noto/NotoSansCJK-*.ttc" >/dev/null || need_apt+=(fonts-wqy-zenhei)
# The video call's tests and demo: Janus as the county's media server (VideoRoom), its JS library for the
# reference clerk page, Chromium as the clerk's browser, iproute2 (ip netns, veth, tc netem) for the
# test's own network namespaces and the poor village link.
[ -x /usr/bin/janus ] || need_apt+=(janus)
[ -f /usr/share/javascript/janus-gateway/janus.js ] || need_apt+=(libjs-janus-gateway)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# bench/call_echo.py compares the echo canceller with SpeexDSP's (the reference, through ctypes).
compgen -G "/usr/lib/*/libspeexdsp.so.1" >/dev/null || need_apt+=(libspeexdsp1)
{ command -v ip && command -v tc; } >/dev/null 2>&1 || [ -x /usr/sbin/tc ] || need_apt+=(iproute2)
# Firmware updates are tested against a stand-in RAUC on a private dbus-daemon; the units are checked with
# systemd-analyze (verify, security), and `kiosk provision install` is tried in a debootstrap root.
command -v dbus-daemon >/dev/null 2>&1 || need_apt+=(dbus-daemon)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need_apt+=(debootstrap)
# Debian's python3 has no ensurepip (so no `python3 -m venv`) without python3-venv.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}" >&2
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" </dev/null >/dev/null
  # Debian starts a system-wide mosquitto on port 1883 where systemd runs; the kiosk starts its own
  # brokers on free ports, so the system one is left as the distribution set it up.
fi
PATH="$PATH:/usr/sbin"

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: Python >= 3.11 is required, found {sys.version.split()[0]}")
PY

venv="$here/.venv"
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # A venv left half-made (no pip: python3-venv was missing when it was created) is made again.
  if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }; then
    rm -rf "$venv"
    # On a Raspberry Pi picamera2's libcamera bindings (and lgpio) come only from apt: the venv must see them.
    pi=(); grep -qai 'raspberry pi' /proc/device-tree/model 2>/dev/null && pi=(--system-site-packages)
    python3 -m venv "${pi[@]}" "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

cmd="${1:-demo}"; shift || true
case "$cmd" in
  demo) exec "$venv/bin/kiosk" demo "$@" ;;
  test)
    # Hygiene first (seconds): lint, formatting and the import direction of DESIGN.md.
    "$venv/bin/ruff" check --quiet .
    "$venv/bin/ruff" format --check --quiet .
    "$venv/bin/lint-imports" --no-cache >/dev/null || { "$venv/bin/lint-imports" --no-cache; exit 1; }
    set +e
    # Two workers (pytest-xdist; KIOSK_TEST_WORKERS=0 runs serially). --dist loadgroup spreads the tests
    # one by one, except those marked xdist_group("heavy") (timing-sensitive: media gaps, the call in its
    # network namespaces, the tmux walk-throughs, power cuts), which run one at a time on one worker.
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -n "${KIOSK_TEST_WORKERS:-2}" --dist loadgroup \
      --durations=15 "$@"
    rc=$?
    # pytest's 5 means "no tests collected": that is a failure here, never a pass.
    exit $rc ;;
  setup) echo "setup: ready ($venv)" ;;
  *) echo "usage: scripts/dev.sh demo|test|setup [args...]" >&2; exit 2 ;;
esac
