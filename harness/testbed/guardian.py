"""The guardian: outlives the harness for a moment to clean up what it started, whatever it died of.

Services watch their parent and exit when it dies, but a service under a `pause` fault is stopped
(SIGSTOP) and cannot notice anything: after a `kill -9` of the harness it would stay frozen, holding
its port, forever. So each local testbed starts this small process (its own session, no owner token
of its own): it polls the harness, and when the harness is gone it resumes and kills every process
carrying the harness's owner token (harness/procs.py), then exits. The testbed stops it on a normal
stop. A cgroup freezer would do the pausing without this, but needs privileges a CI job may not have.

    python -m harness.testbed.guardian OWNER_TOKEN
"""

from __future__ import annotations

import sys
import time

from harness.procs import owner_alive, reap_orphans

POLL_S = 0.2


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m harness.testbed.guardian OWNER_TOKEN", file=sys.stderr)
        return 2
    token = argv[0]
    while owner_alive(token):
        time.sleep(POLL_S)
    reaped = reap_orphans(token)
    print(f"guardian: harness {token} is gone; reaped {len(reaped)} processes {reaped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
