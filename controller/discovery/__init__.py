"""Discovery: finding Raspberry Pis on the LAN (mDNS, subnet scan, manual registration).

``recognise`` decides whether a sighting is a Pi, ``registry`` turns a sighting into a node
once per machine (deduplicated by ``store.discovery``), ``mdns`` and ``scan`` produce
sightings, and ``service`` runs them as the singleton discovery duty.
"""
