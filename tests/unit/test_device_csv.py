"""The bulk-registration CSV: good files, bad rows with their line and reason, limits."""

from __future__ import annotations

import pytest

from core.device_csv import MAX_CSV_ROWS, CsvFileError, parse_devices_csv

HEADER = "id,community_id,device_class,model,name,expected_interval_s,building,floor,unit\n"


def test_good_file() -> None:
    parsed = parse_devices_csv(
        "\ufeff" + HEADER + "w1,c1,wearable,W1,Watch,60,B1,3,B1-0301\n"
        "\n"  # blank lines are skipped but counted
        "f1,c1,fire,,,,,,\n"
    )
    assert parsed.errors == []
    assert [(r.line, r.spec.id, r.spec.expected_interval_s) for r in parsed.rows] == [
        (2, "w1", 60),
        (4, "f1", 300),
    ]
    assert parsed.rows[0].spec.unit == "B1-0301"
    assert parsed.rows[0].spec.floor == 3


def test_every_bad_row_is_reported_with_its_line_and_reason() -> None:
    text = (
        "device_id,community_id,device_class,expected_interval_s,unit,resident_id\n"
        "ok-1,c1,fire,60,,\n"  # 2
        "bad id,c1,fire,60,,\n"  # 3
        "t1,c1,toaster,60,,\n"  # 4
        "t2,c1,fire,0,,\n"  # 5
        "t3,c1,fire,60,U1,\n"  # 6 unit without building
        "t4,c1,fire,60,,r1\n"  # 7 resident on a smoke detector
        "ok-1,c1,fire,60,,\n"  # 8 duplicate
        "t5,c1\n"  # 9 short row
        '"t6\n6",c1,fire,60,,\n'  # 10-11: a quoted newline in an id
        "a:b,c1,fire,60,,\n"  # 12 ':' cannot be an MQTT user name
    )
    parsed = parse_devices_csv(text)
    assert [r.spec.id for r in parsed.rows] == ["ok-1"]
    reasons = {e.line: e.reason for e in parsed.errors}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert reasons[3].startswith("id: use 1-64 letters")
    assert reasons[4] == (
        "device_class: unknown device class 'toaster':"
        " expected one of access, fire, locker, wearable"
    )
    assert reasons[5] == "expected_interval_s: Input should be greater than or equal to 1"
    assert reasons[6] == "a unit needs its building"
    assert reasons[7] == "only a wearable belongs to a resident"
    assert reasons[8] == "device 'ok-1' is also on line 2"
    assert reasons[9] == "2 cells, the header has 6"
    assert reasons[12] == reasons[3]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty file: the first line must name the columns"),
        ("id,community_id,colour\n", "unknown column 'colour': the columns are"),
        ("id,device_class\n", "missing column community_id"),
        ("id,id,community_id,device_class\n", "column 'id' appears twice"),
    ],
)
def test_a_bad_header_refuses_the_whole_file(text: str, reason: str) -> None:
    with pytest.raises(CsvFileError) as caught:
        parse_devices_csv(text)
    assert caught.value.line == 1
    assert caught.value.reason.startswith(reason)


def test_row_limit() -> None:
    rows = "".join(f"d{n},c1,fire\n" for n in range(MAX_CSV_ROWS + 1))
    with pytest.raises(CsvFileError, match="more than 10,000 devices"):
        parse_devices_csv("id,community_id,device_class\n" + rows)
