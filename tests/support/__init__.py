"""Test support shared by the test folders and ``benchmarks/`` (never installed, never imported by shipped code).

``labelstudio`` (a real Label Studio process, browser login), ``backend`` (backend/worker processes, the
training journey through Label Studio, a media server), ``weights`` (stand-ins for published pretrained
files), ``processes`` (free ports, stopping children). The session fixtures live in ``tests/conftest.py``.
"""
