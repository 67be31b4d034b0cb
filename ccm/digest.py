"""HTTP Digest access authentication (RFC 7616), server side, for the /rpc endpoint.

Sans-I/O: `challenge()` gives the WWW-Authenticate values, `check(method, header)` judges an
Authorization header. MD5 is offered when the firmware's hashlib has it (ESP32 does; it is what most
clients speak), SHA-256 always. A nonce lives NONCE_TTL_MS and each of its uses must count up (`nc`), so a
captured header cannot be sent again; responses are compared in constant time.
"""

import binascii
import hashlib

from ccm.compat import random_bytes, ticks_diff, ticks_ms

NONCE_TTL_MS = 300000
SEEN = 16  # nonces whose last `nc` is remembered (the oldest is forgotten, and so no longer accepted)
ALGORITHMS = ("MD5", "SHA-256") if hasattr(hashlib, "md5") else ("SHA-256",)


def _h(algorithm, text):
    h = hashlib.sha256(text.encode()) if algorithm == "SHA-256" else hashlib.md5(text.encode())
    return binascii.hexlify(h.digest()).decode()


def parse_auth_header(value):
    """`Digest a="b", c=d` → {a: b, c: d}."""
    out = {}
    rest = value[6:].strip() if value[:7].lower() == "digest " else ""
    while rest:
        k, _, rest = rest.partition("=")
        k = k.strip().lower()
        rest = rest.strip()
        if rest.startswith('"'):
            v, _, rest = rest[1:].partition('"')
        else:
            v, _, rest = rest.partition(",")
            v = v.strip()
        out[k] = v
        rest = rest.strip()
        if rest.startswith(","):
            rest = rest[1:].strip()
    return out


class DigestAuth:
    """RFC 7616 Digest with qop=auth. Nonces carry their time and a keyed hash, so no table is kept."""

    def __init__(self, realm, user, password, secret=None, seen=None):
        self.realm = realm
        self.user = user
        self.password = password
        self.secret = secret or binascii.hexlify(random_bytes(16)).decode()  # the nonces' key
        self.seen = {} if seen is None else seen  # nonce -> the last nc it came with (the caller may keep it)

    def _nonce(self, t):
        return "%d-%s" % (t, _h("SHA-256", "%d:%s" % (t, self.secret))[:32])

    def challenge(self, stale=False):
        """WWW-Authenticate values: MD5 first (what urllib and most clients take), then SHA-256."""
        nonce = self._nonce(ticks_ms())
        return [
            'Digest realm="%s", qop="auth", algorithm=%s, nonce="%s", opaque="%s"%s'
            % (self.realm, alg, nonce, self.secret[:16], ", stale=true" if stale else "")
            for alg in ALGORITHMS
        ]

    def check(self, method, header):
        """None when the Authorization header is right; else why not ("stale" for an old nonce)."""
        if not header:
            return "missing"
        a = parse_auth_header(header)
        nonce = a.get("nonce", "")
        try:
            t = int(nonce.split("-", 1)[0])
        except ValueError:
            return "bad nonce"
        if nonce != self._nonce(t):
            return "bad nonce"
        if a.get("username") != self.user or a.get("realm") != self.realm:
            return "wrong user"
        alg = a.get("algorithm", "MD5")
        if alg not in ALGORITHMS:
            return "unsupported algorithm"
        ha1 = _h(alg, "%s:%s:%s" % (self.user, self.realm, self.password))
        ha2 = _h(alg, "%s:%s" % (method, a.get("uri", "")))
        if a.get("qop"):
            want = _h(alg, "%s:%s:%s:%s:%s:%s" % (ha1, nonce, a.get("nc", ""), a.get("cnonce", ""), a["qop"], ha2))
        else:
            want = _h(alg, "%s:%s:%s" % (ha1, nonce, ha2))
        if not same(a.get("response", ""), want):
            return "wrong password"
        if ticks_diff(ticks_ms(), t) > NONCE_TTL_MS:
            return "stale"
        return self._count(nonce, a.get("nc", ""))

    def _count(self, nonce, nc):
        """None the first time this nonce comes with this count (RFC 7616 §3.4: nc counts each use up);
        "stale" for a count it already came with — a replay — so an honest client asks for a new nonce.
        Of the nonces not remembered, only those newer than every one forgotten are taken."""
        try:
            n = int(nc, 16) if nc else 0
        except ValueError:
            return "bad nc"
        seen = self.seen  # nonce -> last nc; "" -> the time of the newest nonce forgotten
        if nonce in seen:
            if n <= seen[nonce]:
                return "stale"
        else:
            t = int(nonce.split("-", 1)[0])
            if "" in seen and ticks_diff(t, seen[""]) <= 0:
                return "stale"
            if len(seen) > SEEN:
                oldest = None
                for k in seen:
                    if k and (oldest is None or ticks_diff(int(k.split("-", 1)[0]), oldest[1]) < 0):
                        oldest = (k, int(k.split("-", 1)[0]))
                del seen[oldest[0]]
                seen[""] = oldest[1]
        seen[nonce] = n
        return None


def same(a, b):
    """a == b for two strings, in a time that does not tell how much of them matched."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):  # no zip(strict=) on MicroPython
        d |= ord(a[i]) ^ ord(b[i])
    return d == 0
