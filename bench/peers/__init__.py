"""Peer libraries run in environments of their own (bench/peers/nt.py: neural-tangents under .venv-nt)."""
