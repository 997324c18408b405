"""A bare ASGI app doing the service's database work, for `make bench` to compare against."""
