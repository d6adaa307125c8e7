"""Sum trial's closing summaries of several logs into 'N passed, N failed'."""

import re
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8", errors="replace") as stream:
        text = stream.read()
    summaries = re.findall(r"^(PASSED|FAILED) \(([^)]*)\)\s*$", text, re.M)
    if not summaries:
        failed += 1  # the run never reached trial's summary: count it as a failure
        continue
    counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", summaries[-1][1]))
    passed += counts.get("successes", 0)
    failed += counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    skipped += counts.get("skips", 0)
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
