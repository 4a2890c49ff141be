"""A link's listen port is chosen free but bound later by Toxiproxy: a port taken in between must not
fail the run (CI once lost a run to "address already in use")."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from support import get

from harness.testbed import Testbed
from harness.testbed.system import build_system

pytestmark = pytest.mark.slow


def test_a_link_port_taken_before_start_is_chosen_again(tmp_path: Path) -> None:
    bed = Testbed(build_system(banks=2, accounts=20), tmp_path)
    link = bed.links["BNKA->switch"]
    host, port = link.listen.rsplit(":", 1)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind((host, int(port)))  # another process takes the port between choice and bind
    squatter.listen(1)
    try:
        with bed:
            moved = bed.links["BNKA->switch"]
            assert moved.listen != link.listen
            # The bank dials the switch through the new listener, and the nemesis breaks that one.
            assert bed.system.banks[0].switch_url == f"http://{moved.listen}"
            assert bed.nemesis.links["BNKA->switch"] is moved
            assert get(f"http://{moved.listen}/health")[0] == 200
            assert bed.toxiproxy.proxies()[moved.proxy]["listen"] == moved.listen
    finally:
        squatter.close()


def test_a_service_port_taken_before_start_is_chosen_again(tmp_path: Path) -> None:
    system = build_system(banks=2, accounts=20)
    host, port = system.switch.listen.rsplit(":", 1)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind((host, int(port)))  # taken between build_system's choice and the switch's bind
    squatter.listen(1)
    try:
        with Testbed(system, tmp_path) as bed:
            assert bed.system.switch.listen != system.switch.listen
            # Every link to the switch follows it, and payments' first hop answers through them.
            assert bed.links["BNKA->switch"].upstream == bed.system.switch.listen
            assert get(f"http://{bed.links['BNKA->switch'].listen}/health")[0] == 200
            assert get(bed.topology.switch.url + "/health")[0] == 200
    finally:
        squatter.close()
