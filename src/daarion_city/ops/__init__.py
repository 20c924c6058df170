"""Operations: liveness, readiness, Prometheus metrics and the public client config."""
