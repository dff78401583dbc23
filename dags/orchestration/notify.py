"""Notifications through Airflow's notifier mechanism: e-mail through an SMTP Connection, JSON to a webhook.

Each task that can mark an event gets a :class:`PipelineNotifier` as a callback; the
notifier reads the cycle's records and sends only when the event happened (a drift
check that found nothing sends nothing). Nothing is sent unless the config names a
channel. Message texts carry values from the data (column and category names), so
they are escaped for HTML and never passed through Jinja.
"""

from __future__ import annotations

import html
import json
import logging
import urllib.request

from airflow.sdk import BaseNotifier

log = logging.getLogger("pipeline.dags")


class PipelineNotifier(BaseNotifier):
    """Send one pipeline ``event`` (a ``notifications.events`` name) for the task whose callback this is."""

    def __init__(self, event: str, kind: str = "retrain"):
        super().__init__()
        self.event = event
        self.kind = kind

    def notify(self, context) -> None:
        from orchestration import runtime

        config = runtime.task_config(context["params"])
        channels = config.notifications
        if self.event not in channels.events or not (channels.email_to or channels.webhook_conn_id):
            return
        message = self._message(context, config)
        if message is None:
            return
        if channels.email_to:
            send_email(channels.smtp_conn_id, channels.email_to, message)
        if channels.webhook_conn_id:
            post_webhook(channels.webhook_conn_id, message, config.model_name)

    def _message(self, context, config):
        from pipeline.review import Message, message

        ti = context["ti"]
        if self.event == "task_failed":
            error = context.get("exception")
            return Message(
                "task_failed",
                f"[{config.model_name}] task {ti.dag_id}.{ti.task_id} failed",
                f"Run {ti.run_id}, try {ti.try_number}\nLog: {task_url(ti)}\n\n{error or 'see the task log'}",
            )
        from pipeline.cycle import find_cycle

        cycle = find_cycle(config, ti.xcom_pull(task_ids="load")["cycle_id"], self.kind)
        link = required_actions_url() if self.event == "approval_waiting" else task_url(ti)
        return message(self.event, cycle, link=link)


def base_url() -> str:
    from airflow.sdk.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")


def required_actions_url() -> str:
    return f"{base_url()}/required_actions"


def task_url(ti) -> str:
    return f"{base_url()}/dags/{ti.dag_id}/runs/{ti.run_id}/tasks/{ti.task_id}"


def send_email(conn_id: str, to: list[str], message) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=conn_id) as smtp:
        smtp.send_email_smtp(
            to=to, subject=message.subject, html_content=f"<pre>{html.escape(message.text)}</pre>",
            from_email=smtp.from_email or "airflow-pipeline@localhost",
        )
    log.info("sent %s notification to %s", message.event, ", ".join(to))


def webhook_url(conn) -> str:
    """The Connection's host when it is a full URL, else built from schema (the scheme), host, port and extra path."""
    if conn.host and "://" in conn.host:
        return conn.host
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'https'}://{conn.host}{port}{conn.extra_dejson.get('path', '')}"


def post_webhook(conn_id: str, message, model_name: str) -> None:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    headers = {"Content-Type": "application/json"}
    if conn.password:
        headers["Authorization"] = f"Bearer {conn.password}"
    payload = {"event": message.event, "model": model_name, "subject": message.subject, "text": message.text}
    request = urllib.request.Request(webhook_url(conn), data=json.dumps(payload).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    log.info("posted %s notification to webhook %s", message.event, conn_id)
