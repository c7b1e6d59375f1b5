"""Models of the core itself: the canary that exercises the whole zoo path."""
