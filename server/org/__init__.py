"""``hw-org``: the organisation key's offline tool (``docs/operations.md``, "Organisation key
offline").

Runs on the machine that holds the organisation key (or talks to the ``ssh-agent`` that
holds it, a PKCS#11 token included), never on the server: it makes the key pair
(:mod:`.orgdir`), signs technician certificates with their roles (:mod:`.certificate`) and
signs revocation lists (:mod:`proto.revocation`). It depends on :mod:`proto`,
``cryptography`` and ``asyncssh`` only, not on the rest of the server.
"""
