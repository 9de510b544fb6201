"""Whether and when an API call may leave: the one rate limit, the daily quota, the breaker after a timeout, the
token's standing, and the budget report operators read."""
