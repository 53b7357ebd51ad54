#!/usr/bin/env python3
"""Seeds a benchmark server's store with moderation: BANS users banned from ROOM
(written to its ledger file in DATA_DIR while it runs, before any client joins ROOM,
so that the room's first join reads them all). As ab.sh's AB_SETUP, which adds the
data directory:
   AB_SETUP="loadtest/seed-moderation.py lt-room-0 10000" loadtest/ab.sh ...
   loadtest/seed-moderation.py ROOM BANS DATA_DIR"""
import json
import sqlite3
import sys
import time

room, bans, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
db = sqlite3.connect(f"{data_dir}/ledger.sqlite3", timeout=30)
now = int(time.time() * 1000)
admin = {"id": "bench-admin", "name": "Bench admin"}
with db:
    db.executemany(
        "INSERT OR REPLACE INTO known_users (user_id, name, role) VALUES (?, ?, '\"viewer\"')",
        ((f"banned-{i}", f"banned-{i}") for i in range(bans)),
    )
    last = db.execute("SELECT COALESCE(MAX(rev), 0) FROM moderation_log WHERE room = ?", (room,)).fetchone()[0]
    db.executemany(
        "INSERT INTO moderation_log (room, rev, record) VALUES (?, ?, ?)",
        (
            (room, last + 1 + i, json.dumps({
                "rev": 0, "at_ms": now, "action": "ban", "by": admin,
                "user": {"id": f"banned-{i}", "name": f"banned-{i}"},
            }))
            for i in range(bans)
        ),
    )
print(f"seeded {bans} bans in {room}", file=sys.stderr)
