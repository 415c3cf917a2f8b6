"""Talking to Sonar: the wire format (:mod:`.endpoints`, shared with the emulator) and the
async client (:mod:`.client`)."""
