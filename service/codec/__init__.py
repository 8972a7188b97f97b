"""`python -m service.codec`: the old name of the offline codec CLI, now the top-level `codec` package."""
