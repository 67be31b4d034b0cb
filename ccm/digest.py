"""HTTP Digest access authentication (RFC 7616), server side, for the /rpc endpoint.

Sans-I/O: `challenge()` gives the WWW-Authenticate values, `check(method, header)` judges an
Authorization header. MD5 is offered when the firmware's hashlib has it (ESP32 does; it is what most
clients speak), SHA-256 always.
"""

import binascii
import hashlib

from ccm.compat import random_bytes, ticks_diff, ticks_ms

NONCE_TTL_MS = 300000
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

    def __init__(self, realm, user, password, secret=None):
        self.realm = realm
        self.user = user
        self.password = password
        self.secret = secret or binascii.hexlify(random_bytes(16)).decode()  # the nonces' key

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
        if a.get("response") != want:
            return "wrong password"
        if ticks_diff(ticks_ms(), t) > NONCE_TTL_MS:
            return "stale"
        return None
