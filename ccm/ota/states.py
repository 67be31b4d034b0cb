"""What the OTA receiver (ccm/ota/receiver.py) and the helpers it loads on demand (finish.py, pull.py,
reboot.py, the appliers) share: OTA.Status's states, the error an update fails with, and the helpers'
module names. Its own module, so that a helper need not import the receiver that imports it."""

IDLE = 0
PROGRESS = 1
ERROR = 2
SUCCESS = 3

# what one update loads besides the receiver: dropped when it ends (on a stock image their bytecode is heap)
HELPERS = (
    "ccm.ota.finish",
    "ccm.ota.bundle",
    "ccm.ota.zipread",
    "ccm.ota.p256",
    "ccm.ota.apply",
    "ccm.ota.stage",
    "ccm.ota.fetch",
    "ccm.ota.stm32",
    "ccm.ota.an3155",
    "ccm.ota.stm32_chips",
    "ccm.ota.fsarchive",
)


class OtaError(Exception):
    pass
