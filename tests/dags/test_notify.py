"""Notification channels: one class each, made from the config by the CHANNELS table (delivery is tested end to end)."""

from __future__ import annotations

import pytest

from orchestration.notify import EmailChannel, WebhookChannel, channels
from pipeline.config import load_config
from tests.conftest import write_config


@pytest.mark.parametrize(
    "notifications, expected",
    [
        pytest.param({}, [], id="none-by-default"),
        pytest.param({"email_to": ["a@example.com"]}, [EmailChannel("smtp_default", ["a@example.com"])], id="email"),
        pytest.param({"webhook_conn_id": "hook"}, [WebhookChannel("hook")], id="webhook"),
        pytest.param({"email_to": ["a@example.com"], "smtp_conn_id": "smtp", "webhook_conn_id": "hook"},
                     [EmailChannel("smtp", ["a@example.com"]), WebhookChannel("hook")], id="both"),
    ],
)
def test_the_config_names_the_channels(tmp_path, notifications, expected):
    config = load_config(write_config(tmp_path, notifications=notifications), environ={})
    assert channels(config) == expected
