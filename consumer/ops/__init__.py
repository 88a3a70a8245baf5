"""Operations: metrics, logs and the HTTP endpoints; thin shells that watch the service from the side."""
