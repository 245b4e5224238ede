"""Networks: the ISP proxies (proxy.py) and the attention-aware predictor (predictor.py)."""
