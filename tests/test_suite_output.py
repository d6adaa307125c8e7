"""The suite's own output: trial's report, without the log lines of the
tests in the middle of it (they go to ``_trial_temp/test.log``)."""

from __future__ import annotations

import os
import sys

from twisted.internet import defer, utils
from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SuiteOutputTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_warnings_and_tracebacks_of_a_test_stay_in_its_log(self):
        """This test logs an ERROR with a traceback: trial's report holds
        none of it, trial's log all of it."""
        temp = os.path.abspath(self.mktemp())
        test = "tests.test_engine.EngineTests.test_a_transport_that_raises_still_answers_once"
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ["-m", "twisted.trial", f"--temp-directory={temp}", test],
            env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)
        report = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 0, report)
        self.assertIn("PASSED", report)
        self.assertNotIn("the Test client failed to send", report)
        self.assertNotIn("Traceback", report)
        with open(os.path.join(temp, "test.log"), encoding="utf-8") as stream:
            written = stream.read()
        self.assertIn("ERROR sylkpush.pns.engine: p: the Test client failed to send", written)
        self.assertIn("RuntimeError: bug", written)
