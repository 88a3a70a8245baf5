"""Ingest: turning vendor MTA event formats into `mta.events` contract events.

`formats` maps one source record (KumoMTA log records, Amazon SES event publishing, SendGrid event webhook)
to zero or more MtaEvent records; `classifier` decides what a bounce means (both pure: no Kafka, no I/O
besides reading the packaged rule files); `stage` runs a format as a Kafka stage on the service's runner.
See consumer/ingest/README.md.
"""
