"""`kiosk fleet acl`: the central broker's configuration enforces 分权分域, proved against a real mosquitto.

One broker per module runs exactly the files the command generated (listener on a free loopback port).
Every "forbidden" case is paired with an allowed one that must pass in the same step, so a test cannot
pass because nothing works: a forbidden subscribe is refused (SUBACK >= 0x80) or never delivers what an
allowed subscriber receives; a forbidden publish is refused (PUBACK 0x87) or never reaches a subscriber
that would have received it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import stat
import subprocess
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kiosk_cli.main import main as kiosk
from kiosk_core.errors import LinkError, PublishFailed
from kiosk_core.mqtt import MqttConnection, Tls
from provisioning import fleet_acl
from sim.county import FleetRequester
from sim.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.timeout(30)

HEADER = "kind,id,province,city,county,township,village,password"
# name -> (kind, region codes); the password of each is f"{name}-Secret-pw".
ACCOUNTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # county 330803, township 330803100: two villages
    "kiosk-0001": ("device", ("33", "3308", "330803", "330803100", "330803100201")),
    "kiosk-0002": ("device", ("33", "3308", "330803", "330803100", "330803100202")),
    # the same county, another township
    "kiosk-0003": ("device", ("33", "3308", "330803", "330803101", "330803101001")),
    # the same city, another county
    "kiosk-0004": ("device", ("33", "3308", "330802", "330802001", "330802001001")),
    # another province
    "kiosk-0005": ("device", ("35", "3501", "350102", "350102001", "350102001001")),
    "county-330803": ("operator", ("33", "3308", "330803")),
    "county-330802": ("operator", ("33", "3308", "330802")),
    "town-330803100": ("operator", ("33", "3308", "330803", "330803100")),
    "prov-33": ("operator", ("33",)),
    "prov-35": ("operator", ("35",)),
}
SHORT_WAIT_S = 0.3  # after an allowed subscriber got a message, how long a forbidden one may still take


def password(name: str) -> str:
    return f"{name}-Secret-pw"


def inventory_text(accounts: dict[str, tuple[str, tuple[str, ...]]] = ACCOUNTS) -> str:
    rows = [HEADER]
    for name, (kind, region) in accounts.items():
        codes = list(region) + [""] * (5 - len(region))
        rows.append(",".join([kind, name, *codes, password(name)]))
    return "\n".join(rows) + "\n"


def root(name: str) -> str:
    kind, region = ACCOUNTS[name]
    assert kind == "device"
    return "/".join(["kiosk/v1", *region, name])


def reply_prefix(name: str) -> str:
    return fleet_acl.reply_prefix(ACCOUNTS[name][1], name)


def generate(tmp: Path, text: str | bytes, *args: str) -> tuple[int, Path]:
    inv = tmp / "inventory.csv"
    inv.write_bytes(text.encode() if isinstance(text, str) else text)
    out = tmp / "out"
    return kiosk(["fleet", "acl", str(inv), "--out", str(out), *args]), out


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    tmp = tmp_path_factory.mktemp("fleet-acl")
    port = free_port()
    rc, out = generate(tmp, inventory_text(), "--port", str(port), "--bind", "127.0.0.1")
    assert rc == 0
    conf = (out / "mosquitto.conf").read_text()
    with Mosquitto(port=port, config=conf, persistent=False, workdir=tmp / "broker", name="fleet") as b:
        yield b


class Clients:
    """Connections of this test, closed at its end."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.conns: list[MqttConnection] = []

    async def connect(
        self, name: str, *, client_id: str | None = None, secret: str | None = None
    ) -> MqttConnection:
        conn = MqttConnection(
            host="127.0.0.1",
            port=self.broker.port,
            client_id=client_id or name,
            username=name,
            password=password(name) if secret is None else secret,
            name=name,
        )
        self.conns.append(conn)
        await conn.connect(timeout_s=5)
        return conn

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


@pytest.fixture
async def clients(broker: Mosquitto):
    c = Clients(broker)
    yield c
    await c.close()


# Messages a connection received that a wait was not looking for: a later wait still sees them (a
# forbidden message that arrived while waiting for the control message must not be lost).
_unclaimed: weakref.WeakKeyDictionary[MqttConnection, list[tuple[str, bytes]]] = weakref.WeakKeyDictionary()


async def receive(conn: MqttConnection, token: bytes, timeout_s: float) -> str | None:
    """The topic of the message carrying ``token`` received within ``timeout_s`` (or before), else None."""
    unclaimed = _unclaimed.setdefault(conn, [])
    for topic, payload in unclaimed:
        if payload == token:
            return topic
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await asyncio.wait_for(conn.incoming.get(), left)
        except TimeoutError:
            return None
        if msg.payload == token:
            return msg.topic
        unclaimed.append((msg.topic, msg.payload))
    return None


async def subscribed(conn: MqttConnection, topic_filter: str) -> bool:
    """True if the broker granted the subscription, False if it refused it (SUBACK >= 0x80)."""
    try:
        await conn.subscribe((topic_filter, 1), timeout_s=5)
    except LinkError as exc:
        assert "reason codes" in str(exc)
        return False
    return True


async def publish(conn: MqttConnection, topic: str, token: bytes) -> bool:
    """QoS 1; True on PUBACK success, False when mosquitto answers 0x87 Not authorized."""
    try:
        await asyncio.wait_for(conn.publish(topic, token, qos=1), 5)
    except PublishFailed as exc:
        assert "Not authorized" in str(exc)
        return False
    return True


async def flows(
    pub: MqttConnection, topic: str, to: MqttConnection, *, not_to: list[MqttConnection] = ()
) -> None:
    """``pub`` may publish on ``topic``, ``to`` receives it, and none of ``not_to`` does."""
    token = uuid.uuid4().hex.encode()
    assert await publish(pub, topic, token), f"{pub.name} may publish on {topic}"
    assert await receive(to, token, 5) == topic, f"{to.name} receives {topic}"
    for other in not_to:
        assert await receive(other, token, SHORT_WAIT_S) is None, f"{other.name} must not receive {topic}"


async def blocked(
    pub: MqttConnection,
    topic: str,
    watcher: MqttConnection,
    control: str,
    control_pub: MqttConnection | None = None,
) -> None:
    """``pub`` may not publish on ``topic``: ``watcher`` (subscribed to it) never gets it, though it does
    get the message on ``control`` that ``control_pub`` (default ``pub``) sends once the broker has
    answered the first one (so both have been routed)."""
    token, control_token = uuid.uuid4().hex.encode(), uuid.uuid4().hex.encode()
    await publish(pub, topic, token)  # refused with 0x87, or silently dropped: both are fine
    assert await publish(control_pub or pub, control, control_token)
    assert await receive(watcher, control_token, 5) == control
    assert await receive(watcher, token, SHORT_WAIT_S) is None, f"{pub.name} published on {topic}"


async def cannot_read(
    reader: MqttConnection, topic_filter: str, pub: MqttConnection, topic: str, watcher: MqttConnection
) -> None:
    """``reader`` may not subscribe ``topic_filter``: refused, or ``pub``'s message on ``topic`` reaches
    ``watcher`` (allowed) and not ``reader``."""
    if not await subscribed(reader, topic_filter):
        return
    token = uuid.uuid4().hex.encode()
    assert await publish(pub, topic, token)
    assert await receive(watcher, token, 5) == topic
    assert await receive(reader, token, SHORT_WAIT_S) is None, (
        f"{reader.name} read {topic} via {topic_filter}"
    )


# --- devices -------------------------------------------------------------------------------------


async def test_a_device_publishes_its_channels_and_receives_its_commands(clients: Clients) -> None:
    dev = await clients.connect("kiosk-0001")
    province = await clients.connect("prov-33")
    assert await subscribed(province, "kiosk/v1/33/#")
    for channel in ("state", "birth", "telemetry", "event", "config/reported"):
        await flows(dev, f"{root('kiosk-0001')}/{channel}", province)
    assert await subscribed(dev, f"{root('kiosk-0001')}/cmd/+")
    assert await subscribed(dev, f"{root('kiosk-0001')}/config/desired")
    county = await clients.connect("county-330803")
    await flows(county, f"{root('kiosk-0001')}/cmd/ping", dev)
    await flows(county, f"{root('kiosk-0001')}/config/desired", dev)


async def test_a_device_cannot_publish_or_read_outside_its_own_root(clients: Clients) -> None:
    dev = await clients.connect("kiosk-0001")
    neighbour = await clients.connect("kiosk-0002")
    province = await clients.connect("prov-33")
    assert await subscribed(province, "kiosk/v1/33/#")
    own = f"{root('kiosk-0001')}/telemetry"
    # a neighbour's channels, a channel the contract does not have, commands to itself or others
    for topic in (
        f"{root('kiosk-0002')}/state",
        f"{root('kiosk-0002')}/event",
        f"{root('kiosk-0004')}/telemetry",
        f"{root('kiosk-0001')}/debug",
        f"{root('kiosk-0001')}/cmd/reboot",
        f"{root('kiosk-0002')}/cmd/reboot",
        f"{root('kiosk-0001')}/config/desired",
        # the same device id under a forged region
        "kiosk/v1/33/3308/330802/330802001/330802001001/kiosk-0001/event",
    ):
        await blocked(dev, topic, province, control=own)
    # it cannot read a neighbour's commands, the region, or the state of anyone
    county = await clients.connect("county-330803")
    assert await subscribed(neighbour, f"{root('kiosk-0002')}/cmd/+")
    await cannot_read(dev, f"{root('kiosk-0002')}/cmd/+", county, f"{root('kiosk-0002')}/cmd/ping", neighbour)
    await cannot_read(dev, "kiosk/v1/33/3308/330803/#", neighbour, f"{root('kiosk-0002')}/state", province)
    await cannot_read(dev, f"{root('kiosk-0001')}/state", dev, f"{root('kiosk-0001')}/state", province)


async def test_a_device_replies_only_to_operators_whose_region_contains_it(clients: Clients) -> None:
    dev = await clients.connect("kiosk-0001")
    inboxes = {}
    for name in ("county-330803", "town-330803100", "prov-33", "county-330802", "prov-35"):
        inboxes[name] = await clients.connect(name)
        assert await subscribed(inboxes[name], reply_prefix(name) + "/#")
    for name in ("town-330803100", "county-330803", "prov-33"):
        await flows(dev, reply_prefix(name) + "/r1", inboxes[name])
    # another county's and another province's inbox: the forgery this scheme exists to stop. The
    # control message comes from a device of theirs. (The province-level line of kiosk-0001's ACL,
    # kiosk/v1/replies/33/_/_/_/_/+/#, does not reach county inboxes: the five slots keep levels apart.)
    for name, local in (("county-330802", "kiosk-0004"), ("prov-35", "kiosk-0005")):
        inbox = reply_prefix(name) + "/r1"
        await blocked(dev, inbox, inboxes[name], inbox, control_pub=await clients.connect(local))
    # the old shared inbox is closed to devices
    assert not await publish(dev, "platform/county-330803/replies", b"x")


async def test_a_device_cannot_take_another_devices_client_id(clients: Clients) -> None:
    victim = await clients.connect("kiosk-0002")
    assert await subscribed(victim, f"{root('kiosk-0002')}/cmd/+")
    # kiosk-0001 authenticates as itself but asks for kiosk-0002's client id
    thief = await clients.connect("kiosk-0001", client_id="kiosk-0002")
    assert await subscribed(thief, f"{root('kiosk-0001')}/cmd/+")
    await asyncio.sleep(0.5)
    assert victim.connected, "the broker knocked the victim off for a client id taken by another account"
    county = await clients.connect("county-330803")
    # the victim still gets its commands, and the thief only its own
    await flows(county, f"{root('kiosk-0002')}/cmd/ping", victim, not_to=[thief])
    await flows(county, f"{root('kiosk-0001')}/cmd/ping", thief, not_to=[victim])
    assert victim.connected


@pytest.mark.parametrize(
    ("user", "secret"),
    [("kiosk-0001", "wrong-password-1"), ("kiosk-9999", "kiosk-9999-Secret-pw"), ("kiosk-0001", "")],
)
async def test_wrong_passwords_and_unknown_accounts_are_refused(
    clients: Clients, user: str, secret: str
) -> None:
    with pytest.raises(LinkError, match="refused|Not authorized|Bad user"):
        await clients.connect(user, secret=secret)


async def test_anonymous_clients_are_refused(broker: Mosquitto) -> None:
    conn = MqttConnection(host="127.0.0.1", port=broker.port, client_id="anon", name="anon")
    with pytest.raises(LinkError):
        await conn.connect(timeout_s=5)
    await conn.close()


# --- operators -----------------------------------------------------------------------------------


async def test_a_county_operator_reads_and_commands_only_its_county(clients: Clients) -> None:
    county = await clients.connect("county-330803")
    devs = {name: await clients.connect(name) for name in ("kiosk-0001", "kiosk-0003", "kiosk-0004")}
    for dev_name, dev in devs.items():
        assert await subscribed(dev, f"{root(dev_name)}/cmd/+")
    assert await subscribed(county, "kiosk/v1/33/3308/330803/#")
    await flows(devs["kiosk-0001"], f"{root('kiosk-0001')}/event", county)
    await flows(devs["kiosk-0003"], f"{root('kiosk-0003')}/event", county)
    await flows(county, f"{root('kiosk-0003')}/cmd/ping", devs["kiosk-0003"])
    # a neighbouring county: reading and commanding both fail
    other_county = await clients.connect("county-330802")
    assert await subscribed(other_county, "kiosk/v1/33/3308/330802/#")
    for topic_filter in (
        "kiosk/v1/33/3308/330802/#",
        "kiosk/v1/33/3308/#",
        "kiosk/v1/33/#",
        "kiosk/v1/+/+/+/+/+/+/event",
    ):
        await cannot_read(
            county, topic_filter, devs["kiosk-0004"], f"{root('kiosk-0004')}/event", other_county
        )
    province = await clients.connect("prov-33")
    assert await subscribed(province, "kiosk/v1/33/#")
    own_cmd = f"{root('kiosk-0001')}/cmd/ping"
    await blocked(county, f"{root('kiosk-0004')}/cmd/reboot", province, control=own_cmd)
    await blocked(county, f"{root('kiosk-0004')}/config/desired", province, control=own_cmd)
    # an operator publishes commands and desired config, never a device's channels
    await blocked(county, f"{root('kiosk-0001')}/state", province, control=own_cmd)
    await blocked(county, f"{root('kiosk-0001')}/event", province, control=own_cmd)


async def test_a_township_operator_reads_and_commands_only_its_township(clients: Clients) -> None:
    town = await clients.connect("town-330803100")
    province = await clients.connect("prov-33")
    assert await subscribed(province, "kiosk/v1/33/#")
    devs = {name: await clients.connect(name) for name in ("kiosk-0001", "kiosk-0002", "kiosk-0003")}
    for dev_name, dev in devs.items():
        assert await subscribed(dev, f"{root(dev_name)}/cmd/+")
    # both villages of the township
    await flows(town, f"{root('kiosk-0001')}/cmd/ping", devs["kiosk-0001"])
    await flows(town, f"{root('kiosk-0002')}/cmd/ping", devs["kiosk-0002"])
    assert await subscribed(town, "kiosk/v1/33/3308/330803/330803100/#")
    await flows(devs["kiosk-0002"], f"{root('kiosk-0002')}/telemetry", town)
    # the next township of the same county
    await blocked(town, f"{root('kiosk-0003')}/cmd/ping", province, control=f"{root('kiosk-0001')}/cmd/ping")
    await cannot_read(
        town, "kiosk/v1/33/3308/330803/#", devs["kiosk-0003"], f"{root('kiosk-0003')}/event", province
    )
    await cannot_read(
        town,
        "kiosk/v1/33/3308/330803/330803101/#",
        devs["kiosk-0003"],
        f"{root('kiosk-0003')}/event",
        province,
    )


async def test_a_province_operator_reads_and_commands_only_its_province(clients: Clients) -> None:
    province = await clients.connect("prov-33")
    other = await clients.connect("prov-35")
    assert await subscribed(other, "kiosk/v1/35/#")
    dev4, dev5 = await clients.connect("kiosk-0004"), await clients.connect("kiosk-0005")
    assert await subscribed(dev4, f"{root('kiosk-0004')}/cmd/+")
    await flows(province, f"{root('kiosk-0004')}/cmd/ping", dev4)
    assert await subscribed(province, "kiosk/v1/33/#")
    await flows(dev4, f"{root('kiosk-0004')}/event", province)
    assert await subscribed(dev5, f"{root('kiosk-0005')}/cmd/+")
    await blocked(province, f"{root('kiosk-0005')}/cmd/ping", dev5, f"{root('kiosk-0005')}/cmd/ping", other)
    await cannot_read(province, "kiosk/v1/35/#", dev5, f"{root('kiosk-0005')}/event", other)


async def test_replies_reach_only_the_requesters_own_prefix(clients: Clients) -> None:
    county = await clients.connect("county-330803")
    other = await clients.connect("county-330802")
    province = await clients.connect("prov-33")
    dev = await clients.connect("kiosk-0001")
    assert await subscribed(county, reply_prefix("county-330803") + "/#")
    assert await subscribed(other, reply_prefix("county-330802") + "/#")
    dev4 = await clients.connect("kiosk-0004")
    target = reply_prefix("county-330803") + "/req-1"
    # a province operator (whose region contains the county) or a neighbour cannot read the county's inbox
    for reader, topic_filter in (
        (province, reply_prefix("county-330803") + "/#"),
        (province, "kiosk/v1/replies/33/#"),
        (other, reply_prefix("county-330803") + "/#"),
        (other, "kiosk/v1/replies/#"),
        (dev4, "kiosk/v1/replies/#"),
        (dev, reply_prefix("county-330803") + "/#"),
    ):
        await cannot_read(reader, topic_filter, dev, target, county)
    # nor publish into it
    for forger in (other, province, dev4):
        await blocked(forger, target, county, target, control_pub=dev)


async def test_nobody_subscribes_to_the_whole_fleet(clients: Clients) -> None:
    """Through kiosk/v1/# (or #) an account gets nothing it could not read anyway: a device of another
    province (or county) stays invisible to it."""
    watchers = {
        "kiosk-0001": await clients.connect("county-330803"),
        "kiosk-0005": await clients.connect("prov-35"),
    }
    assert await subscribed(watchers["kiosk-0001"], "kiosk/v1/33/3308/330803/#")
    assert await subscribed(watchers["kiosk-0005"], "kiosk/v1/35/#")
    sources = {name: await clients.connect(name) for name in watchers}
    # one connection per account: a second one with the same username (= client id) replaces the first
    opened = {**sources, "county-330803": watchers["kiosk-0001"], "prov-35": watchers["kiosk-0005"]}
    for name in ACCOUNTS:
        reader = opened.get(name) or await clients.connect(name)
        # a device it has no right to: kiosk-0005 (province 35) for everyone in 33, kiosk-0001 for the rest
        source = "kiosk-0001" if ACCOUNTS[name][1][0] == "35" else "kiosk-0005"
        for topic_filter in ("kiosk/v1/#", "#"):
            await cannot_read(
                reader, topic_filter, sources[source], f"{root(source)}/telemetry", watchers[source]
            )


# --- the real firmware behind the ACL ------------------------------------------------------------


async def test_the_appliance_and_a_county_requester_work_behind_the_acl(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The appliance's real topic set (subscriptions, Will, state, birth, replies) fits the ACL."""
    from appliance.daemon import Appliance

    bus = Mosquitto(workdir=tmp_path / "bus", name="bus", persistent=False)
    with bus:
        cfg = write_config(
            tmp_path / "kiosk.toml", bus_port=bus.port, fleet_port=broker.port, data_dir=tmp_path / "data"
        )
        text = cfg.read_text().replace(
            "[fleet]\n", f'[fleet]\nusername = "kiosk-0001"\npassword = "{password("kiosk-0001")}"\n'
        )
        cfg.write_text(text)
        app = Appliance(cfg)
        await app.start()
        county = FleetRequester(
            "127.0.0.1",
            broker.port,
            client_id="county-330803",
            username="county-330803",
            password=password("county-330803"),
            reply_topic=reply_prefix("county-330803") + "/ops",
        )
        try:
            await asyncio.wait_for(app.fleet.first_online.wait(), 10)
            await county.start()
            reply = await county.call(root("kiosk-0001"), "ping", timeout_s=5)
            assert reply["status"] == 200 and reply["pong"] is True
        finally:
            await county.stop()
            await app.stop()


# --- the generator -------------------------------------------------------------------------------


async def test_the_tls_listener_variant_starts_and_authenticates(tmp_path: Path) -> None:
    """--cafile/--certfile/--keyfile: mosquitto starts with the TLS listener and a device connects over it."""
    cert, key = tmp_path / "broker.crt", tmp_path / "broker.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=20,
    )  # fmt: skip
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1", "--cafile", str(cert), "--certfile", str(cert))
    rc, out = generate(tmp_path, inventory_text(), *args, "--keyfile", str(key))
    assert rc == 0
    conf = (out / "mosquitto.conf").read_text()
    with Mosquitto(port=port, config=conf, persistent=False, workdir=tmp_path / "broker", name="tls"):
        conn = MqttConnection(
            host="127.0.0.1", port=port, client_id="kiosk-0001", username="kiosk-0001",
            password=password("kiosk-0001"), tls=Tls(ca=str(cert)), name="kiosk-0001",
        )  # fmt: skip
        await conn.connect(timeout_s=5)
        assert await publish(conn, f"{root('kiosk-0001')}/telemetry", b"{}")
        assert not await publish(conn, f"{root('kiosk-0002')}/telemetry", b"{}")
        await conn.close()


def test_cert_and_key_go_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = generate(tmp_path, inventory_text(), "--certfile", "/etc/broker.crt")
    assert rc == 2 and "--certfile and --keyfile go together" in capsys.readouterr().err
    assert not out.exists()


def test_files_are_mode_0600_and_name_each_other(tmp_path: Path) -> None:
    rc, out = generate(tmp_path, inventory_text(), "--port", "8883", "--install-dir", "/etc/mosquitto/kiosk")
    assert rc == 0
    for name in ("mosquitto.conf", "acl_file", "password_file"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    conf = (out / "mosquitto.conf").read_text()
    assert "password_file /etc/mosquitto/kiosk/password_file\n" in conf
    assert "acl_file /etc/mosquitto/kiosk/acl_file\n" in conf
    lines = conf.splitlines()
    # use_username_as_clientid is per listener: it must come after the listener line to apply
    assert lines.index("listener 8883") < lines.index("use_username_as_clientid true")
    for required in ("per_listener_settings false", "allow_anonymous false"):
        assert lines.index(required) < lines.index("listener 8883")
    assert not [line for line in (out / "acl_file").read_text().splitlines() if line.startswith("pattern")]


def test_the_password_hash_is_mosquitto_passwds_own_format(tmp_path: Path) -> None:
    """Hash a password with the salt mosquitto_passwd chose: the same line comes out."""
    pw = tmp_path / "pw"
    pw.write_text("alice:Correct-horse-7\n")
    subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, timeout=10)
    theirs = pw.read_text().strip().split(":", 1)[1]
    salt = base64.b64decode(theirs.split("$")[3])
    assert fleet_acl.hash_password("Correct-horse-7", salt) == theirs


def test_a_bad_inventory_leaves_existing_files_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = generate(tmp_path, inventory_text())
    assert rc == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, _ = generate(
        tmp_path, inventory_text() + "device,kiosk-0001,33,3308,330803,330803100,330803100201,dup-Secret-pw\n"
    )
    assert rc == 2
    assert "duplicate id 'kiosk-0001'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


GOOD_DEVICE = "device,kiosk-0001,33,3308,330803,330803100,330803100201,Secret-password-1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"", "line 1: the file is empty"),
        (b"\n\n", "line 1: the file is empty"),
        (HEADER.encode() + b"\n", "no devices or operators"),
        (
            b"kind,id,province,city,county,township,village\n" + GOOD_DEVICE.encode(),
            "line 1: the header must be",
        ),
        (
            b"Kind,Id,Province,City,County,Township,Village,Password\n" + GOOD_DEVICE.encode(),
            "line 1: the header must be",
        ),
        (f"{HEADER}\n{GOOD_DEVICE},extra\n".encode(), "line 2: 9 columns, expected 8"),
        (f"{HEADER}\ndevice,kiosk-0001,33\n".encode(), "line 2: 3 columns, expected 8"),
        (
            f"{HEADER}\n{GOOD_DEVICE}\n\n{GOOD_DEVICE}\n".encode(),
            "line 4, column 2 (id): duplicate id 'kiosk-0001' (first on line 2)",
        ),
        (
            f"{HEADER}\n{GOOD_DEVICE}\noperator,kiosk-0001,33,,,,,Secret-password-2\n".encode(),
            "line 3, column 2 (id): duplicate id",
        ),
        (f"{HEADER}\nrobot,r-1,33,3308,330803,,,Secret-password-1\n".encode(), "line 2, column 1 (kind)"),
        (
            f"{HEADER}\ndevice,kiosk/0001,33,3308,330803,330803100,330803100201,Secret-password-1\n".encode(),
            "line 2, column 2 (id)",
        ),
        (
            f"{HEADER}\ndevice,kiosk+#,33,3308,330803,330803100,330803100201,Secret-password-1\n".encode(),
            "column 2 (id)",
        ),
        (
            f"{HEADER}\ndevice,{'k' * 65},33,3308,330803,330803100,330803100201,Secret-password-1\n".encode(),
            "column 2 (id)",
        ),
        (
            f"{HEADER}\ndevice,kiosk-1,3,3308,330803,330803100,330803100201,Secret-password-1\n".encode(),
            "line 2, column 3 (province): province code '3' must be 2 digits",
        ),
        (
            f"{HEADER}\ndevice,kiosk-1,33,3408,340803,340803100,340803100201,Secret-password-1\n".encode(),
            "column 4 (city): city code '3408' must start with its parent's code '33'",
        ),
        (
            f"{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,33080310020X,Secret-password-1\n".encode(),
            "column 7 (village)",
        ),
        (
            "kind,id,province,city,county,township,village,password\ndevice,k-1,３３,3308,330803,330803100,330803100201,Secret-password-1\n".encode(),
            "column 3 (province)",
        ),
        (
            f"{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,,Secret-password-1\n".encode(),
            "line 2, column 7 (village): a device needs all five region codes",
        ),
        (
            f"{HEADER}\noperator,op-1,33,,330803,,,Secret-password-1\n".encode(),
            "line 2, column 4 (city): city code is empty but a lower level is given",
        ),
        (
            f"{HEADER}\noperator,nation,,,,,,Secret-password-1\n".encode(),
            "column 3 (province): an operator needs at least its province",
        ),
        (
            f'{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,330803100201,"Secret\npassword-1"\n'.encode(),
            "line 2, column 8 (password): the password contains a line break",
        ),
        (
            f"{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,330803100201,Secret:password-1\n".encode(),
            "column 8 (password): the password contains ':'",
        ),
        (
            f"{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,330803100201,short\n".encode(),
            "column 8 (password): the password has 5 characters",
        ),
        (
            f"{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,330803100201,Secret-password-1 \n".encode(),
            "white space",
        ),
        (
            f"{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,330803100201,Secret\x00password-1\n".encode(),
            "line 2",
        ),
        (
            f"{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,330803100201,Secret\u200bpassword-1\n".encode(),
            "invisible",
        ),
        (f'{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,330803100201,"Secret-pass\n'.encode(), "line 2"),
        (
            f"{HEADER}\ndevice,kiosk-1,33,3308,330803,330803100,330803100201,密码密码密码密码密码密码\n".encode(
                "gbk"
            ),
            "line 2: not UTF-8",
        ),
        # the BOM is only skipped at the very start; here it sits inside the first field of a row
        (f"{HEADER}\n\ufeff{GOOD_DEVICE}\n".encode(), "line 2, column 1 (kind)"),
    ],
)
def test_hostile_inventories_are_refused_with_the_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: bytes, expected: str
) -> None:
    rc, out = generate(tmp_path, text)
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err, err
    assert not out.exists()


def test_a_utf8_bom_from_a_spreadsheet_is_accepted(tmp_path: Path) -> None:
    rc, out = generate(tmp_path, b"\xef\xbb\xbf" + inventory_text().encode())
    assert rc == 0
    assert (out / "password_file").read_text().count("\n") == len(ACCOUNTS)


def test_a_10_mb_inventory_is_refused_quickly_without_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = GOOD_DEVICE.encode() + b"\n"
    rc, out = generate(tmp_path, HEADER.encode() + b"\n" + row * (10 * 1024 * 1024 // len(row)))
    assert rc == 2
    assert "more than 8,388,608 bytes" in capsys.readouterr().err
    assert not out.exists()


def test_every_problem_is_listed_not_only_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [HEADER, "device,a b,3,3308,330803,330803100,330803100201,short"]
    rc, _ = generate(tmp_path, "\n".join(rows) + "\n")
    err = capsys.readouterr().err
    assert rc == 2
    for fragment in ("column 2 (id)", "column 3 (province)", "column 8 (password)"):
        assert fragment in err


# --- any inventory: a config mosquitto starts with, or exit 2 with a message --------------------

CODES = ("33", "3308", "330803", "330803100", "330803100201")
ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,16}\Z")
passwords = st.from_regex(r"\A[A-Za-z0-9!#%+./=?@_-]{12,24}\Z")
valid_row = st.one_of(
    st.tuples(st.just("device"), ids, st.just(5), passwords),
    st.tuples(st.just("operator"), ids, st.integers(1, 5), passwords),
).map(lambda t: [t[0], t[1], *CODES[: t[2]], *[""] * (5 - t[2]), t[3]])
# a valid row with one field replaced by anything (or a row of any shape)
hostile_row = st.one_of(
    st.tuples(valid_row, st.integers(0, 7), st.text(max_size=10)).map(
        lambda t: [*t[0][: t[1]], t[2], *t[0][t[1] + 1 :]]
    ),
    st.lists(st.one_of(st.sampled_from(["", "device", "operator", *CODES]), st.text(max_size=8)), max_size=9),
)
row = st.one_of(valid_row, valid_row, valid_row, hostile_row)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row, max_size=5), bom=st.booleans())
def test_any_inventory_gives_a_config_mosquitto_starts_with_or_exit_2(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], bom: bool
) -> None:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER.split(","))
    writer.writerows(rows)
    data = (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8", "surrogatepass")
    tmp = tmp_path_factory.mktemp("hyp")
    port = free_port()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc, out = generate(tmp, data, "--port", str(port), "--bind", "127.0.0.1")
    event(f"exit {rc}")
    if rc == 2:
        assert err.getvalue().strip(), "exit 2 without a message"
        assert not out.exists()
        return
    assert rc == 0
    conf = (out / "mosquitto.conf").read_text()
    with Mosquitto(port=port, config=conf, persistent=False, workdir=tmp / "broker", name="hyp") as b:
        assert b.proc is not None and b.proc.poll() is None
    assert os.path.getsize(out / "password_file") > 0
