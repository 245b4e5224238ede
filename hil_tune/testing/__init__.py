"""What hil-tune ships for the authors of plug-in drivers: the driver contract as a test class."""
