"""Ingest: the pure part of turning vendor MTA event formats into `mta.events` contract events.

`formats` maps one source record (KumoMTA log records, Amazon SES event publishing, SendGrid event webhook)
to zero or more MtaEvent records; `classifier` decides what a bounce means. No Kafka, no I/O here besides
reading the packaged rule files. See consumer/ingest/README.md.
"""
