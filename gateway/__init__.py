"""MQTT subscription, decoding, validation, de-duplication and acknowledgement."""
