"""Responders on a real Mosquitto with the exported ACL: the incident desk (the pipeline's
account) pushes a dispatch to the responder's own topic; the responder's reply on their
own reply topic is applied; a reply on a colleague's topic is refused by the broker and
a colleague reading everything receives nothing of another's dispatches."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import psycopg
import pytest

from core.dispatch_contract import dispatch_topic, reply_topic
from core.passwords import hash_password, new_secret
from store.incidents import dispatch
from tests.integration.alerts_support import rows
from tests.integration.support import one_row, pipeline_thread, wait_for
from tests.integration.test_broker_export import NOT_AUTHORIZED, TIMEOUT_S, Rig, connect, rig

pytestmark = pytest.mark.integration
__all__ = ["rig"]  # the fixture, shared with the device tests


def test_a_responder_gets_and_answers_only_their_own_dispatches(rig: Rig, unique_id: str) -> None:
    c = rig.community
    me, colleague = f"{unique_id}-wang", f"{unique_id}-li"
    with psycopg.connect(rig.database_url, autocommit=True) as db:
        for responder in (me, colleague):
            secret = new_secret()
            rig.passwords[f"app-{responder}"] = secret
            db.execute(
                "INSERT INTO responders (id, community_id, name, role, mqtt_username,"
                " mqtt_password_hash) VALUES (%s, %s, %s, 'guard', %s, %s)",
                (responder, c, responder, f"app-{responder}", hash_password(secret)),
            )
        row = one_row(
            db,
            "INSERT INTO incidents (community_id, incident_type, title, opened_at)"
            " VALUES (%s, 'intrusion', 'Door forced', %s) RETURNING id",
            (c, datetime.now(UTC)),
        )
    rig.export()
    mine = connect(rig, f"app-{me}")
    theirs = connect(rig, f"app-{colleague}")
    try:
        assert mine.connack == 0
        assert mine.subscribe(dispatch_topic(c, me)) == 1
        theirs.subscribe("community/#")  # granted, but the ACL delivers only their own
        pipeline_url = rig.broker.url_for(rig.pipeline_user, rig.pipeline_password)
        with pipeline_thread(rig.database_url, pipeline_url, f"pipe-{unique_id}", c):
            with psycopg.connect(rig.database_url, autocommit=True) as db:
                (sent,) = dispatch(db, int(row[0]), [me], by="user:op", at=datetime.now(UTC))
            wait_for(lambda: bool(mine.messages), TIMEOUT_S * 3, "the dispatch on the app")
            topic, payload = mine.messages[0]
            assert topic == dispatch_topic(c, me)
            assert orjson.loads(payload)["dispatch_id"] == sent
            # Answering as the colleague (their topic) is refused by the broker.
            forged = orjson.dumps({"dispatch_id": sent, "action": "accept"})
            assert mine.publish(reply_topic(c, colleague), forged) == NOT_AUTHORIZED
            assert mine.publish(reply_topic(c, me), forged) == 0
            wait_for(
                lambda: (
                    rows(rig.database_url, "SELECT state FROM dispatches WHERE id = %s", (sent,))
                    == [("accepted",)]
                ),
                TIMEOUT_S * 3,
                "the acceptance applied",
            )
        delivered = rows(
            rig.database_url,
            "SELECT delivered_at IS NOT NULL, accepted_at IS NOT NULL FROM dispatches"
            " WHERE id = %s",
            (sent,),
        )
        assert delivered == [(True, True)]
        assert not [t for t, _ in theirs.messages if "/dispatch" in t]
    finally:
        mine.close()
        theirs.close()
