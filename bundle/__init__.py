"""The PC toolkit: the `ccm` command, bundles, flashing and OTA clients."""
