"""Test-time protocol: flip test, decoding, rescoring + OKS-NMS, metrics, the evaluator."""
