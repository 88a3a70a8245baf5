"""The `sendtrack` command line: thin shells around the service, the codec and the embedded broker."""
