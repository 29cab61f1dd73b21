"""Alink devices on a Mosquitto that enforces the exported ACL.

The export grants an Alink product's devices their own ``/sys/{pk}/{dn}/…``
posts and replies only, and the pipeline's account the posts and the answers:
a device's post is stored and answered, another device's topic or another
product key is refused by the broker, and no device reads another's replies.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import psycopg
import pytest

from core.alink import device_reply_filter, post_topic, reply_topic
from core.broker_acl import ServiceRole, foreign_topics
from core.passwords import hash_password, new_secret
from core.registry import DeviceSpec
from core.settings import DecoderSettings
from gateway.decoders import load_profiles
from smartcommunity.broker_export import add_account, export_broker_files
from smartcommunity.secured_broker import SecuredMosquitto
from store import schema
from store.devices import register_device
from tests.integration.support import count, pipeline_thread, wait_for
from tests.integration.test_broker_export import NOT_AUTHORIZED, TIMEOUT_S, Rig, connect

pytestmark = pytest.mark.integration


def post(seq: int) -> bytes:
    return orjson.dumps({"id": str(seq), "params": {"RSSI": -60 - seq}})


def test_an_alink_device_posts_and_reads_only_its_own_topics(
    database_url: str, tmp_path: Path, unique_id: str
) -> None:
    schema.upgrade(database_url)
    community, key = f"c{unique_id}", f"pk{unique_id}"
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "p.yaml").write_text(
        f"kind: alink\nproduct_key: {key}\ndevice_class: fire\nproperties: {{RSSI: rssi}}\n",
        encoding="utf-8",
    )
    decoders = load_profiles(folder)
    passwords: dict[str, str] = {}
    pipeline_user, pipeline_password = f"pipe-{unique_id}", new_secret()
    files = (tmp_path / "passwd", tmp_path / "acl")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (community, "Test"))
        for n in range(2):
            spec = DeviceSpec(id=f"{unique_id}-a{n}", community_id=community, device_class="fire")
            outcome = register_device(conn, spec, visible=lambda _c: True, installed_by="test")
            assert isinstance(outcome, tuple), outcome
            passwords[spec.id] = outcome[1]
        add_account(conn, pipeline_user, ServiceRole.PIPELINE, hash_password(pipeline_password))
        export_broker_files(
            conn, *files, foreign_topics(decoders.products.values(), decoders.profiles)
        )
    passwords[pipeline_user] = pipeline_password
    mine, other = f"{unique_id}-a0", f"{unique_id}-a1"
    assert f"topic write /sys/{key}/{mine}/thing/event/+/post\n" in files[1].read_text()

    with SecuredMosquitto(
        data_dir=tmp_path / "broker", password_file=files[0], acl_file=files[1]
    ) as broker:
        rig = Rig(
            database_url, community, passwords, pipeline_user, pipeline_password, broker, files
        )
        with pipeline_thread(
            database_url,
            broker.url_for(pipeline_user, pipeline_password),
            f"pipe-{unique_id}",
            community,
            decoders=DecoderSettings(profiles=folder),
        ):
            device = connect(rig, mine)
            neighbour = connect(rig, other)
            try:
                assert device.subscribe(device_reply_filter(key, mine)) == 1
                device.subscribe("/sys/#")  # granted, but delivers only what it may read
                assert neighbour.subscribe(device_reply_filter(key, other)) == 1

                assert device.publish(post_topic(key, mine), post(1)) == 0
                wait_for(lambda: len(device.messages) >= 1, TIMEOUT_S, "the device's reply")
                topic, body = device.messages[0]
                assert topic == reply_topic(post_topic(key, mine))
                assert orjson.loads(body)["code"] == 200
                stored = f"SELECT count(*) FROM readings WHERE device_id = '{mine}'"
                assert count(database_url, stored) == 1

                for topic in (
                    post_topic(key, other),  # the neighbour's post
                    post_topic(f"x{key}", mine),  # another product's
                    reply_topic(post_topic(key, other)),  # a forged answer
                ):
                    assert device.publish(topic, post(2)) == NOT_AUTHORIZED, topic

                assert neighbour.publish(post_topic(key, other), post(3)) == 0
                wait_for(lambda: len(neighbour.messages) >= 1, TIMEOUT_S, "the neighbour's reply")
                # A later post of its own, answered after the neighbour's: had the
                # neighbour's answer been delivered to it, it would be there by now.
                assert device.publish(post_topic(key, mine), post(4)) == 0
                wait_for(
                    lambda: any(orjson.loads(b)["id"] == "4" for _, b in device.messages),
                    TIMEOUT_S,
                    "the second reply",
                )
                # Overlapping subscriptions may deliver a reply twice: all of them its own.
                assert {t for t, _ in device.messages} == {reply_topic(post_topic(key, mine))}
            finally:
                device.close()
                neighbour.close()
    assert count(database_url, f"SELECT count(*) FROM readings WHERE device_id = '{other}'") == 1
    assert count(database_url, f"SELECT count(*) FROM readings WHERE device_id = '{mine}'") == 2
