"""Avro on the wire: schemas from schemas/, single-object framing, decode with validation, typed errors."""
