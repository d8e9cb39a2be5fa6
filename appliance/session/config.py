"""``[session]``: the service session (catalog, idle timeout, technician PIN)."""

from __future__ import annotations

from appliance.configbase import Strict


class SessionConfig(Strict):
    pass
