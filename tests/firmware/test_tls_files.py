"""Certificate and key files as MicroPython's mbedTLS takes them (ccm/tls.py): PEM blocks decoded to DER
a line at a time, on CPython and on MicroPython."""

import binascii

from fwtest import raises, scratch_path

from ccm.tls import der_blocks

A = bytes(range(48))
B = bytes(range(100, 200))


def _pem(der, kind="CERTIFICATE", eol=b"\n"):
    b64 = binascii.b2a_base64(der).strip()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        eol.join([b"-----BEGIN " + kind.encode() + b"-----"] + lines + [b"-----END " + kind.encode() + b"-----"]) + eol
    )


def _file(name, data):
    path = scratch_path(name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_a_chain_comes_whole_in_order_with_what_openssl_writes_around_it():
    data = b"Bag Attributes\n    friendlyName: ca\n" + _pem(A) + b"subject=/CN=next\n" + _pem(B, eol=b"\r\n")
    assert der_blocks(_file("chain.pem", data)) == [A, B]


def test_a_der_file_is_one_block():
    assert der_blocks(_file("one.der", b"\x30\x82\x01\x0a" + B + b"\n-----")) == [b"\x30\x82\x01\x0a" + B + b"\n-----"]


def test_a_block_cut_short_is_refused():
    assert raises(ValueError, der_blocks, _file("cut.pem", _pem(A)[:-30]))
