"""HTTP Digest (RFC 7616) checking on the module. Portable (CPython + MicroPython)."""

import binascii
import hashlib

from ccm.digest import DigestAuth, parse_auth_header


def sha256(text):
    return binascii.hexlify(hashlib.sha256(text.encode()).digest()).decode()


def answer(challenge, user, password, method="POST", uri="/rpc", nc="00000001", cnonce="abc"):
    c = parse_auth_header(challenge)
    ha1 = sha256("%s:%s:%s" % (user, c["realm"], password))
    ha2 = sha256("%s:%s" % (method, uri))
    resp = sha256("%s:%s:%s:%s:auth:%s" % (ha1, c["nonce"], nc, cnonce, ha2))
    return (
        'Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=SHA-256, qop=auth, nc=%s, cnonce="%s", response="%s"'
        % (user, c["realm"], c["nonce"], uri, nc, cnonce, resp)
    )


def test_parse_auth_header():
    got = parse_auth_header('Digest username="a b", realm="ccm", qop=auth, nc=00000001, response="x,y"')
    assert got == {"username": "a b", "realm": "ccm", "qop": "auth", "nc": "00000001", "response": "x,y"}


def test_right_password_passes_and_wrong_ones_say_why():
    auth = DigestAuth("ccm", "admin", "hunter2")
    challenge = [c for c in auth.challenge() if "SHA-256" in c][0]
    assert auth.check("POST", answer(challenge, "admin", "hunter2")) is None
    assert auth.check("POST", answer(challenge, "admin", "nope")) == "wrong password"
    assert auth.check("POST", answer(challenge, "root", "hunter2")) == "wrong user"
    assert auth.check("GET", answer(challenge, "admin", "hunter2", method="POST")) == "wrong password"
    assert auth.check("POST", None) == "missing"
    forged = answer(challenge, "admin", "hunter2").replace('nonce="', 'nonce="9')
    assert auth.check("POST", forged) == "bad nonce"
    other = DigestAuth("ccm", "admin", "hunter2")  # after a reboot: a new secret, old nonces refused
    assert other.check("POST", answer(challenge, "admin", "hunter2")) == "bad nonce"
