"""Real-time delivery: typed frames, per-socket bounded send queues, and the local room hub."""
