"""Helpers for tests of the workers' shared tables (`kefu.worker_memory`)."""

from __future__ import annotations

from kefu.worker_memory import KEY_BYTES, SlotTable


def tear_one_slot(table: SlotTable) -> None:
    """Change a byte of the payload of the one slot in use, as a write caught halfway would leave it."""
    buf = table._block.buf
    assert buf is not None
    used = [i for i in range(table.slots) if any(buf[table.slot_start(i) : table.slot_start(i) + KEY_BYTES])]
    assert len(used) == 1, f"expected one slot in use, found {len(used)}"
    byte = table.slot_start(used[0]) + 32 + 9  # in the payload, past the slot's header
    buf[byte] = (buf[byte] + 1) % 256
