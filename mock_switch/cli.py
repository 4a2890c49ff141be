"""`mock-switch`: run the switch or a bank, or print their OpenAPI documents."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mock_switch.config import ConfigError, SystemConfig, parse_listen

if TYPE_CHECKING:
    from mock_switch.bank import BankService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mock-switch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("switch", "bank"):
        p = sub.add_parser(name, help=f"run the {name} service")
        if name == "bank":
            p.add_argument("code", help="bank code, e.g. BNKA")
        p.add_argument("--config", type=Path, required=True, help="system configuration (JSON)")
        p.add_argument("--data-dir", type=Path, required=True, help="where the ledger database lives")
        p.add_argument("--listen", help="HOST:PORT (default: from the configuration)")
        p.add_argument("--parent-pid", type=int, help="exit when this process (the harness) dies")
    o = sub.add_parser("openapi", help="print the OpenAPI document of a service")
    o.add_argument("service", choices=["switch", "bank"])
    args = parser.parse_args(argv)

    if args.command == "openapi":
        from mock_switch.openapi import bank_document, switch_document

        doc = switch_document() if args.service == "switch" else bank_document()
        print(json.dumps(doc, indent=2))
        return 0

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = SystemConfig.load(args.config)
        if args.command == "switch":
            from mock_switch.switch import SwitchService

            listen = args.listen or config.switch.listen
            service: SwitchService | BankService = SwitchService(config, args.data_dir)
        else:
            from mock_switch.bank import BankService

            if args.code not in [b.code for b in config.banks]:
                raise ConfigError(f"{args.config}: no bank {args.code!r}; banks are {[b.code for b in config.banks]}")
            listen = args.listen or config.bank(args.code).listen
            service = BankService(config, args.code, args.data_dir)
        host, port = parse_listen(listen)
    except ConfigError as exc:
        print(f"mock-switch: {exc}", file=sys.stderr)
        return 2
    service.run(host, port, parent_pid=args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
