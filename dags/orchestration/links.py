"""Extra links from a task instance to its cycle's page in the review UI (plugins/pipeline_review.py).

The worker computes the link when the task ends, whatever its state (a stopped validation
is exactly when a reviewer wants the report), and Airflow stores it in XCom; the UI shows
it as a button in the task instance view.
"""

from __future__ import annotations

from typing import Literal

from airflow.sdk import BaseOperatorLink
from airflow.sdk.definitions.xcom_arg import XComArg

from orchestration import runtime

REVIEW_PREFIX = "/pipeline"
Page = Literal["drift", "validation"]
LABELS: dict[Page, str] = {"drift": "Drift report", "validation": "Validation report"}


class CycleReportLink(BaseOperatorLink):
    def __init__(self, page: Page, kind: str):
        self.page = page
        self.kind = kind

    @property
    def name(self) -> str:
        return LABELS[self.page]

    @property
    def xcom_key(self) -> str:
        return f"_link_{self.page}_report"

    def get_link(self, operator, *, ti_key) -> str:
        cycle_id = runtime.cycle_id_for(runtime.parse_time_config(), self.kind, ti_key.run_id)
        return f"{REVIEW_PREFIX}/{self.page}/{cycle_id}"


def with_report_link(output: XComArg, page: Page, kind: str) -> XComArg:
    """A TaskFlow task takes no `operator_extra_links` argument, so the link goes on its operator."""
    output.operator.operator_extra_links = [CycleReportLink(page, kind)]
    return output
