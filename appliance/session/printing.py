"""The printed receipt: what goes on paper after an approval or a booking, and what the screen says
about it.

The receipt carries the site, the item (or the department of an appointment), the application or
booking number, the date, the clerk's department, the progress QR (the same text as the screen's QR)
and the villager's name masked to its first character ("张*"). Nothing else of the identity: no ID
number, full name, address or birth date is ever put in a ``PrintReceipt``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from appliance.session.effects import PrintReceipt
from appliance.session.state import Session

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine

#: what the screens show: printing (on its way), printed, failed (get it at the window / scan)
PRINT_STATES = ("printing", "printed", "failed")


def mask_name(name: str | None) -> str:
    """The first character and one ``*`` per further character, at most three: 张三 -> 张*, 欧阳娜娜 -> 欧***."""
    name = (name or "").strip()
    if not name:
        return "*"
    return name[0] + "*" * min(3, max(1, len(name) - 1))


def _zh(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("zh-CN") or value.get("en") or "")
    return str(value or "")


def _date(m: SessionMachine) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(m.clock.time()))


def approved_receipt(m: SessionMachine, s: Session) -> PrintReceipt:
    o = s.outcome or {}
    clerk = (s.call.clerk if s.call else None) or {}
    dep = clerk.get("department") or {}
    receipt = {
        "title": "办事回执",
        "site": m.site or "便民服务站",
        "item": _zh(s.item.name.as_dict()) if s.item else "",
        "number_label": "申请编号",
        "number": str(o.get("application_no") or ""),
        "date": _date(m),
        "department": _zh(dep.get("name")),
        "name_masked": mask_name(s.name),
        "qr_url": str(o.get("qr_text") or o.get("application_no") or ""),
        "extra": [],
    }
    s.printing = {"job": "receipt", "status": "printing", "code": None}
    return PrintReceipt(s.id, "receipt", receipt)


def booking_receipt(m: SessionMachine, s: Session) -> PrintReceipt:
    booking = s.booking or {}
    slot = booking.get("slot") or {}
    start, end = str(slot.get("start", "")), str(slot.get("end", ""))
    when = f"{start[:10]} {start[11:16]}-{end[11:16]}" if len(start) >= 16 and len(end) >= 16 else start
    dep = _zh(s.department.name.as_dict()) if s.department else ""
    receipt = {
        "title": "预约凭条",
        "site": m.site or "便民服务站",
        "item": f"{dep}预约" if dep else "预约",
        "number_label": "预约号",
        "number": str(booking.get("booking_no") or ""),
        "date": _date(m),
        "department": dep,
        "name_masked": mask_name(s.name),
        "qr_url": str(booking.get("qr_text") or booking.get("booking_no") or ""),
        "extra": [["预约时间", when[:64]]] if when else [],
    }
    s.printing = {"job": "appointment", "status": "printing", "code": None}
    return PrintReceipt(s.id, "appointment", receipt)


def print_finished(m: SessionMachine, session_id: str, job: str, status: str, code: str | None) -> bool:
    """The printer answered a ``PrintReceipt``; True when the screen changes. Stale answers (another
    session, another job) are ignored."""
    s = m.session
    if s is None or s.id != session_id or s.printing is None or s.printing.get("job") != job:
        return False
    if status not in PRINT_STATES:
        status = "failed"
    new = {"job": job, "status": status, "code": code}
    if new == s.printing:
        return False
    s.printing = new
    return True


def print_view(s: Session, job: str) -> dict[str, Any] | None:
    """``{status, code}`` of this job's print for the screen, or None (no printer, nothing printed)."""
    p = s.printing
    if p is None or p.get("job") != job:
        return None
    return {"status": p["status"], "code": p.get("code")}
