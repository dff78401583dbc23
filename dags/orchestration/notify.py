"""Notifications through Airflow's notifier mechanism, to the channels the config names.

Each task that can mark an event gets a :class:`PipelineNotifier` as a callback; the
notifier reads the cycle's record and sends only when the event happened (a drift check
that found nothing sends nothing). A channel is one small class with ``send``, made from
the config by one entry of ``CHANNELS``: e-mail through an SMTP Connection and JSON to a
webhook today; a Slack or Teams channel would be one more. Nothing is sent unless the
config names a channel. Message texts carry values from the data (column and category
names), so they are escaped for HTML and never passed through Jinja.
"""

from __future__ import annotations

import html
import json
import logging
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from pipeline.config import Config, Notifications
    from pipeline.review import Message

log = logging.getLogger("pipeline.dags")


class Channel(Protocol):
    def send(self, message: Message, model_name: str) -> None: ...


@dataclass(frozen=True)
class EmailChannel:
    conn_id: str
    to: list[str]

    @classmethod
    def of(cls, settings: Notifications) -> EmailChannel | None:
        return cls(settings.smtp_conn_id, settings.email_to) if settings.email_to else None

    def send(self, message: Message, model_name: str) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=self.conn_id) as smtp:
            smtp.send_email_smtp(
                to=self.to, subject=message.subject, html_content=f"<pre>{html.escape(message.text)}</pre>",
                from_email=smtp.from_email or "airflow-pipeline@localhost",
            )
        log.info("sent %s notification to %s", message.event, ", ".join(self.to))


@dataclass(frozen=True)
class WebhookChannel:
    conn_id: str

    @classmethod
    def of(cls, settings: Notifications) -> WebhookChannel | None:
        return cls(settings.webhook_conn_id) if settings.webhook_conn_id else None

    def send(self, message: Message, model_name: str) -> None:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(self.conn_id)
        headers = {"Content-Type": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        payload = {"event": message.event, "model": model_name, "subject": message.subject, "text": message.text}
        request = urllib.request.Request(webhook_url(conn), data=json.dumps(payload).encode(), headers=headers,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        log.info("posted %s notification to webhook %s", message.event, self.conn_id)


CHANNELS: tuple[Callable[[Notifications], Channel | None], ...] = (EmailChannel.of, WebhookChannel.of)


def channels(config: Config) -> list[Channel]:
    """The channels the config names, in CHANNELS' order."""
    return [channel for make in CHANNELS if (channel := make(config.notifications)) is not None]


class PipelineNotifier(BaseNotifier):
    """Send one pipeline ``event`` (a ``notifications.events`` name) for the task whose callback this is."""

    def __init__(self, event: str, kind: str = "retrain"):
        super().__init__()
        self.event = event
        self.kind = kind

    def notify(self, context) -> None:
        from orchestration import runtime

        config = runtime.task_config(context["params"])
        targets = channels(config)
        if self.event not in config.notifications.events or not targets:
            return
        message = self._message(context, config)
        if message is None:
            return
        for channel in targets:
            channel.send(message, config.model_name)

    def _message(self, context, config: Config) -> Message | None:
        from orchestration import runtime
        from pipeline.record import CycleOutcome
        from pipeline.review import Message, message

        ti = context["ti"]
        if self.event == "task_failed":
            error = context.get("exception")
            return Message(
                "task_failed",
                f"[{config.model_name}] task {ti.dag_id}.{ti.task_id} failed",
                f"Run {ti.run_id}, try {ti.try_number}\nLog: {task_url(ti)}\n\n{error or 'see the task log'}",
            )
        outcome = CycleOutcome.read(runtime.recorded_cycle(context, self.kind))
        link = required_actions_url() if self.event == "approval_waiting" else task_url(ti)
        return message(self.event, outcome, link=link)


def base_url() -> str:
    from airflow.sdk.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")


def required_actions_url() -> str:
    return f"{base_url()}/required_actions"


def task_url(ti) -> str:
    return f"{base_url()}/dags/{ti.dag_id}/runs/{ti.run_id}/tasks/{ti.task_id}"


def webhook_url(conn) -> str:
    """The Connection's host when it is a full URL, else built from schema (the scheme), host, port and extra path."""
    if conn.host and "://" in conn.host:
        return conn.host
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'https'}://{conn.host}{port}{conn.extra_dejson.get('path', '')}"
