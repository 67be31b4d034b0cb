"""ECDSA P-256 signature verification in pure Python, for the CCM (FIPS 186-4 §6.4; SEC 1 §4.1.4).

Only what a bundle check needs: a public key from PEM, a DER signature, a SHA-256 digest. Jacobian
coordinates and Shamir's trick (u1·G + u2·Q in one pass), so a verify is ~256 doublings and ~200
additions of 256-bit numbers: about a second on an ESP32, run once per update. Verification uses no
secret, so nothing here needs to be constant-time.
"""

import binascii
import hashlib

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

# SubjectPublicKeyInfo DER header of an uncompressed P-256 key (RFC 5480): id-ecPublicKey, prime256v1
_SPKI = binascii.unhexlify("3059301306072a8648ce3d020106082a8648ce3d030107034200")
_INF = (0, 1, 0)


class SignatureError(Exception):
    pass


def _inv(x, m):
    try:
        return pow(x, m - 2, m)  # m is prime
    except (TypeError, NotImplementedError):  # a port built without 3-argument pow
        a, b, u = x % m, m, 1
        v = 0
        while a > 1:
            q = b // a
            a, b = b - q * a, a
            u, v = v - q * u, u
        return u % m


def _dbl(pt):
    x, y, z = pt
    if not z or not y:
        return _INF
    zz = z * z % P
    m = 3 * (x - zz) * (x + zz) % P  # a = -3
    yy = y * y % P
    s = 4 * x * yy % P
    x3 = (m * m - 2 * s) % P
    return (x3, (m * (s - x3) - 8 * yy * yy) % P, 2 * y * z % P)


def _add(p1, p2):
    if not p1[2]:
        return p2
    if not p2[2]:
        return p1
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    if not h:
        return _dbl(p1) if not r else _INF
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    return (x3, (r * (v - x3) - s1 * hhh) % P, z1 * z2 * h % P)


def on_curve(x, y):
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + B)) % P == 0


def public_key_from_pem(text):
    """(x, y) of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an uncompressed P-256 point."""
    if type(text) is bytes:
        text = text.decode()
    body = "".join(line.strip() for line in text.split("\n") if line.strip() and not line.startswith("-----"))
    try:
        der = binascii.a2b_base64(body.encode())
    except Exception:
        raise SignatureError("public key: not PEM") from None
    if len(der) != len(_SPKI) + 65 or der[: len(_SPKI)] != _SPKI or der[len(_SPKI)] != 4:
        raise SignatureError("public key: not an uncompressed ECDSA P-256 key (openssl ec -pubout makes one)")
    return public_key_from_point(der[len(_SPKI) :])


def public_key_from_point(point):
    """(x, y) from the 65-byte uncompressed point 04||X||Y."""
    if len(point) != 65 or point[0] != 4:
        raise SignatureError("public key: not an uncompressed P-256 point")
    x = int.from_bytes(point[1:33], "big")
    y = int.from_bytes(point[33:], "big")
    if not on_curve(x, y):
        raise SignatureError("public key: the point is not on P-256")
    return (x, y)


def parse_der_signature(der):
    """(r, s) of an ASN.1 DER ECDSA-Sig-Value: SEQUENCE { INTEGER r, INTEGER s }."""

    def integer(i):
        if i + 2 > len(der) or der[i] != 2:
            raise SignatureError("signature: not DER")
        n = der[i + 1]
        if n > 33 or i + 2 + n > len(der):
            raise SignatureError("signature: bad integer length")
        return int.from_bytes(der[i + 2 : i + 2 + n], "big"), i + 2 + n

    if len(der) < 8 or der[0] != 0x30 or der[1] != len(der) - 2:
        raise SignatureError("signature: not a DER sequence")
    r, i = integer(2)
    s, i = integer(i)
    if i != len(der):
        raise SignatureError("signature: trailing bytes")
    return r, s


def check_signed(message, sigs, pub, required=False):
    """None when one of `sigs` (base64 DER, mos's sig0, sig1, …) is `pub`'s signature of `message`
    (a bundle's manifest); SignatureError says why not. Without `pub`, a `required` signature fails."""
    if pub is None:
        if required:
            raise SignatureError("a signature is required but no public key is configured (ota.pubkey)")
        return
    if not sigs:
        raise SignatureError("the bundle is not signed, and a signature is required")
    digest = hashlib.sha256(message).digest()
    for s in sigs:
        try:
            if verify(pub, digest, binascii.a2b_base64(s.encode())):
                return
        except (SignatureError, ValueError):
            continue
    raise SignatureError("bad signature: the manifest was not signed by the configured key")


def verify(pub, digest, der_sig):
    """True when `der_sig` is a valid ECDSA P-256 signature of the 32-byte `digest` by `pub` = (x, y)."""
    r, s = parse_der_signature(der_sig)
    if not (0 < r < N and 0 < s < N):
        return False
    e = int.from_bytes(digest[:32], "big")
    w = _inv(s, N)
    u1 = e * w % N
    u2 = r * w % N
    g = (GX, GY, 1)
    q = (pub[0], pub[1], 1)
    gq = _add(g, q)
    acc = _INF
    for bit in range(255, -1, -1):
        acc = _dbl(acc)
        b1 = (u1 >> bit) & 1
        b2 = (u2 >> bit) & 1
        if b1 and b2:
            acc = _add(acc, gq)
        elif b1:
            acc = _add(acc, g)
        elif b2:
            acc = _add(acc, q)
    if not acc[2]:
        return False
    zi = _inv(acc[2], P)
    x = acc[0] * zi * zi % P
    return x % N == r
