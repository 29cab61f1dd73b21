"""One validated configuration, read from the environment once per process.

Variables use the ``SC_`` prefix and ``__`` for nesting, e.g.
``SC_INGEST__BATCH_SIZE=2000``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AlertSettings",
    "ApiSettings",
    "ClusterSettings",
    "DecoderSettings",
    "FaultHookSettings",
    "FireBridgeSettings",
    "GatewaySettings",
    "IngestSettings",
    "Settings",
    "ValidationSettings",
]


class GatewaySettings(BaseModel):
    model_config = {"frozen": True}

    # A fixed id is what makes the broker keep our session across restarts.
    client_id: str = "sc-pipeline"
    # One week: long enough to ride out any outage we expect to recover from.
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=1)
    keepalive_s: int = Field(default=30, ge=5, le=600)
    # The broker sends at most this many unacked messages; it bounds our memory
    # because nothing is acked before commit. Several batches' worth keeps COPY fed.
    receive_maximum: int = Field(default=20_000, ge=1, le=65_535)
    topic_filter: str = "community/+/+/+/+"
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    # "auto" speaks MQTT 5 and falls back to 3.1.1 when the broker refuses it.
    protocol: str = Field(default="auto", pattern="^(auto|5|3.1.1)$")
    # The broker binds each client's id to its user name (the listeners `smartcommunity
    # broker export` writes): the alert publisher then logs in as the companion
    # account "<user>-alerts" (same password), or it would take the subscriber's id.
    bound_client_ids: bool = False


class IngestSettings(BaseModel):
    model_config = {"frozen": True}

    # Group commit: the writer takes whatever has arrived as soon as it is free,
    # so batches are a few messages at low rates and grow with the load, up to this.
    batch_size: int = Field(default=5_000, ge=1, le=100_000)
    # Extra wait for more messages after the first of a batch; 0 (the default)
    # never waits on a timer. Only for sites that trade latency for bigger batches.
    flush_interval_ms: int = Field(default=0, ge=0, le=60_000)
    # Committed messages the rule engine may be behind by before commits wait
    # for it: bounds memory; the engine catches up on the whole backlog at once.
    engine_backlog: int = Field(default=200_000, ge=1)
    retry_min_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    # Registry re-reads on an unknown device are rate limited to this.
    registry_refresh_s: float = Field(default=1.0, ge=0)
    # A pipeline thread that makes no progress this long is taken for dead: the
    # process exits and is restarted. Far above any batch's commit time.
    stall_s: float = Field(default=300.0, gt=0)
    # After a thread failed, the process exits within this even if stopping hangs.
    exit_after_s: float = Field(default=5.0, gt=0, le=60)
    # Messages in flight during this many crashes in a row are quarantined as poison.
    poison_crashes: int = Field(default=2, ge=1, le=10)
    # The role the pipeline's queries run as (migration 0008): it writes telemetry,
    # dead letters and alerts of every community, and cannot read users or tokens
    # nor change the schema. '' keeps the login role (the owner: not advised).
    database_role: str = Field(default="sc_pipeline", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")


class ValidationSettings(BaseModel):
    model_config = {"frozen": True}

    max_payload_bytes: int = Field(default=64 * 1024, ge=64)
    # Matches the common IoT-platform rule: device clocks 24 h ahead are wrong.
    max_future_s: int = Field(default=24 * 3600, ge=0, le=366 * 24 * 3600)


class FaultHookSettings(BaseModel):
    """Faults on purpose, for the tests of the pipeline's boundaries. Never set in production."""

    model_config = {"frozen": True}

    # A message whose payload contains this raises inside validation (internal_error).
    raise_marker: str | None = None
    # A message whose payload contains this kills the process with SIGSEGV while in flight.
    crash_marker: str | None = None
    # This pipeline thread (intake, commit, listeners, heartbeat, webhooks,
    # storage-maintenance, device-directory) raises after kill_after_s.
    kill_thread: str | None = None
    kill_after_s: float = Field(default=1.0, ge=0)
    # Every rule raises while evaluating a reading or event of this device (a rule bug
    # that one device's values trigger; internal_error after the commit).
    evaluate_raise_device: str | None = None


class DecoderSettings(BaseModel):
    model_config = {"frozen": True}

    # A YAML profile or a folder of them (Alink products, vendor JSON; docs/decoders.md).
    # Unset: only the native contract is subscribed to.
    profiles: Path | None = None
    # Answers to Alink posts (…/post_reply), published after the commit.
    alink_replies: bool = True


class AlertSettings(BaseModel):
    model_config = {"frozen": True}

    # The rule engine runs inside the pipeline; off gives a pure-ingest worker.
    enabled: bool = True
    # Timers (for-durations, absence, follow-ups, escalation) fire at this resolution.
    tick_s: float = Field(default=0.5, gt=0, le=60)
    # How often rule and maintenance changes are looked for (no restart needed).
    reload_s: float = Field(default=1.0, gt=0, le=300)
    # Flood control (ISA-18.2: >= 10 alarms in 10 min per operator is a flood).
    flood_threshold: int = Field(default=10, ge=2)
    flood_window_s: float = Field(default=600.0, gt=0)
    # Webhook deliveries: attempts before the dead letter, and the backoff bounds.
    webhook_attempts: int = Field(default=6, ge=1, le=50)
    webhook_backoff_min_s: float = Field(default=1.0, gt=0)
    webhook_backoff_max_s: float = Field(default=300.0, gt=0)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    # Publish alerts to community/{id}/alerts/{severity} on the broker.
    mqtt_publish: bool = True
    # Webhooks to loopback, private and link-local addresses (cloud metadata at
    # 169.254.169.254, the database's host) are refused unless this is on: the demo
    # and tests, whose receivers run on this machine, turn it on.
    webhook_private_destinations: bool = False


class ClusterSettings(BaseModel):
    """A worker of the clustered deployment (docs/scale-out.md): AMQP shard queues."""

    model_config = {"frozen": True}

    # Comma-separated amqp:// URLs of the RabbitMQ nodes; a worker connects to one
    # of them (in a random order) and moves to another when it dies.
    amqp_urls: str = ""
    # Fixed at deploy time: a community's shard is hash(community) % shards, so
    # changing it moves communities (docs/scale-out.md says how).
    shards: int = Field(default=16, ge=1, le=1024)
    queue_prefix: str = Field(default="sc.shard", pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    # Unacknowledged messages per shard consumer; bounds memory since nothing is
    # acked before commit. A few batches' worth keeps COPY fed.
    prefetch: int = Field(default=2_000, ge=1, le=65_535)
    heartbeat_s: int = Field(default=10, ge=1, le=600)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)

    @property
    def urls(self) -> list[str]:
        return [u.strip() for u in self.amqp_urls.split(",") if u.strip()]


class IncidentSettings(BaseModel):
    model_config = {"frozen": True}

    # The incident desk (alerts/incident_desk.py) runs inside the pipeline.
    enabled: bool = True
    # Escalation and delivery resolution: targets are tens of seconds at the least.
    tick_s: float = Field(default=1.0, gt=0, le=60)


class ApiSettings(BaseModel):
    model_config = {"frozen": True}

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65_535)
    max_page_size: int = Field(default=1_000, ge=1)
    # The role the API's queries run as (SET ROLE; migration 0007 creates it): no
    # BYPASSRLS, so row-level security holds each request to its communities.
    # '' keeps the login role, which must then be subject to RLS itself.
    database_role: str = Field(default="sc_api", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")
    # Open alert streams per user; one more is refused with 429.
    max_streams_per_user: int = Field(default=5, ge=1, le=1_000)


class FireBridgeSettings(BaseModel):
    """``smartcommunity fire-bridge``: the GB/T 26875.3 server for UITDs (docs/fire-bridge.md)."""

    model_config = {"frozen": True}

    host: str = "0.0.0.0"  # noqa: S104 - UITDs connect from the building's network
    port: int = Field(default=9000, ge=0, le=65_535)
    # The centre's own 6-byte address (hex, transmission order), the source of our frames.
    address: str = Field(default="000000000000", pattern=r"^[0-9a-fA-F]{12}$")
    # Client id and credentials on the broker; its canonical messages are QoS 1.
    client_id: str = "sc-fire-bridge"
    # A frame is confirmed only once what it carried is committed; past this the
    # bridge stops waiting and sends nothing, so the UITD retransmits (its timeout
    # is at most 10 s per the standard).
    commit_timeout_s: float = Field(default=8.0, gt=0, le=60)
    # How often the database is asked which waiting messages are committed.
    commit_poll_s: float = Field(default=0.01, gt=0, le=1)
    # A UITD clock further off than this (either way) gets a clock sync (type 90).
    clock_skew_s: float = Field(default=30.0, gt=0)
    # At most one clock sync per UITD in this long, however wrong its clock stays.
    clock_sync_every_s: float = Field(default=600.0, gt=0)
    # Duty checks (type 91): every this many seconds per connected UITD; 0 = never.
    duty_check_every_s: float = Field(default=0.0, ge=0)
    # The answer key must be pressed within this (the standard's prompt lasts 10 min).
    duty_answer_s: float = Field(default=600.0, gt=0)
    # Frames one UITD may have waiting to be handled before its socket is not read.
    max_pending_frames: int = Field(default=64, ge=1)


class Settings(BaseSettings):
    """Everything configurable. ``None`` URLs mean "start the embedded server" in the demo."""

    model_config = SettingsConfigDict(
        env_prefix="SC_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    database_url: str | None = None
    mqtt_url: str | None = None
    data_dir: Path = Path(".smartcommunity")
    time_zone: str = "Asia/Shanghai"
    log_level: str = "INFO"
    gateway: GatewaySettings = GatewaySettings()
    ingest: IngestSettings = IngestSettings()
    validation: ValidationSettings = ValidationSettings()
    api: ApiSettings = ApiSettings()
    alerts: AlertSettings = AlertSettings()
    decoders: DecoderSettings = DecoderSettings()
    fire_bridge: FireBridgeSettings = FireBridgeSettings()
    incidents: IncidentSettings = IncidentSettings()
    test_hooks: FaultHookSettings = FaultHookSettings()
    # A bearer token for CLI commands that call the API (`scenario run`); none: they
    # make one for the run and revoke it after.
    api_token: SecretStr | None = None
    cluster: ClusterSettings = ClusterSettings()

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mqtt://", "tcp://")):
            raise ValueError("SC_MQTT_URL must look like mqtt://[user:password@]host:port")
        return value

    @field_validator("database_url")
    @classmethod
    def _pg_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("SC_DATABASE_URL must look like postgresql://user@host:port/db")
        return value
