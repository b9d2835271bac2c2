from __future__ import annotations

import pytest

from kvmesh.common.units import format_size, parse_duration_s, parse_size, parse_size_list


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4GiB", 4 << 30), ("512MiB", 512 << 20), ("2MB", 2_000_000), ("1048576", 1 << 20), ("1.5KiB", 1536), (" 3 gib ", 3 << 30)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "4XB", "-1", "GiB", "1e3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_size_list_duration_and_format() -> None:
    assert parse_size_list("2MiB,32MiB") == [2 << 20, 32 << 20]
    assert parse_duration_s("500ms") == 0.5
    assert parse_duration_s("2s") == 2.0
    assert parse_duration_s("1.5") == 1.5
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration_s("fast")
    assert format_size(2 << 20) == "2MiB"
    assert format_size(1536) == "1.5KiB"
    assert format_size(10) == "10B"
