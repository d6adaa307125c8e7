"""Sum the results in several logs into 'N passed, N failed'.

Each argument is a log, optionally followed by ':RUNS' when that log holds
RUNS trial runs (default 1).  A log counts trial's closing summaries (its last
RUNS ones), or else the checks a script printed as "ok - ..." / "not ok - ...";
a trial run that never reached its summary, or a log with neither, counts as
one failure.
"""

import re
import sys

passed = failed = skipped = 0
for argument in sys.argv[1:]:
    path, _, runs = argument.partition(":")
    expected = int(runs or 1)
    with open(path, encoding="utf-8", errors="replace") as stream:
        text = stream.read()
    summaries = re.findall(r"^(PASSED|FAILED) \(([^)]*)\)\s*$", text, re.M)[-expected:]
    checks = re.findall(r"^(ok|not ok) - ", text, re.M)
    if summaries:
        failed += expected - len(summaries)
        for _, summary in summaries:
            counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", summary))
            passed += counts.get("successes", 0)
            failed += counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
            skipped += counts.get("skips", 0)
    elif checks:
        passed += checks.count("ok")
        failed += checks.count("not ok")
    else:
        failed += expected  # the runs never reached a summary: count each as a failure
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
