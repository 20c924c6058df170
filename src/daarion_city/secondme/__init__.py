"""Second Me: each user's own agent, with a stored conversation and a choice of model providers."""
