"""The fake DNS in front of a server: the zone model, its decisions, the UDP/TCP server.

Nothing here is imported until a profile has a [dns] section (dnspython costs start-up)."""
