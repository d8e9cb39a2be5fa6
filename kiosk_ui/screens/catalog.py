"""``catalog``: the departments, then the items of the chosen one (and the way to progress/appointments)."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import Entity, KioskScreen, as_dict, as_list
from kiosk_ui.widgets.plain import Plain


class CatalogScreen(KioskScreen):
    SCREEN = "catalog"
    TITLE_KEY = "catalog.title"
    ENTITY_ACTIONS = frozenset({"select_department", "select_item"})

    def title_text(self) -> str:
        department = as_dict(self.view.data.get("department"))
        if department:
            return self.view.pick(department.get("name"), self.t("catalog.title"))
        return self.t("catalog.title")

    def body(self) -> ComposeResult:
        data = self.view.data
        entities: list[Entity] = []
        if as_dict(data.get("department")):
            yield Plain(self.t("catalog.choose_item"), classes="message")
            if "select_item" in self.view.actions:
                for item in as_list(data.get("items")):
                    item = as_dict(item)
                    label = self.view.pick(item.get("name"), str(item.get("id", "?")))
                    if isinstance(item.get("minutes"), int):
                        label += "  " + self.t("catalog.minutes", minutes=item["minutes"])
                    entities.append(Entity(label, "select_item", {"item_id": item.get("id")}))
        else:
            yield Plain(self.t("catalog.choose_department"), classes="message")
            if "select_department" in self.view.actions:
                for dept in as_list(data.get("departments")):
                    dept = as_dict(dept)
                    label = self.view.pick(dept.get("name"), str(dept.get("id", "?")))
                    if isinstance(dept.get("item_count"), int):
                        label += "  " + self.t("catalog.item_count", count=dept["item_count"])
                    entities.append(Entity(label, "select_department", {"department_id": dept.get("id")}))
        yield from self.choice_area(entities)
