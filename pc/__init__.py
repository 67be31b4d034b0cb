"""What runs on the PC and is shared by the toolkit (bundle/), the simulator (sim/) and the local cloud
(cloud/): the PC's UARTs, listening sockets, and the firmware images and bundles. It imports none of them.
"""
