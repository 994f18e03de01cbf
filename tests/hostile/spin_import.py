"""Spins forever at import: it can never load."""

while True:
    pass
