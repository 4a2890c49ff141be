"""The Locust file of `harness ui`: the payment customers plus the Chaos tab.

The load side (harness/load/locustfile.py) never imports the web side; this front-end file composes
the two, the way Locust's env.py wires runners and the web UI without the runners knowing it. Use it
by hand next to `harness up` (which prints the exact command):

    locust -f harness/web/locustfile.py --chaos-url http://127.0.0.1:PORT --system-json ... --bank-urls ...
"""

from harness.load.locustfile import *  # noqa: F403  # the User and shape classes Locust discovers here
from harness.web import panel

panel.register()  # after the customers' listeners: the history is flushed before the panel asks for a check
