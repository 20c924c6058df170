"""The foundation every layer uses: time, ids, errors, input rules, owned tasks, logs, metrics,
the shared Redis client and what the app provides to its routes. It imports nothing above it."""
