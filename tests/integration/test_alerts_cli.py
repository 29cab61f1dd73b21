"""``smartcommunity rules ...`` against a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartcommunity.cli import main
from tests.integration.alerts_support import rows

pytestmark = pytest.mark.integration


def test_rules_apply_list_show_disable_enable(
    cli_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rules", "apply", "--defaults"]) == 0
    count = rows(cli_database_url, "SELECT count(*) FROM alert_rules WHERE source = 'default'")
    assert count[0][0] >= 30

    custom = tmp_path / "night.yaml"
    custom.write_text(
        "- id: care.door_night_w7\n"
        "  type: threshold\n"
        "  title: Front door opened at night\n"
        "  severity: major\n"
        "  scope: {device_class: access, device: door-7}\n"
        "  metric: door_open\n"
        "  op: '>='\n"
        "  raise: 1\n"
        "  schedule: {start: '22:00', end: '06:00'}\n"
    )
    assert main(["rules", "apply", str(custom)]) == 0
    capsys.readouterr()
    assert main(["rules", "list", "--type", "threshold"]) == 0
    listed = capsys.readouterr().out
    assert "care.door_night_w7" in listed
    assert "wearable.sos" not in listed  # an event rule
    assert main(["rules", "show", "care.door_night_w7"]) == 0
    assert "start: '22:00:00'" in capsys.readouterr().out

    assert main(["rules", "disable", "wearable.sos"]) == 0
    assert rows(cli_database_url, "SELECT enabled FROM alert_rules WHERE id = 'wearable.sos'") == [
        (False,)
    ]
    assert main(["rules", "enable", "wearable.sos"]) == 0
    assert main(["rules", "enable", "no.such.rule"]) == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "- {id: x, type: threshold, title: X, severity: loud, metric: battery,"
        " op: '<', raise: 10}\n"
    )
    capsys.readouterr()
    assert main(["rules", "apply", str(bad)]) == 2
    assert "bad.yaml: rules.0.threshold.severity" in capsys.readouterr().err
    assert rows(cli_database_url, "SELECT count(*) FROM alert_rules WHERE id = 'x'") == [(0,)]
