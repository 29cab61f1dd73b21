"""Event catalogue: which events each device class sends, as the metric catalogue is for metrics.

An event name outside its class is a dead letter (``unknown_event``), never a
stored row that no rule reads: a misspelt ``sos`` where the rule listens for
``sos_pressed`` would otherwise be a silently lost SOS. The rule pack is checked
against the same catalogue when it is loaded (``alerts.pack``), so a rule
listening for an event no class sends is an error, not a rule that never fires.
Names come from the simulators, the default rules and ../shared/domain.md.
"""

from __future__ import annotations

from core.metric_catalog import DEVICE_CLASSES

__all__ = ["EVENTS", "classes_sending", "is_known_event"]

# Every class may report these: a device fault, a self-test, a diagnostics dump,
# tamper/removal and a low battery (GB 20517 asks for a distinct battery signal).
_COMMON = frozenset({"fault", "self_test", "diagnostics_dump", "tamper", "battery_low"})

# Building fire panels through a GB/T 26875.3 UITD (firebridge/): a status bit that
# turns on is its event, one that turns off is ``<event>_cleared``; operations
# (reset, silence ...) are moments with no clearing; the last four are the bridge's
# own news about the UITD (its link, the duty check, its clock).
_PANEL_STATES = (
    "fire_alarm",
    "shield",
    "supervisory",
    "started",
    "feedback",
    "delay",
    "main_power_fault",
    "backup_power_fault",
    "bus_fault",
    "power_fault",
    "link_fault",
    "line_fault",
    "test_mode",
    "manual_mode",
)
_PANEL = frozenset(
    {
        *_PANEL_STATES,
        *(f"{name}_cleared" for name in (*_PANEL_STATES, "fault")),
        "config_changed",
        "reset",
        "silenced",
        "manual_alarm",
        "operator_confirmed",
        "test",
        "duty_check_answered",
        "duty_check_missed",
        "link_lost",
        "link_restored",
        "clock_synced",
    }
)

EVENTS: dict[str, frozenset[str]] = {
    "fire": _COMMON
    | {
        "smoke_alarm",
        "heat_alarm",
        "gas_alarm",
        "leakage_alarm",
        "low_pressure",
        "low_level",
        "extinguisher_discharged",
        "manual_call_point",
        "alarm_cleared",
    }
    | _PANEL,
    "locker": _COMMON
    | {
        "parcel_deposited",
        "parcel_picked_up",
        "door_forced",
        "door_opened",
        "door_closed",
        "power_lost",
        "power_restored",
    },
    "access": _COMMON
    | {
        "access_granted",
        "access_denied",
        "door_held_open",
        "door_forced",
        "door_opened",
        "door_closed",
        "visit_checkin",
    },
    "wearable": _COMMON
    | {
        "sos_pressed",
        "fall_detected",
        "fall_cancelled",
        "geofence_exit",
        "geofence_enter",
        "not_worn",
        "worn",
    },
}

assert frozenset(EVENTS) == DEVICE_CLASSES, "every device class needs an event catalogue"


def is_known_event(device_class: str, event: str) -> bool:
    return event in EVENTS.get(device_class, frozenset())


def classes_sending(event: str) -> list[str]:
    """The device classes whose catalogue holds ``event`` (empty: no device sends it)."""
    return sorted(c for c, names in EVENTS.items() if event in names)
