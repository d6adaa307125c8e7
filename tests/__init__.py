"""The trial suite.

Without a handler, Python's logging writes WARNING and above to stderr
(``logging.lastResort``), in the middle of trial's report.  Every record goes
to trial's own log instead (``_trial_temp/test.log``), next to Twisted's
events; tests that check log lines capture them with
:func:`tests.doubles.capture_logs`.
"""

import logging

from twisted.python import log as twisted_log


class _IntoTrialLog(logging.Handler):
    """Writes each record, formatted, into Twisted's log as a plain message
    (never as an error event, which would fail the test)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            twisted_log.msg(self.format(record), system=record.name)
        except Exception:  # a broken record must not break the test that logged it
            self.handleError(record)


def _route_logging_into_trial_log() -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, _IntoTrialLog) for handler in root.handlers):
        handler = _IntoTrialLog()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


_route_logging_into_trial_log()
