"""tests/data: every slice is cut, rows unchanged, from its shared file by the command its README
gives."""
from __future__ import annotations

import re

from conftest import SHARED_DATA, TEST_DATA, needs_shared

README = TEST_DATA / "README.md"
COMMAND = re.compile(r"^slice_rows (\S+) +(\S+) +(\S+)$", re.MULTILINE)


def cut_commands() -> dict[str, tuple[str, str]]:
    """{file: (from, to)} as the README's ``slice_rows`` lines give them."""
    return {name: (start, end) for name, start, end in COMMAND.findall(README.read_text())}


def slice_rows(source: bytes, start: str, end: str) -> bytes:
    """What the README's awk command keeps: the header and the rows whose first field (the ISO
    timestamp) is in [start, end), compared as text."""
    lines = source.splitlines(keepends=True)
    kept = [line for line in lines[1:] if start <= line.split(b",", 1)[0].decode() < end]
    return lines[0] + b"".join(kept)


def test_every_slice_has_its_cut_command_and_the_slices_stay_small():
    commands = cut_commands()
    assert sorted(commands) == sorted(p.name for p in TEST_DATA.glob("*.csv"))
    assert sum(p.stat().st_size for p in TEST_DATA.glob("*.csv")) < 2_000_000
    for name in commands:
        assert f"| {name} |" in README.read_text().split("## How they were cut")[0], name


@needs_shared(*cut_commands())
def test_every_slice_is_its_shared_files_rows_unchanged():
    for name, (start, end) in cut_commands().items():
        source = (SHARED_DATA / name).read_bytes()
        ours = (TEST_DATA / name).read_bytes()
        assert ours == slice_rows(source, start, end), name
        assert ours[ours.index(b"\n") + 1:] in source, name  # one contiguous run of its rows
