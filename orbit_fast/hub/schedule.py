"""Cron schedules for hub jobs (croniter): five-field expressions and @daily-style aliases,
in the hub's local time zone, as cron and systemd timers read them."""

from __future__ import annotations

import time
from datetime import datetime

from croniter import CroniterError, croniter

from orbit_fast.errors import UsageError


def check(expr: str) -> str:
    """The expression, stripped; UsageError with the accepted forms if croniter rejects it."""
    expr = expr.strip()
    if len(expr) > 200 or not croniter.is_valid(expr) or len(expr.split()) > 5:
        raise UsageError(f"schedule {expr!r} is not a cron expression: use five fields "
                         "(minute hour day month weekday, e.g. '0 2 * * *' for 02:00 daily) "
                         "or @hourly, @daily, @weekly, @monthly")  # fmt: skip
    try:  # valid fields can still name no date at all: 0 0 30 2 * (30 February)
        next_after(expr, time.time())
    except CroniterError:
        raise UsageError(f"schedule {expr!r} never fires: no date matches its day and month "
                         "fields (e.g. 30 February, 31 April)") from None  # fmt: skip
    return expr


def next_after(expr: str, now: float) -> float:
    """The first time after `now` (a Unix time) that the schedule fires."""
    return float(croniter(expr, datetime.fromtimestamp(now).astimezone()).get_next(float))
