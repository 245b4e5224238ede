"""hil-tune: hardware-in-the-loop camera ISP tuning.

Layers, bottom up (an import only points down): params/profiles and raw -> isp -> drivers -> capture
-> train/models and live -> cli.
"""

__version__ = "0.1.0"
