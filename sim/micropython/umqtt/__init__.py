"""``umqtt`` stand-in package (see ``simple``)."""
