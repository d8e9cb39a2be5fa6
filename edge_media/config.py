"""``[media]``: sources, encoders, recording and live push of the kiosk-media process."""

from __future__ import annotations

from appliance.configbase import Strict


class MediaConfig(Strict):
    pass
