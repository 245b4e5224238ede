"""What hil-tune ships for the authors of plug-in drivers: the driver contract as a test class
(`contract`), and a scripted register board that pins a driver's exact traffic (`protocol`)."""
