"""What operators and their tools read: the HTTP server (status page, health, metrics), the metrics themselves
and the logs."""
