"""The technician's side: ``hw-tech`` (client that signs, CLI, SSH bridge, tickets).

Depends on :mod:`proto` only, never on ``server`` or ``agent`` (the technician's machine need
not have the server's code paths loaded, and the private key never leaves this package).
"""
