"""ktables as a rebuild peer: materialize a topic into a ``KafkaTable`` and say when it is caught up.

    python ktables_peer.py BOOTSTRAP TOPIC [TIMEOUT_S]

Prints ``ready <users> <status> <catch-up seconds as ktables measured it>`` once ``start()``
returns, then stops. Values are kept as the bytes read, as kafka_crud's store keeps them.
"""

from __future__ import annotations

import asyncio
import sys

from ktables import KafkaTable


async def main(servers: str, topic: str, timeout: float) -> int:
    table: KafkaTable[bytes] = KafkaTable(
        connection=servers, topic=topic, value_decoder=bytes, catchup_timeout=timeout
    )
    await table.start()
    try:
        print(f"ready {len(table)} {table.status} {table.stats.catch_up_seconds}", flush=True)
    finally:
        await table.stop()
    return 0 if table.status == "caught_up" else 1


if __name__ == "__main__":
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 600.0
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], timeout)))
