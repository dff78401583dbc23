"""The approval step: Airflow's human-in-the-loop branch, showing the reviewer the cycle's evidence.

Approve follows to ``promote``; Reject — or no answer before the timeout, whose
default is Reject — follows to ``record_rejection``. The decision (option, user,
comment, whether it timed out) is pushed to XCom as ``decision`` for both.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param

from orchestration.stages import APPROVE, REJECT

# Optional: a string without "null" in its type is a required field in Airflow's form, which blocks both buttons.
REVIEW_FORM = {"comment": Param(None, type=["null", "string"], maxLength=2000, title="Comment",
                                description="Optional; recorded in the promotion log.")}


class ReviewOperator(HITLBranchOperator):
    """Asks a person to approve the registered challenger; the subject and body are built from the cycle's records.

    Pass ``params=REVIEW_FORM`` (the reviewer's comment field): Airflow merges a task's params with the DAG's.
    """

    def __init__(self, *, timeout_hours: float, approvers: list[str], **kwargs):
        super().__init__(
            subject="Promote the challenger?",  # replaced by the cycle's own subject when the task runs
            options=[APPROVE, REJECT],
            options_mapping={APPROVE: "promote", REJECT: "record_rejection"},
            defaults=[REJECT],
            assigned_users=[{"id": user, "name": user} for user in approvers] or None,
            response_timeout=timedelta(hours=timeout_hours),
            retries=0,  # a retry would ask again; the question stays open until answered or timed out
            **kwargs,
        )

    def execute(self, context):
        from orchestration import runtime
        from pipeline.record import CycleOutcome
        from pipeline.review import approval_body, approval_subject

        # Set after templating on purpose: the body quotes column and category names from the data.
        outcome = CycleOutcome.read(runtime.recorded_cycle(context, "retrain"))
        self.subject, self.body = approval_subject(outcome), approval_body(outcome)
        return super().execute(context)

    def execute_complete(self, context, event):
        if "error" not in event:
            # Pushed before branching: the branch ends the task by raising (to skip the other way).
            user = event.get("responded_by_user") or {}
            context["ti"].xcom_push(
                key="decision",
                value={
                    "chosen": event["chosen_options"][0],
                    "user": user.get("name") or user.get("id"),
                    "comment": (event.get("params_input") or {}).get("comment") or "",
                    "timed_out": bool(event.get("timedout")),
                },
            )
        return super().execute_complete(context, event)
