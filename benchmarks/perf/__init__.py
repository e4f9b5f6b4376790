"""The performance suite: ``python -m benchmarks.perf [--part p1,p2,...] [--quick] [--out FILE]``.

Parts: p1 full-batch linear DRO against PyPI ``dro``; p2 minibatch step time over ERM and
epochs against ``dro``'s PyTorch models; p3 reductions against one sort; p4 Wasserstein
objectives over ERM; p5 8 simulated devices against 1. See docs/performance.md.
"""
