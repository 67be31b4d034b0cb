"""TLS for the MQTT connection (mqtt.ssl_*): the context MqttClient connects with, and certificate files
as MicroPython's mbedTLS takes them."""


def on_fs(path, root):
    """A file setting as a path: relative ones (`ccm build --ca` writes ca.pem) are on the module's
    filesystem, whose root is `root` ("" on a module; a folder on a virtual one; None: as given)."""
    if not path or path.startswith("/") or root is None:
        return path
    return (root.rstrip("/") or "") + "/" + path


def mqtt_context(config, root=None):
    """The TLS context for mqtt.ssl_*; an unreadable or invalid file is named in the error."""
    import ssl
    import sys

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    mpy = sys.implementation.name == "micropython"
    ca = on_fs(config.get("mqtt.ssl_ca_cert"), root)
    if not ca and not config.get("mqtt.ssl_insecure"):
        raise ValueError(
            "TLS without mqtt.ssl_ca_cert would not check the broker's certificate: whoever answers for %s "
            "would get this device. Set mqtt.ssl_ca_cert (or mqtt.ssl_insecure=true, knowingly)"
            % config.get("mqtt.server")
        )
    if ca:
        if mpy:  # MicroPython's mbedTLS may take DER only: PEM files are decoded here, every certificate
            _tls_file("mqtt.ssl_ca_cert", ca, lambda: _load_cas(ctx, ca))
        else:
            _tls_file("mqtt.ssl_ca_cert", ca, lambda: ctx.load_verify_locations(cafile=ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    if hasattr(ctx, "check_hostname"):  # before CERT_NONE: CPython refuses that while it checks names
        ctx.check_hostname = bool(ca) and bool(config.get("mqtt.ssl_server_name", True))
    if not ca:  # mqtt.ssl_insecure, set knowingly
        ctx.verify_mode = ssl.CERT_NONE
    cert = on_fs(config.get("mqtt.ssl_cert"), root)
    if cert:
        key = on_fs(config.get("mqtt.ssl_key"), root)
        if mpy:
            load = lambda: ctx.load_cert_chain(der_file(cert), der_file(key))  # noqa: E731
        else:
            load = lambda: ctx.load_cert_chain(cert, key)  # noqa: E731
        _tls_file("mqtt.ssl_cert/ssl_key", cert + ", " + key, load)
    return ctx


def _load_cas(ctx, path):
    """Every CA certificate of the file: a chain or a bundle (AWS IoT's and most brokers' have two or
    more). MicroPython adds each cadata to the context's CA chain."""
    for der in der_blocks(path):
        ctx.load_verify_locations(cadata=der)


def der_blocks(path):
    """The blocks of a certificate or key file as DER: each PEM block (-----BEGIN …----- base64
    -----END …-----) decoded, in order; a DER file is one block. The MicroPython unix port's mbedTLS
    parses no PEM, and DER is what MicroPython's own TLS tests use. Read a line at a time: at boot a
    plain ESP32's heap has no piece the size of the file to spare, only the DER it becomes."""
    import binascii

    blocks = []
    der = None
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                break
            if line.startswith(b"-----BEGIN"):
                der = bytearray()
            elif line.startswith(b"-----END"):
                if der is None:
                    raise ValueError("a PEM block without its -----BEGIN line")
                blocks.append(bytes(der))  # what ssl takes (MicroPython's refuses a bytearray)
                der = None
            elif der is not None:
                try:
                    der.extend(binascii.a2b_base64(line.strip()))
                except Exception:  # ValueError; micropython-lib's binascii.py (WebAssembly) raises Exception
                    raise ValueError("a PEM block whose lines are not base64") from None
        if der is not None:
            raise ValueError("a PEM block without its -----END line")
        if not blocks:  # no PEM block: a DER file
            f.seek(0)
            return [f.read()]
    return blocks


def der_file(path):
    """The first block of a certificate or key file as DER (a key; the device's own certificate)."""
    return der_blocks(path)[0]


def _tls_file(setting, path, load):
    try:
        load()
    except (OSError, ValueError) as e:  # missing file; MicroPython: ValueError("invalid cert")
        raise ValueError("%s %s cannot be used: %s" % (setting, path, e)) from None
