"""Who may do what: roles, the families of things they act on, and the policy between them.

Pure data and one function, so that the whole matrix is visible in one screen and
is testable without a server. The API maps each route to a family
(``api/scope.py``); what a user may *see* is further narrowed to the communities
they are assigned to.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["POLICY", "Family", "Role", "allowed"]


class Role(StrEnum):
    ADMIN = "admin"  # manages users, rules, communities; everything of their communities
    INSTALLER = "installer"  # registers and manages devices, buildings and units
    OPERATOR = "operator"  # control room: reads everything, acts on alerts
    VIEWER = "viewer"  # reads devices, readings and alerts
    # A person sent to incidents: sees only their own dispatches (/me/dispatches) and
    # answers them; nothing else of the community.
    RESPONDER = "responder"


class Family(StrEnum):
    COMMUNITIES = "communities"
    LOCATIONS = "locations"  # buildings and units
    DEVICES = "devices"
    TELEMETRY = "telemetry"  # readings, events, aggregates, latest values, fleet status
    ALERTS = "alerts"
    MAINTENANCE = "maintenance"  # maintenance windows that suppress alerts
    RULES = "rules"
    WEBHOOKS = "webhooks"
    RESIDENTS = "residents"  # personal data: only roles that care for people
    VISITS = "visits"  # care visits, policies, who is due: names and notes, as residents
    DEAD_LETTERS = "dead_letters"
    USERS = "users"  # users and their tokens
    AUDIT = "audit"
    RESPONDERS = "responders"  # responders, teams, duty rosters: names and phone numbers
    INCIDENTS = "incidents"  # incidents, their timelines and dispatches
    INCIDENT_TARGETS = "incident_targets"  # per community and type: the response targets
    SELF = "self"  # who am I, my own tokens, my own dispatches (a responder's)


# Everyone who works in the platform; a responder's account sees only what is sent to them.
_ALL = frozenset(Role) - {Role.RESPONDER}
_EVERYONE = frozenset(Role)
_ADMIN = frozenset({Role.ADMIN})
_NOBODY: frozenset[Role] = frozenset()

# family -> (roles that may read, roles that may change). Reads are GET/HEAD.
POLICY: dict[Family, tuple[frozenset[Role], frozenset[Role]]] = {
    Family.COMMUNITIES: (_ALL, _ADMIN),
    Family.LOCATIONS: (_ALL, frozenset({Role.ADMIN, Role.INSTALLER})),
    Family.DEVICES: (_ALL, frozenset({Role.ADMIN, Role.INSTALLER})),
    Family.TELEMETRY: (_ALL, _NOBODY),
    Family.ALERTS: (_ALL, frozenset({Role.ADMIN, Role.OPERATOR})),
    # Installers put what they work on in maintenance, operators what they know is faulty.
    Family.MAINTENANCE: (_ALL, frozenset({Role.ADMIN, Role.OPERATOR, Role.INSTALLER})),
    Family.RULES: (_ALL, _ADMIN),
    # Webhook URLs carry secrets.
    Family.WEBHOOKS: (_ADMIN, _ADMIN),
    # Names, addresses and contacts: for those who respond to a fall, nobody else.
    Family.RESIDENTS: (frozenset({Role.ADMIN, Role.OPERATOR}), _ADMIN),
    # The control room records the visits its workers report and follows them up.
    Family.VISITS: (frozenset({Role.ADMIN, Role.OPERATOR}), frozenset({Role.ADMIN, Role.OPERATOR})),
    # Raw payloads: installers commissioning a device need to see why it is refused.
    Family.DEAD_LETTERS: (frozenset({Role.ADMIN, Role.INSTALLER}), _NOBODY),
    Family.USERS: (_ADMIN, _ADMIN),
    Family.AUDIT: (_ADMIN, _NOBODY),
    # The control room sends people: it must see who is on duty and how to reach them.
    Family.RESPONDERS: (frozenset({Role.ADMIN, Role.OPERATOR}), _ADMIN),
    Family.INCIDENTS: (
        frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER}),
        frozenset({Role.ADMIN, Role.OPERATOR}),
    ),
    # Targets decide when the ladder escalates: set by administrators, read by the board.
    Family.INCIDENT_TARGETS: (frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER}), _ADMIN),
    Family.SELF: (_EVERYONE, _EVERYONE),
}


def allowed(role: Role, family: Family, *, write: bool) -> bool:
    readers, writers = POLICY[family]
    return role in (writers if write else readers)
