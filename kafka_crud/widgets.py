"""Widgets for JupyterLab: edit users, and watch the state and the log change as you click.

    from kafka_crud.widgets import crud_panel
    crud_panel(service)          # service: a started UserService, or serve_in_thread()'s handle

Writes go through :class:`~kafka_crud.service.UserService`, which returns once Kafka has
acknowledged the record *and* the service's store has applied it: the state view, refreshed
right after, shows the change. The log view reads the topic itself (every record, superseded
ones and tombstones included), colour-coded, each status also a symbol and a word (● live,
○ superseded, ✝ tombstone).

Every widget a test or a browser needs to find has a fixed description and a CSS class:
``kafka-crud-email``, ``kafka-crud-name``, ``kafka-crud-create``, ``kafka-crud-update``,
``kafka-crud-delete``, ``kafka-crud-status``, ``kafka-crud-state``, ``kafka-crud-log``,
``kafka-crud-refresh``. Tests drive them by calling a button's ``click()``.

Needs ipywidgets (``pip install kafka-crud[lab]``).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import ipywidgets as widgets

from .connection import DEFAULT_TOPIC, Kafka, KafkaLike
from .errors import KafkaCrudError
from .records import Position, User
from .service import UserService
from .views import records_frame, style_log, users_frame

if TYPE_CHECKING:
    from .server import ServerHandle

__all__ = ["CrudPanel", "LogView", "StateView", "UserEditor", "crud_panel"]

log = logging.getLogger(__name__)


def _service(source: UserService | ServerHandle) -> UserService:
    service = getattr(source, "service", source)
    if not isinstance(service, UserService):
        raise TypeError(f"Expected a UserService or serve_in_thread()'s handle, not {type(source).__name__}")
    return service


def _where(position: Position) -> str:
    return f"partition {position.partition}, offset {position.offset}"


class UserEditor(widgets.VBox):
    """Email and name fields with Create, Update and Delete buttons, and a status line.

    Create writes a user that does not exist yet; Update writes a new version of one that does;
    Delete writes a tombstone. The status line says what was written where, or why nothing
    was. ``on_change`` callbacks run after every write.
    """

    def __init__(self, service: UserService | ServerHandle) -> None:
        self.service = _service(service)
        self.email = widgets.Text(description="Email", placeholder="ada@example.com")
        self.name = widgets.Text(description="Name", placeholder="Ada Lovelace")
        self.create_button = widgets.Button(description="Create", button_style="success", tooltip="Write a new user")
        self.update_button = widgets.Button(description="Update", button_style="info",
                                            tooltip="Write a new version of an existing user")
        self.delete_button = widgets.Button(description="Delete", button_style="danger",
                                            tooltip="Write a tombstone (a null value) for this email")
        self.status = widgets.HTML(value="")
        for widget, css in (
            (self.email, "kafka-crud-email"), (self.name, "kafka-crud-name"),
            (self.create_button, "kafka-crud-create"), (self.update_button, "kafka-crud-update"),
            (self.delete_button, "kafka-crud-delete"), (self.status, "kafka-crud-status"),
        ):
            widget.add_class(css)
        self.create_button.on_click(lambda _: self._run(self.create))
        self.update_button.on_click(lambda _: self._run(self.update))
        self.delete_button.on_click(lambda _: self._run(self.delete))
        self.last_position: Position | None = None
        """Where the last write landed."""
        self._listeners: list[Callable[[], None]] = []
        buttons = widgets.HBox([self.create_button, self.update_button, self.delete_button])
        super().__init__([self.email, self.name, buttons, self.status])

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every write."""
        self._listeners.append(callback)

    # -- actions (the buttons call these; so can a notebook) ------------------------------
    def create(self) -> str:
        user = User(self.email.value.strip(), self.name.value)
        if self.service.get(user.email) is not None:
            return f"{user.email} already exists: nothing written. Use Update to change it."
        stored, _ = self.service.put(user)
        return self._wrote(f"Created {user.email}: record at {_where(stored.position)}", stored.position)

    def update(self) -> str:
        user = User(self.email.value.strip(), self.name.value)
        if self.service.get(user.email) is None:
            return f"No user {user.email}: nothing written. Use Create to add it."
        stored, _ = self.service.put(user, if_match="*")
        return self._wrote(f"Updated {user.email}: new record at {_where(stored.position)}", stored.position)

    def delete(self) -> str:
        email = self.email.value.strip()
        position = self.service.delete(email)
        if position is None:
            return f"No user {email}: nothing written."
        return self._wrote(f"Deleted {email}: tombstone at {_where(position)}", position)

    def _wrote(self, message: str, position: Position) -> str:
        self.last_position = position
        return message

    def _run(self, action: Callable[[], str]) -> None:
        before = self.last_position
        try:
            message = action()
            self._show(message, error=False)
        except KafkaCrudError as exc:
            log.info("The editor's write failed: %s", exc)
            self._show(str(exc), error=True)
        if self.last_position != before:
            for callback in self._listeners:
                callback()

    def _show(self, message: str, *, error: bool) -> None:
        colour = "#842029" if error else "#0f5132"
        self.status.value = f'<span style="color: {colour}">{html.escape(message)}</span>'


class StateView(widgets.HTML):
    """The users the service holds now: email, name, and where each one's latest record is."""

    def __init__(self, service: UserService | ServerHandle) -> None:
        self.service = _service(service)
        super().__init__(value="")
        self.add_class("kafka-crud-state")
        self.refresh()

    def refresh(self) -> None:
        """Show the service's users as they are now."""
        try:
            users = self.service.users()
        except KafkaCrudError as exc:
            self.value = f"<b>State</b><br><i>{html.escape(str(exc))}</i>"
            return
        table = users_frame(users).to_html(index=False, border=0) if users else "<i>no users</i>"
        self.value = f"<b>State</b>: {len(users)} user(s) in the service's store<br>{table}"


class LogView(widgets.HTML):
    """Every record in the topic, by status: ● live (blue), ○ superseded (grey), ✝ tombstone (orange).

    With more than ``max_rows`` records, the ``max_rows`` newest (by timestamp) are shown, in
    partition and offset order.
    """

    def __init__(self, kafka: KafkaLike = None, topic: str = DEFAULT_TOPIC, *, max_rows: int = 30) -> None:
        self.kafka = Kafka.of(kafka)
        self.topic = topic
        self.max_rows = max_rows
        super().__init__(value="")
        self.add_class("kafka-crud-log")
        self.refresh()

    def refresh(self) -> None:
        """Read the topic again and show it."""
        try:
            records = self.kafka.read_log(self.topic)
        except KafkaCrudError as exc:
            self.value = f"<b>Log</b><br><i>{html.escape(str(exc))}</i>"
            return
        frame = records_frame(records, timestamps=True)
        total = len(frame)
        if total > self.max_rows:
            frame = frame.nlargest(self.max_rows, "timestamp").sort_values(["partition", "offset"])
        shown = frame.drop(columns=["timestamp"])
        what = f"the {len(frame)} newest of {total} records" if total > len(frame) else f"{total} record(s)"
        heading = f"<b>Log</b> of topic {html.escape(self.topic)}: {what}"
        table = style_log(shown).to_html() if total else "<i>no records</i>"
        self.value = f"{heading}<br>{table}"


class CrudPanel(widgets.VBox):
    """A :class:`UserEditor` above a :class:`StateView` and a :class:`LogView`; both refresh after each write."""

    def __init__(self, service: UserService | ServerHandle, *, max_rows: int = 30) -> None:
        svc = _service(service)
        self.editor = UserEditor(svc)
        # Not .log: every widget has a .log trait (its logger).
        self.state_view = StateView(svc)
        self.log_view = LogView(svc.kafka, svc.topic, max_rows=max_rows)
        self.refresh_button = widgets.Button(description="Refresh", tooltip="Read the state and the log again")
        self.refresh_button.add_class("kafka-crud-refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.editor.on_change(self.refresh)
        super().__init__([self.editor, self.refresh_button, self.state_view, self.log_view])

    def refresh(self) -> None:
        """Refresh the state and the log views."""
        self.state_view.refresh()
        self.log_view.refresh()


def crud_panel(service: UserService | ServerHandle, *, max_rows: int = 30) -> CrudPanel:
    """The editor with live views of the state and of the log (see :class:`CrudPanel`)."""
    return CrudPanel(service, max_rows=max_rows)
