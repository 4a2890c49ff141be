import sys

from mock_switch.cli import main

sys.exit(main())
