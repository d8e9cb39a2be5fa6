"""docs/mqtt.md lists exactly the commands a kiosk registers, rendered from their CommandSpecs."""

from __future__ import annotations

from sim.commands_doc import documented, registered_commands, render


async def test_the_documented_command_table_is_the_registered_one():
    specs = await registered_commands()
    names = {s.name for s in specs}
    assert {"ping", "switcher.route", "gpio.set", "camera.snapshot", "session.document.get"} <= names
    assert {s.name for s in specs if s.personal} == {
        "camera.snapshot",
        "doccam.capture",
        "session.document.get",
        "session.identity.get",
    }
    assert documented() == render(specs), "run: .venv/bin/python -m sim.commands_doc --write"


def test_a_command_must_say_whether_its_reply_is_personal():
    import pytest

    from kiosk_core.commands import CommandSpec, NoParams

    async def handler(params):
        return {}

    with pytest.raises(TypeError, match="personal"):
        CommandSpec(name="x.y", summary="", params=NoParams, handler=handler, process="appliance")  # type: ignore[call-arg]
