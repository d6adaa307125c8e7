"""Sum the results in several logs into 'N passed, N failed'.

A log counts trial's closing summary (its last one), or else the checks a
script printed as "ok - ..." / "not ok - ..."; a log with neither never got
that far and counts as one failure.
"""

import re
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8", errors="replace") as stream:
        text = stream.read()
    summaries = re.findall(r"^(PASSED|FAILED) \(([^)]*)\)\s*$", text, re.M)
    checks = re.findall(r"^(ok|not ok) - ", text, re.M)
    if summaries:
        counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", summaries[-1][1]))
        passed += counts.get("successes", 0)
        failed += counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
        skipped += counts.get("skips", 0)
    elif checks:
        passed += checks.count("ok")
        failed += checks.count("not ok")
    else:
        failed += 1  # the run never reached a summary: count it as a failure
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
