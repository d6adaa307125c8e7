"""Sum trial's closing summaries of several logs into 'N passed, N failed'.

Each argument is a log, optionally followed by ':RUNS' when that log holds
RUNS trial runs (default 1); a run that never reached its summary counts as
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
    failed += expected - len(summaries)
    for _, summary in summaries:
        counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", summary))
        passed += counts.get("successes", 0)
        failed += counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
        skipped += counts.get("skips", 0)
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
