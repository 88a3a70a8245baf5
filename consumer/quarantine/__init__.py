"""The quarantine domain: per recipient address, its status from its signals, and its recent messages.

Pure like the core: no I/O, no Kafka; the quarantine stage (not yet wired) feeds it `address.signals` and publishes
what it answers to `address.quarantine`. Rules and defaults: README.md beside this file.
"""
