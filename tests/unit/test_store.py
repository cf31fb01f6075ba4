"""The store's reads that an attach makes must not read every row: they are answered by an
index whatever the number of containers."""

from __future__ import annotations

from muslin.store import Store


def test_a_name_is_looked_up_not_every_name_read(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    for i in range(50):
        store.put("containers", f"id{i}", f"name{i}", "active", {"name": f"name{i}"})
    statements: list[str] = []
    store.read().set_trace_callback(statements.append)
    taken = store.taken_names("containers")
    assert "name7" in taken and "other" not in taken
    assert len(statements) == 2 and all("WHERE name = " in s for s in statements), statements
    plan = store.read().execute("EXPLAIN QUERY PLAN SELECT 1 FROM containers WHERE name = ?", ("x",)).fetchall()
    assert "USING COVERING INDEX" in plan[0][-1] or "USING INDEX" in plan[0][-1], plan
    store.close()
