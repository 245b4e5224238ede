"""Devices that stand in for hardware, kept apart from the drivers that talk to real devices.

- `firmware`: the register board's firmware (the reference implementation of docs/protocol.md),
  running the synthetic or foreign ISP;
- `serial_pty`: that firmware behind a pseudo-terminal, as a USB-serial adapter presents it
  (`hil-tune emulate serial`), with fault injection;
- `usb_backend`: that firmware behind a pyusb backend, so the `usb` driver runs unchanged;
- `scene`: the synthetic sensor's frames (a photo through unprocessing), shared by the board
  and the `sim` driver.
Production drivers never import these, except `sim`, which is itself a simulator.
"""
