"""The baselines of `make bench`: the service's database work with no framework (`bare`)
and with a minimal Litestar app (`floor`)."""
