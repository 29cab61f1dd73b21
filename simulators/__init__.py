"""Simulated devices of every class, and a publisher that speaks the device contract.

Imports only ``core`` and third-party libraries: a simulator is a stand-in
for hardware and knows the platform only through MQTT and the contract.
"""
