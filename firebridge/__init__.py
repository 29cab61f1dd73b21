"""The GB/T 26875.3 bridge: building fire panels, through their UITDs, into the platform."""
