"""Why the service stops, each with its documented exit code (README, "Exit codes")."""

from __future__ import annotations

CLEAN = 0
INTERNAL_ERROR = 1  # a bug: logged as one `crashed` line with its traceback
CANNOT_START = 2  # configuration, topics, broker unreachable at start, port in use, state dir unusable
GRACE_EXCEEDED = 3  # SIGTERM/SIGINT, but the clean stop took longer than the grace period
STUCK = 4  # the watchdog saw the main loop make no progress for --watchdog-timeout seconds
KAFKA_FATAL = 5  # an unrecoverable client error: fenced by another instance with our id, authentication
STATE_FAILED = 6  # the state store cannot be read or written (full disk, I/O error, locked)


class ServiceError(Exception):
    """A stop the operator must act on; the message says what and where, in one line."""

    exit_code = INTERNAL_ERROR
    event = "failed"


class StartupError(ServiceError):
    exit_code = CANNOT_START
    event = "cannot_start"


class KafkaFatal(ServiceError):
    exit_code = KAFKA_FATAL
    event = "kafka_fatal"


class StateFailed(ServiceError):
    exit_code = STATE_FAILED
    event = "state_store_failed"
