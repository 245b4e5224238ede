"""Device drivers, shipped as `hil_tune.drivers` (setuptools maps this folder into the package).

The driver interface and its implementations (sim, genicam, serial, usb) arrive with the [Drivers]
issue; the folder exists now so packaging and imports are settled from the first commit.
"""
