"""The keys of encrypted overlay networks, kept in the cluster's store and rotated.

One key ring for the cluster, at ``/muslin/cluster/v1/ipsec/keys``: JSON
``{"keys": [{"tag", "active", "secret"}, …]}``, where ``secret`` is an AES-GCM key and its
salt (``rfc4106(gcm(aes))``: 16 + 4 bytes, hex) and ``active`` the time from which it is the
*primary* key, the one every host sends with. Whoever needs the ring first creates it, and
whoever finds the newest key older than the rotation period adds the next one; both are
compare-and-swap writes, so hosts that race agree on one ring (the losers read the winner's).

Rotation loses no packet: a new key is written ``lead`` seconds before it becomes primary,
so that every host has installed it for receiving (from the store's watch, or at its next
heartbeat at the latest) before any host sends with it; a key replaced as primary is still
accepted for ``grace`` seconds, for the hosts that switch a heartbeat late, then dropped.
The secrets are never logged (``repr`` leaves them out) nor written anywhere but the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field

from muslin.cluster import key

log = logging.getLogger("muslin.cluster")

RING = key("ipsec", "keys")
SECRET_BYTES = 20               # 128-bit AES key + 32-bit salt
_SECRET = re.compile(f"[0-9a-f]{{{2 * SECRET_BYTES}}}")


@dataclass(frozen=True, order=True)
class Key:
    tag: int
    active: float                                  # from then on, the primary key
    secret: str = field(default="", repr=False)    # hex, never logged

    def to_doc(self) -> dict:
        return {"tag": self.tag, "active": self.active, "secret": self.secret}


def new_secret() -> str:
    return os.urandom(SECRET_BYTES).hex()


def timing(period: float, heartbeat: float) -> tuple[float, float]:
    """(lead, grace) for a rotation ``period``: long enough for every host to act on a new key
    (it learns of it from the watch, or at its next heartbeat) — also a host whose daemon was
    restarting or cut off from the store meanwhile — and short of the period."""
    margin = max(3 * heartbeat, period / 4)
    return margin, margin


def primary(keys: list[Key], now: float) -> Key:
    """The key to send with: the newest one already active (the oldest when none is yet)."""
    active = [k for k in keys if k.active <= now]
    return max(active) if active else min(keys)


def accepted(keys: list[Key], now: float, grace: float) -> list[Key]:
    """The keys to receive with: the primary, those about to become it, and an older one
    until ``grace`` seconds after its successor became primary."""
    ordered = sorted(keys)
    main = primary(ordered, now)
    out = []
    for k, successor in zip(ordered, ordered[1:] + [None]):
        if k.tag >= main.tag or (successor is not None and now < successor.active + grace):
            out.append(k)
    return out


def rotated(keys: list[Key], now: float, period: float, lead: float, grace: float,
            secret: str) -> list[Key] | None:
    """The ring as it must be at ``now`` (a first key, a next one when the newest has been
    primary for ``period``, old ones past their grace dropped), or None when it needs no change."""
    if not keys:
        return [Key(1, now, secret)]
    newest = max(keys)
    ring = list(keys)
    if max(newest.active, 0.0) + period <= now:
        ring.append(Key(newest.tag + 1, now + lead, secret))
    ring = accepted(ring, now, grace)
    return None if sorted(ring) == sorted(keys) else sorted(ring)


def parse(text: str) -> list[Key]:
    """The ring in the store; a key that is not 40 hexadecimal digits is refused (it goes into
    the kernel's SAs), without saying what it was."""
    keys = sorted(Key(int(k["tag"]), float(k["active"]), str(k["secret"])) for k in json.loads(text)["keys"])
    for k in keys:
        if not _SECRET.fullmatch(k.secret):
            raise ValueError(f"the cluster's IPsec key {k.tag} is malformed (not {2 * SECRET_BYTES} hexadecimal digits)")
    return keys


def render(keys: list[Key]) -> str:
    return json.dumps({"keys": [k.to_doc() for k in sorted(keys)]}, sort_keys=True)


def ring(store, now: float, period: float, lead: float, grace: float) -> list[Key]:
    """The cluster's keys, created or rotated first when that is due (compare-and-swap: a
    host that loses a race takes the ring the winner wrote)."""
    for _ in range(5):
        item = store.get(RING)
        keys = parse(item.value) if item is not None else []
        wanted = rotated(keys, now, period, lead, grace, new_secret())
        if wanted is None:
            return keys
        won = (store.create(RING, render(wanted)) if item is None
               else store.replace(RING, render(wanted), item.mod_revision))
        if won:
            if len(wanted) > len(keys) or not keys:
                log.info("ipsec: key %d of the cluster written, primary from %.0f", max(wanted).tag, max(wanted).active)
            return wanted
    item = store.get(RING)
    return parse(item.value) if item is not None else []


def spi(src: str, dst: str, tag: int) -> int:
    """The SPI of the SA ``src`` -> ``dst`` under key ``tag``: both ends derive the same one,
    different per direction, pair and key, always in muslin's range."""
    from muslin.kernel.xfrm import spi_of

    digest = hashlib.sha256(f"{src}>{dst}#{tag}".encode()).digest()
    return spi_of(int.from_bytes(digest[:8], "big"))
