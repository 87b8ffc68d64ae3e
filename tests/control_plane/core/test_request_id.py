"""Fresh request ids: canonical UUID4 text, unique, and not repeated by a forked worker."""

from __future__ import annotations

import os
import uuid

from control_plane.core.request_id import accept_request_id, new_request_id


def test_fresh_ids_are_canonical_uuid4s_and_unique() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for request_id in ids:
        parsed = uuid.UUID(request_id)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == request_id
    assert uuid.UUID(accept_request_id(None)).version == 4
    assert uuid.UUID(accept_request_id("<script>")).version == 4


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next ids, then out without running pytest's exit
        os.write(write_end, " ".join(new_request_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end) as pipe:
        childs = set(pipe.read().split())
    assert len(childs) == 3
    assert not childs & {new_request_id() for _ in range(3)}
