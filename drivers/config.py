"""``[drivers.*]``: which peripherals exist, their backend and port. Absent means not fitted."""

from __future__ import annotations

from appliance.configbase import Strict


class DriversConfig(Strict):
    pass
