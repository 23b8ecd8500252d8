"""Which records are a host's, in what order they are made and removed: written once.

Record sets carry no tags at Route 53, DigitalOcean or Hetzner DNS, so ownership
is a record of its own, as external-dns keeps it: beside each name a companion
TXT record ``_inletsctl.<domain>`` (the *claim*) says which host made the name and
which addresses it points at. A name's value alone would not do: the user's own
record may point at the same IP (a reused address, a record made by hand), and
matching on it would delete what we did not make.

* :func:`place` picks the zone of each domain (the longest zone that is a suffix,
  or ``--dns-zone``) and refuses a name that already has an address, CNAME or claim:
  all before the VM exists, since it costs nothing to ask.
* :meth:`Placement.publish` makes the claim before the addresses (in one atomic
  change where the API has them), so every address of ours is findable by a claim
  from the moment it exists, then waits until the API says the change is served.
* :meth:`Placement.purge` needs only the zones and our host id: it finds the claims
  naming the host, removes the addresses they list that still have those values,
  and the claim last, so a removal cut short is finished by running it again.
  Nothing without a claim naming this host is ever touched.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from providers.dns.base import DnsProvider, Record, Zone
from providers.errors import InvalidSpec, ProviderAPIError
from providers.models import HOST_ID_TAG, TAG_KEY

__all__ = ["CLAIM_LABEL", "Placement", "claim_name", "claim_text", "outside", "place"]

#: the label in front of a domain where its claim lives
CLAIM_LABEL = f"_{TAG_KEY}"
#: the types an address of ours could collide with at a name
_TAKEN = ("A", "AAAA", "CNAME")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalise(name: str) -> str:
    """``App.Example.com.`` and ``app.example.com`` are one name."""
    return name.strip().rstrip(".").lower()


def is_hostname(domain: str) -> bool:
    """A name Let's Encrypt can validate over HTTP: two labels or more, no wildcard."""
    labels = normalise(domain).split(".")
    return len(labels) >= 2 and all(_LABEL.match(label) for label in labels)


def within(domain: str, zone: str) -> bool:
    domain, zone = normalise(domain), normalise(zone)
    return domain == zone or domain.endswith(f".{zone}")


def outside(domains: Iterable[str], zone: str) -> list[str]:
    """The domains that ``--dns-zone`` cannot hold (checked before any API call)."""
    return [d for d in domains if not within(d, zone)]


def claim_name(domain: str) -> str:
    return f"{CLAIM_LABEL}.{normalise(domain)}"


def claim_text(host_id: str, addresses: Iterable[str], targets: Iterable[str] = ()) -> str:
    """``heritage=inletsctl,inletsctl-host=<id>,ip=<address>...,target=<name>...``: all a
    purge needs. A target is what a CNAME or an alias of ours points at."""
    return ",".join([f"heritage={TAG_KEY}", f"{HOST_ID_TAG}={host_id}"] + [
        f"ip={a}" for a in addresses
    ] + [f"target={normalise(t)}" for t in targets])  # fmt: skip


def _claimed(record: Record, host_id: str) -> list[str] | None:
    """The values a claim of ``host_id`` lists (addresses, ``target:`` names); None if it
    is no claim of that host."""
    if record.type != "TXT" or not record.name.startswith(f"{CLAIM_LABEL}."):
        return None
    words = [w.partition("=") for w in record.value.strip('"').split(",")]
    pairs = [(k.strip(), v.strip()) for k, _, v in words]
    if ("heritage", TAG_KEY) not in pairs or (HOST_ID_TAG, host_id) not in pairs:
        return None
    return [_address(v) for k, v in pairs if k == "ip"] + [
        f"target:{normalise(v)}" for k, v in pairs if k == "target"
    ]


def _value(record: Record) -> str:
    """What a claim lists for ``record``: its address, or the name it points at."""
    if record.type == "CNAME" or record.alias_zone:
        return f"target:{normalise(record.value.removeprefix('alias '))}"
    return _address(record.value)


def _address(text: str) -> str:
    """IPv6 has many spellings; compare the canonical one."""
    try:
        return ipaddress.ip_address(text.strip()).compressed
    except ValueError:
        return text.strip()


def _zone_of(domain: str, zones: Sequence[Zone]) -> Zone | None:
    """The longest zone that is ``domain`` or a suffix of it (``a.b.example.com`` goes
    to ``b.example.com`` when both it and ``example.com`` are hosted)."""
    fits = [z for z in zones if within(domain, z.name)]
    return max(fits, key=lambda z: len(z.name), default=None)


@dataclass(frozen=True)
class Placement:
    """Where a host's names go: the DNS provider, and the zone of each domain."""

    dns: DnsProvider
    #: domain -> its zone, in the order the domains were given
    zones: Mapping[str, Zone]

    def _groups(self) -> dict[Zone, list[str]]:
        groups: dict[Zone, list[str]] = {}
        for domain, zone in self.zones.items():
            groups.setdefault(zone, []).append(domain)
        return groups

    def publish(self, host_id: str, ip: str, ipv6: str, timeout: float) -> list[Record]:
        """Claims, then A (and AAAA with an IPv6 address) records; returns once the API
        lists them and says they are served, each zone's wait bounded by ``timeout``."""
        addresses = [a for a in (ip, ipv6) if a]
        made: list[Record] = []
        for zone, domains in self._groups().items():
            claims = [Record(claim_name(d), "TXT", claim_text(host_id, addresses)) for d in domains]
            points = [
                Record(normalise(d), "AAAA" if ":" in a else "A", a)
                for d in domains
                for a in addresses
            ]
            change = self.dns.create(zone, claims + points)
            self.dns.wait(change, timeout)
            for record in claims + points:
                self._require_listed(zone, record)
            made += claims + points
        return made

    def _require_listed(self, zone: Zone, record: Record) -> None:
        """The APIs without a change status are asked whether they list what was made."""
        listed = {(r.type, _address(r.value)) for r in self.dns.records(zone, record.name)}
        if (record.type, _address(record.value)) not in listed:
            raise ProviderAPIError(
                self.dns.name,
                f"{record.name} {record.type} {record.value} is not listed after it was created",
                hint="The API may lag behind its own answers: run the same command again.",
            )

    def purge(self, host_id: str) -> list[str]:
        """Remove every record a claim of ``host_id`` covers in our zones, the claim last;
        what was removed, or [] when nothing claims the host (already gone is success)."""
        removed: list[str] = []
        for zone in self._groups():
            everything = self.dns.records(zone)
            for claim in everything:
                addresses = _claimed(claim, host_id)
                if addresses is None:
                    continue
                domain = claim.name.removeprefix(f"{CLAIM_LABEL}.")
                points = [
                    r
                    for r in everything
                    if r.name == domain and r.type in _TAKEN and _value(r) in addresses
                ]
                self.dns.delete(zone, [*points, claim])
                removed += [f"{r.type} {r.name} {r.value}" for r in (*points, claim)]
        return removed


def place(dns: DnsProvider, domains: Sequence[str], zone_name: str = "") -> Placement:
    """The zone of each domain, and proof that none of the names is taken; raises
    ``InvalidSpec`` (a usage error) for a zone that is not there or a name in use."""
    zones = dns.zones()
    if zone_name:
        wanted = normalise(zone_name)
        chosen = [z for z in zones if z.name == wanted]
        if not chosen:
            known = ", ".join(sorted(z.name for z in zones)) or "none"
            raise InvalidSpec(
                f"{dns.name}: no zone {wanted!r} that these credentials can change",
                hint=f"Check --dns-zone (zones found: {known}), or create the zone first.",
            )
        zones = chosen
    placed: dict[str, Zone] = {}
    for domain in map(normalise, domains):
        zone = _zone_of(domain, zones)
        if zone is None:
            raise InvalidSpec(
                f"{dns.name}: no zone holds {domain}",
                hint="Create a zone for it (or a parent domain) first, or pass --dns-zone.",
            )
        _require_free(dns, zone, domain)
        placed[domain] = zone
    return Placement(dns, placed)


def _require_free(dns: DnsProvider, zone: Zone, domain: str) -> None:
    """A name that already points somewhere is the user's: never changed, never shared."""
    taken = [r for r in dns.records(zone, domain) if r.type in _TAKEN]
    taken += [r for r in dns.records(zone, claim_name(domain)) if r.type == "TXT"]
    if taken:
        r = taken[0]
        raise InvalidSpec(
            f"{dns.name}: {r.name} already has a {r.type} record ({r.value}); inletsctl "
            "never changes a record it did not make",
            hint="Remove that record first, or choose another --letsencrypt-domain.",
        )
