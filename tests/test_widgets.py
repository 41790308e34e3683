"""The JupyterLab widgets, driven by their buttons' click handlers, against the session's real broker."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator

import pytest

from kafka_crud.connection import Kafka
from kafka_crud.records import LogRecord
from kafka_crud.server import serve_in_thread
from kafka_crud.service import UserService
from kafka_crud.widgets import CrudPanel, LogView, crud_panel

pytestmark = pytest.mark.broker


@pytest.fixture
def service(kafka: Kafka, topic_factory: Callable[..., str]) -> Iterator[UserService]:
    svc = UserService(kafka, topic=topic_factory("widgets", partitions=1), partitions=1).start()
    try:
        svc.wait_ready(30)
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def panel(service: UserService) -> CrudPanel:
    return crud_panel(service)


def _fill(panel: CrudPanel, email: str, name: str = "") -> None:
    panel.editor.email.value = email
    panel.editor.name.value = name


def _log(service: UserService) -> list[LogRecord]:
    return service.kafka.read_log(service.topic)


def test_create_writes_the_user_and_both_views_show_it(service: UserService, panel: CrudPanel) -> None:
    assert "no users" in panel.state_view.value
    assert "no records" in panel.log_view.value
    _fill(panel, "ada@example.com", "Ada Lovelace")

    panel.editor.create_button.click()

    [record] = _log(service)
    assert record.key == b"ada@example.com"
    assert json.loads(record.value or b"") == {"email": "ada@example.com", "name": "Ada Lovelace"}
    assert "Created ada@example.com: record at partition 0, offset 0" in panel.editor.status.value
    assert "Ada Lovelace" in panel.state_view.value
    assert "1 user(s)" in panel.state_view.value
    assert "ada@example.com" in panel.log_view.value
    assert "1 record(s)" in panel.log_view.value


def test_update_writes_a_new_version_and_the_log_shows_the_old_one_superseded(
    service: UserService, panel: CrudPanel
) -> None:
    _fill(panel, "ada@example.com", "Ada")
    panel.editor.create_button.click()
    panel.editor.name.value = "Ada Lovelace"

    panel.editor.update_button.click()

    assert [json.loads(r.value or b"")["name"] for r in _log(service)] == ["Ada", "Ada Lovelace"]
    assert "Updated ada@example.com: new record at partition 0, offset 1" in panel.editor.status.value
    assert "Ada Lovelace" in panel.state_view.value
    assert ">○ superseded<" in panel.log_view.value  # a symbol and a word, never colour alone
    assert "2 record(s)" in panel.log_view.value


def test_delete_writes_a_tombstone_and_the_user_leaves_the_state(service: UserService, panel: CrudPanel) -> None:
    _fill(panel, "ada@example.com", "Ada")
    panel.editor.create_button.click()

    panel.editor.delete_button.click()

    last = _log(service)[-1]
    assert (last.offset, last.key, last.value) == (1, b"ada@example.com", None)
    assert "Deleted ada@example.com: tombstone at partition 0, offset 1" in panel.editor.status.value
    assert "no users" in panel.state_view.value
    assert ">tombstone<" in panel.log_view.value


def test_create_of_an_existing_user_writes_nothing_and_says_to_update(service: UserService, panel: CrudPanel) -> None:
    _fill(panel, "ada@example.com", "Ada")
    panel.editor.create_button.click()
    panel.editor.name.value = "Someone else"

    panel.editor.create_button.click()

    assert len(_log(service)) == 1
    assert "already exists: nothing written. Use Update" in panel.editor.status.value


def test_update_and_delete_of_a_missing_user_write_nothing(service: UserService, panel: CrudPanel) -> None:
    _fill(panel, "nobody@example.com", "Nobody")

    panel.editor.update_button.click()
    assert "No user nobody@example.com: nothing written. Use Create" in panel.editor.status.value
    panel.editor.delete_button.click()
    assert "No user nobody@example.com: nothing written." in panel.editor.status.value

    assert _log(service) == []


def test_an_invalid_email_shows_the_reason_and_writes_nothing(service: UserService, panel: CrudPanel) -> None:
    _fill(panel, "not an email", "X")

    panel.editor.create_button.click()

    assert "must not contain spaces" in panel.editor.status.value
    assert _log(service) == []


def test_widgets_carry_the_css_classes_a_browser_test_looks_for(panel: CrudPanel) -> None:
    editor = panel.editor
    classes = {
        "kafka-crud-email": editor.email, "kafka-crud-name": editor.name,
        "kafka-crud-create": editor.create_button, "kafka-crud-update": editor.update_button,
        "kafka-crud-delete": editor.delete_button, "kafka-crud-status": editor.status,
        "kafka-crud-state": panel.state_view, "kafka-crud-log": panel.log_view,
        "kafka-crud-refresh": panel.refresh_button,
    }
    for css, widget in classes.items():
        assert css in widget._dom_classes
    assert [editor.email.description, editor.name.description] == ["Email", "Name"]
    assert [b.description for b in (editor.create_button, editor.update_button, editor.delete_button)] == [
        "Create", "Update", "Delete",
    ]


def test_log_view_shows_the_newest_records_when_there_are_many(service: UserService) -> None:
    panel = crud_panel(service, max_rows=2)
    for name in ("A", "B", "C"):
        _fill(panel, "ada@example.com", name)
        (panel.editor.update_button if name != "A" else panel.editor.create_button).click()

    view = LogView(service.kafka, service.topic, max_rows=2)

    assert "the 2 newest of 3 records" in view.value
    text = html.unescape(view.value)
    assert '"name":"C"' in text
    assert '"name":"A"' not in text


def test_names_are_shown_as_text_not_html(service: UserService, panel: CrudPanel) -> None:
    _fill(panel, "ada@example.com", "<b>Ada</b>")

    panel.editor.create_button.click()

    for view in (panel.state_view, panel.log_view):
        assert "<b>Ada</b>" not in view.value
        assert "&lt;b&gt;Ada&lt;/b&gt;" in view.value


def test_panel_works_on_a_running_http_endpoint_connected_as_the_environment_says(
    kafka: Kafka, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("widgets", partitions=1)
    with serve_in_thread(topic=topic) as handle:  # no connection given: KAFKA_BOOTSTRAP_SERVERS, as in a notebook
        assert handle.service.kafka.bootstrap_servers == kafka.bootstrap_servers
        panel = crud_panel(handle)
        _fill(panel, "ada@example.com", "Ada")
        panel.editor.create_button.click()

    assert [r.key for r in kafka.read_log(topic)] == [b"ada@example.com"]
