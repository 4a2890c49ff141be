"""CPU per payment spent in the ledgers alone (SQLite statements, WAL writes, fsync), no HTTP.

Drives the real ledgers of a payer bank, the switch and a payee bank in this process, in the order
one payment touches them (originate, begin_transfer, receive_credit, commit, finalise and the
payer's status read), with one group commit per --batch payments per step, as the services' group
commit does under load. Runs --rounds rounds of --payments / --rounds payments after a warm-up and
prints the round with the least CPU (user + sys) and the median round: least CPU is the figure
least inflated by other work on a shared machine. Compare two versions by alternating their runs
(PYTHONPATH=/path/to/other/checkout runs that checkout's ledgers).

Last line: user_ms=<a> sys_ms=<b> total_ms=<c> median_total_ms=<d>
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from mock_switch.api import CreditRequest, PaymentRequest, TransferRequest
from mock_switch.bank_ledger import SCHEMA as BANK_SCHEMA
from mock_switch.bank_ledger import BankLedger
from mock_switch.config import BankConfig, Durability, SystemConfig, account_number
from mock_switch.store import Store
from mock_switch.switch_ledger import SCHEMA as SWITCH_SCHEMA
from mock_switch.switch_ledger import SwitchLedger

Work = tuple[PaymentRequest, TransferRequest, CreditRequest]


class Ledgers:
    def __init__(self, tmp: Path, durability: Durability) -> None:
        config = SystemConfig(banks=[BankConfig(code="BNKA"), BankConfig(code="BNKB")], durability=durability)
        self.payer_store = Store(tmp / "bnka.db", BANK_SCHEMA, durability)
        self.payee_store = Store(tmp / "bnkb.db", BANK_SCHEMA, durability)
        self.switch_store = Store(tmp / "switch.db", SWITCH_SCHEMA, durability)
        self.payer = BankLedger(self.payer_store, config, "BNKA")
        self.payee = BankLedger(self.payee_store, config, "BNKB")
        self.switch = SwitchLedger(self.switch_store, config, time.time())
        self.rng = random.Random(1)

    def work(self, n: int) -> list[Work]:
        out = []
        for _ in range(n):
            pid = f"{self.rng.getrandbits(128):032x}"
            debtor, creditor = account_number(0, self.rng.randrange(1000)), account_number(1, self.rng.randrange(1000))
            common = {"payment_id": pid, "debtor_account": debtor, "amount": 100, "currency": "NGN"}
            out.append(
                (
                    PaymentRequest(**common, creditor_bank="BNKB", creditor_account=creditor),
                    TransferRequest(**common, debtor_bank="BNKA", creditor_bank="BNKB", creditor_account=creditor),
                    CreditRequest(**common, debtor_bank="BNKA", creditor_account=creditor),
                )
            )
        return out

    def run(self, n: int, batch: int) -> tuple[float, float]:
        """User and sys CPU ms per payment for n payments."""
        work = self.work(n)
        t0 = os.times()
        for k in range(0, n, batch):
            chunk, now = work[k : k + batch], time.time()
            for p, _, _ in chunk:
                self.payer.originate(p, p.fingerprint(), now)
            self.payer_store.commit()
            for _, t, _ in chunk:
                self.switch.begin_transfer(t, t.fingerprint(), now)
            self.switch_store.commit()
            for _, _, c in chunk:
                self.payee.receive_credit(c, c.fingerprint(), now)
            self.payee_store.commit()
            for p, _, _ in chunk:
                self.switch.commit(p.payment_id, now)
            self.switch_store.commit()
            for p, _, _ in chunk:
                self.payer.finalise(p.payment_id, now)
                self.payer.payment_status(p.payment_id)
            self.payer_store.commit()
        t1 = os.times()
        return (t1.user - t0.user) * 1000 / n, (t1.system - t0.system) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=12000, help="payments measured, over all rounds")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4, help="payments per group commit")
    parser.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-cpu-") as tmp:
        ledgers = Ledgers(Path(tmp), args.durability)
        ledgers.run(500, args.batch)  # warm-up: caches, statement cache, a WAL of some size
        rounds = sorted((ledgers.run(args.payments // args.rounds, args.batch) for _ in range(args.rounds)), key=sum)
    (user, sys_), median = rounds[0], sum(rounds[len(rounds) // 2])
    print(f"user_ms={user:.3f} sys_ms={sys_:.3f} total_ms={user + sys_:.3f} median_total_ms={median:.3f}")


if __name__ == "__main__":
    main()
