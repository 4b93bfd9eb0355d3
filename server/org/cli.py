"""``hw-org``: the organisation key, offline. Parses arguments and calls into the package.

See ``docs/operations.md#organisation-key-offline``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from proto import codec
from proto import messages as m
from proto.revocation import RevocationError, make_list, payload_of, signed_bytes
from proto.roles import Role

from .certificate import MAX_DAYS, read_tech_public_key, sign_certificate
from .errors import OrgError
from .orgdir import OrgDir

TECH_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}\Z")
FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}\Z")

#: Default validity of a revocation list: a week (agents then allow their grace, 24 h).
DEFAULT_LIST_DAYS = 7.0


def _now() -> datetime:
    return datetime.now(UTC)


def _dir(args: argparse.Namespace) -> Path:
    value = args.dir or os.environ.get("HW_ORG_DIR")
    if not value:
        raise OrgError("no organisation directory: pass --dir DIR or set HW_ORG_DIR")
    return Path(value)


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a date-time like 2026-12-01T09:00+08:00") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of days") from None
    if not 0 < value <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"days must be more than 0 and at most {MAX_DAYS}")
    return value


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    public = None
    if args.public_key is not None:
        try:
            public = Path(args.public_key).read_bytes()
        except OSError as exc:
            raise OrgError(f"cannot read {args.public_key} ({exc.strerror})") from None
    org = OrgDir.create(path, public_key=public)
    print(f"organisation directory {path}")
    if public is None:
        print(f"  private key   {path / 'org.key'} (keep it offline and backed up: it makes "
              "technicians and revocation lists every agent trusts)")
    else:
        print("  private key   not here: signing goes through ssh-agent (--agent)")
    print(f"  public key    {path / 'org.pub'}")
    print(f"next: hw-server init --org-pub {path / 'org.pub'} ...; then "
          f"hw-org revocations --dir {org.path} --out revocations.signed")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    if not TECH_NAME.match(args.name):
        raise OrgError(f"technician name {args.name[:64]!r} is not valid: use 1-64 lower-case "
                       "letters, digits, '.', '_' or '-', starting with a letter")
    org = OrgDir.open(_dir(args))
    source = Path(args.pubkey)
    try:
        tech_key = read_tech_public_key(source.read_bytes())
    except OSError as exc:
        raise OrgError(f"cannot read {source} ({exc.strerror})") from None
    roles = frozenset(Role(r) for r in (args.role or [Role.REMOTE.value]))
    now = _now()
    signed = sign_certificate(org.signer(agent=args.agent), org_pub=org.org_pub,
                              tech_key=tech_key, name=args.name, roles=roles, now=now,
                              days=args.days)
    out = Path(args.out) if args.out else source.with_name(
        source.name.removesuffix(".pub") + "-cert.pub")
    out.write_bytes(signed.text)
    org.record_issued(signed, now=now)
    print(f"certificate for {args.name} (roles {signed.roles}, key {signed.fingerprint}, "
          f"serial {signed.serial}, valid until {signed.valid_before.isoformat()}) written to "
          f"{out}")
    print(f"next, on the server: hw-server tech add {args.name} --cert {out} --out DIR")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    org = OrgDir.open(_dir(args))
    targets: dict[str, str] = {}
    if args.fingerprint:
        if not FINGERPRINT.match(args.fingerprint):
            raise OrgError("--fingerprint must be an OpenSSH SHA256 fingerprint like "
                           "SHA256:… (43 characters after the colon; `ssh-keygen -lf KEY`)")
        names = {i["fingerprint"]: i["name"] for i in org.issued()}
        targets[args.fingerprint] = names.get(args.fingerprint, "")
    else:
        for issued in org.issued():
            if issued["name"] == args.name:
                targets[issued["fingerprint"]] = args.name
        if not targets:
            raise OrgError(f"no certificate for {args.name[:64]!r} was signed from this "
                           "directory; revoke its key with --fingerprint SHA256:… (the "
                           "server's `hw-server tech revoke` prints it)")
    new = org.revoke(targets, now=_now())
    what = ", ".join(targets)
    print(f"revoked {what}" if new else f"already revoked: {what}")
    print(f"next: hw-org revocations --dir {org.path} --out revocations.signed, then "
          "hw-server revocations load revocations.signed")
    return 0


def cmd_revocations(args: argparse.Namespace) -> int:
    org = OrgDir.open(_dir(args))
    now = _now()
    issued = args.issued or now
    if issued > now + timedelta(minutes=5):
        raise OrgError("--issued is in the future; a list cannot be issued later than now")
    sequence = max(org.next_sequence(), int(now.timestamp()))
    try:
        body = make_list(sequence=sequence, issued=issued,
                         next_update=issued + timedelta(days=args.days),
                         fingerprints=set(org.revoked()))
    except RevocationError as exc:
        raise OrgError(str(exc)) from None
    signer = org.signer(agent=args.agent)
    payload = payload_of(body)
    signed = m.SignedRevocations(payload=payload, signature=signer.sign(signed_bytes(payload)))
    out = Path(args.out)
    out.write_bytes(codec.encode(signed) + b"\n")
    org.used_sequence(sequence)
    print(f"revocation list number {body.sequence}: {len(body.fingerprints)} revoked keys, "
          f"issued {body.issued.isoformat()}, next update due {body.next_update.isoformat()}; "
          f"written to {out}")
    print(f"next: hw-server revocations load {out} (on the server); sign a new list before "
          "the next update is due, or agents refuse commands once their grace ends")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hw-org",
        description="The organisation key, offline: make it, sign technician certificates "
                    "(with roles) and signed revocation lists. Run it on the machine that "
                    "holds the key, or with --agent through the ssh-agent that holds it (a "
                    "PKCS#11 token too: `ssh-add -s /path/to/pkcs11-provider.so`).",
        epilog="Exit codes: 0 ok, 1 refused or failed (reason on stderr), 2 usage error.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", metavar="DIR", help="organisation directory (default: "
                        "$HW_ORG_DIR)")

    s = sub.add_parser("init", help="make an organisation directory with a new key pair")
    s.add_argument("path", metavar="DIR")
    s.add_argument("--public-key", metavar="FILE", help="the key lives in ssh-agent or a "
                   "token: record only this OpenSSH public key (from `ssh-add -L`)")
    s.set_defaults(func=cmd_init)

    signing = argparse.ArgumentParser(add_help=False)
    signing.add_argument("--agent", action="store_true", help="sign through the ssh-agent at "
                         "SSH_AUTH_SOCK holding the key of DIR/org.pub (default: DIR/org.key)")

    s = sub.add_parser("sign", parents=[common, signing], help="certify a technician's key "
                       "(an OpenSSH user certificate with the roles extension)")
    s.add_argument("pubkey", metavar="TECH_PUBKEY", help="the technician's tech.key.pub")
    s.add_argument("--name", required=True, help="technician name (the principal)")
    s.add_argument("--role", action="append", choices=[r.value for r in Role],
                   help="a role (repeatable; default remote)")
    s.add_argument("--days", type=_days, default=90.0, help="validity (default 90)")
    s.add_argument("--out", metavar="FILE", help="where to write the certificate (default: "
                   "next to TECH_PUBKEY, as tech.key-cert.pub)")
    s.set_defaults(func=cmd_sign)

    s = sub.add_parser("revoke", parents=[common], help="add a technician's keys to the "
                       "revoked ones (then sign a list: hw-org revocations)")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--name", help="every key signed for this technician from DIR")
    who.add_argument("--fingerprint", metavar="SHA256:…", help="one key (also one signed "
                     "elsewhere, with ssh-keygen -s)")
    s.set_defaults(func=cmd_revoke)

    s = sub.add_parser("revocations", parents=[common, signing], help="sign the revocation "
                       "list (a new, higher sequence number) for hw-server revocations load")
    s.add_argument("--out", required=True, metavar="FILE", help="where to write it")
    s.add_argument("--days", type=_days, default=DEFAULT_LIST_DAYS,
                   help=f"until the next update is due (default {DEFAULT_LIST_DAYS:g})")
    s.add_argument("--issued", type=_when, metavar="DATETIME", help="issue time (default "
                   "now; an earlier one makes a list that is already old, for drills)")
    s.set_defaults(func=cmd_revocations)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # asyncssh (imported for --agent) trips cryptography's deprecations: ours only, please.
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                            module=r"asyncssh(\.|$)")
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except OrgError as exc:
        print(f"hw-org: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"hw-org: error: {exc.strerror or type(exc).__name__}: "
              f"{exc.filename or ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
