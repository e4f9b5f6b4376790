"""Recursive contamination (Amin et al., 2026): mean estimation, PAC rounds, estimating alpha."""
