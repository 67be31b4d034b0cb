"""A JSON-RPC 2.0 batch's replies, collected (JSON-RPC 2.0 §6; ccm/rpc.py's Dispatcher). Its own module:
batches are rare on the UART, and on a stock image every class is heap; loaded for a batch."""


class Batch:
    """Collects the replies of a batch and sends them as one array once every member has answered."""

    def __init__(self, n, send):
        self.left = n
        self.frames = []
        self._send = send

    def add(self, frame):
        if frame is not None:
            self.frames.append(frame[:-1])  # without its newline
        self.left -= 1
        if self.left == 0 and self.frames:
            self._send(b"[" + b",".join(self.frames) + b"]\n")
